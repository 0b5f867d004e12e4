"""`twostage load-test`: concurrent clients against `twostage serve` over loopback, searches with committed
writes mixed in; prints p50/p95/p99 per endpoint, the 5xx count and whether any acknowledged write was lost.

With `--index` it serves a copy of the index in a child process (the original is never written; `--in-place`
writes into it); with `--url` it loads a server already running. Several `--clients` levels run one after the
other; `--in-process` adds `SearchPipeline.query` on the same queries in this process, for the HTTP overhead.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from retrieval import cli

SUMMARY = "Load-test `twostage serve`: concurrent searches and writes, latency per endpoint, no lost write."
EXAMPLES = ("--index /tmp/idx/sample --clients 32 --requests 2000 --write-fraction 0.05",
            "--index /tmp/idx/scifact --config configs/bm25.yaml --queries ../shared/datasets/scifact "
            "--clients 1,8,32 --write-fraction 0 --in-process --json")


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}")
    return levels


def add_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", help="serve (a copy of) this index for the run")
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--config", help="with --index: the pipeline YAML the server uses")
    p.add_argument("--in-place", action="store_true", help="with --index: write into it instead of a copy")
    p.add_argument("--queries", help="a BEIR folder whose queries.jsonl is used (default: the sample queries)")
    p.add_argument("--clients", type=_levels, default=[32], help="concurrent clients; comma-separated levels")
    p.add_argument("--requests", type=cli.positive_int, default=2000, help="requests per level")
    p.add_argument("--write-fraction", type=cli.Bounded(float, low=0, high=1), default=0.05)
    p.add_argument("--max-seconds", type=cli.positive_float, default=600.0, help="deadline per level")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="with --index: an option for the server (repeatable: --server-arg=--no-shared-batches)")
    p.add_argument("--api-key", help="sent as X-API-Key (and given to the server started with --index)")
    p.add_argument("--in-process", action="store_true",
                   help="with --index: also time SearchPipeline.query on the same queries, one at a time")
    p.add_argument("--top-k", type=cli.positive_int, default=10)
    p.add_argument("--json", action="store_true", help="one JSON object")


def _queries(path: str | None) -> list[str]:
    import json

    if path is None:
        return ["why does the ocean have tides", "bacteria resistant to drugs", "how long should adults sleep",
                "cross-encoders rerank search results", "volcano eruption", "photosynthesis in plants",
                "the speed of light", "earthquakes and plate tectonics"]
    file = Path(path) / "queries.jsonl" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise ValueError(f"--queries {path}: no queries.jsonl there (give a BEIR folder or a queries.jsonl file)")
    return [json.loads(line)["text"] for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _in_process(index: Path, config: str | None, queries: list[str], top_k: int, count: int) -> dict[str, Any]:
    import numpy as np

    from retrieval import SearchPipeline

    pipe = SearchPipeline.from_index(index, config)
    for q in queries[:5]:
        pipe.query(q, top_k=top_k)
    ms = []
    for i in range(count):
        q = queries[i % len(queries)]
        start = time.perf_counter()
        pipe.query(q, top_k=top_k)
        ms.append((time.perf_counter() - start) * 1000)
    arr = np.asarray(ms)
    return {"endpoint": "in-process SearchPipeline.query", "requests": len(ms), "status": "-",
            "p50 ms": float(np.percentile(arr, 50)), "p95 ms": float(np.percentile(arr, 95)),
            "p99 ms": float(np.percentile(arr, 99))}


def run(args: argparse.Namespace) -> int:
    from retrieval.benchmark import Table
    from retrieval.benchmark.measure import machine
    from retrieval.commands.benchmark import table
    from retrieval.loadtest import run_load, served

    if args.index and not (Path(args.index) / "manifest.json").is_file():
        raise ValueError(f"--index {args.index}: not an index (no manifest.json); build one with twostage build")
    queries = _queries(args.queries)
    levels: list[dict[str, Any]] = []
    server_args = [*args.server_arg, *(["--config", args.config] if args.config else []),
                   *(["--api-key", args.api_key] if args.api_key else [])]

    def load(url: str) -> None:
        for clients in args.clients:
            report = run_load(url, queries, clients=clients, requests=args.requests,
                              write_fraction=args.write_fraction, max_seconds=args.max_seconds,
                              api_key=args.api_key, top_k=args.top_k)
            levels.append({"clients": clients, **report.to_dict()})

    tmp = None
    try:
        if args.url:
            load(args.url.rstrip("/"))
        else:
            index = Path(args.index)
            if not args.in_place and args.write_fraction > 0:
                tmp = Path(tempfile.mkdtemp(prefix="twostage-load-"))
                shutil.copytree(index, tmp / index.name)
                index = tmp / index.name
            with served(index, server_args) as url:
                load(url)
        in_process = None
        if args.in_process and args.index:
            in_process = _in_process(Path(args.index), args.config, queries, args.top_k, args.requests)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    m = machine()
    machine_line = (f"{m['cpu']}, {m['usable_cpus']} usable CPUs ({', '.join(m['isa'])}), load average "
                    f"{m['load_average_at_start']}")
    failed = any(level["server_errors"] or level["lost"] or level["failures"] for level in levels)
    if args.json:
        cli.print_json({"machine": m, "levels": levels, "in_process": in_process, "ok": not failed})
    else:
        print(f"# twostage load test: {machine_line}")
        for level in levels:
            rows = [{**r} for r in level["endpoints"]]
            table(Table(f"{level['clients']} clients: {level['requests']} requests in {level['seconds']:.1f} s "
                        f"({level['throughput_rps']} req/s); 5xx {level['server_errors']}; acknowledged adds "
                        f"{level['acknowledged_adds']}, deletes {level['acknowledged_deletes']}; lost "
                        f"{len(level['lost'])}", rows))
        if in_process is not None:
            table(Table("in this process, one query at a time", [in_process]))
        for level in levels:
            for line in level["lost"][:10] + level["failures"]:
                print(f"problem: {line}")
    return 1 if failed else 0
