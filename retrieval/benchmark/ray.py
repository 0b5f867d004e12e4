"""Ray: distributed builds against the single-process build, and sharded search against unsharded search (the
`ray` section of `scripts/benchmark.py`). On a machine of few cores the speed-up is bounded by the cores; what
this section measures is what Ray costs and where it pays: tasks per second, the fan-out overhead per query and
per shard, and whether the answers are the same.

Build: the first `ray_docs` documents of the dataset with the config's first stage (BM25 + the real bi-encoder),
built in this process, on Ray into one index (compared array by array with the first), and on Ray into
`ray_shards` shards; and `ray_bm25_passages` synthetic passages (the `scale` section's generator) BM25-only, where
tasks are light and their rate is what the cluster sustains. Search: one query per call over `ray_queries` test
queries at the bm25 and hybrid stages, unsharded, sharded in this process and sharded on Ray actors (p50, p95,
top-10 identical to the unsharded index's), and a no-op call to every shard actor (the fan-out's own cost).

Example:
    >>> from retrieval.benchmark.ray import section_ray
    >>> section_ray(config, Settings(dataset, sections=("ray",), ray_docs=500))  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.benchmark.measure import load_average, pct
from retrieval.benchmark.report import Section, Settings, Table
from retrieval.benchmark.updates import bm25_settings, write_jsonl


def section_ray(config: Any, settings: Settings) -> Section:
    """See the module docstring. Indexes are built in a temporary directory, removed at the end."""
    from index.cluster import connect, ray_module

    report: dict[str, Any] = {"load_average_at_start": load_average(), "shards": settings.ray_shards}
    start = time.perf_counter()
    ours = not ray_module("the ray benchmark section").is_initialized()
    ray = connect(settings.ray_address, num_cpus=None)
    report["ray_init_s"] = time.perf_counter() - start
    report["cluster_cpus"] = int(ray.cluster_resources().get("CPU", 0))
    tables: list[Table] = []
    try:
        with tempfile.TemporaryDirectory(prefix="twostage-bench-ray-") as tmp:
            work = Path(tmp)
            report["build"], paths = _builds(config, settings, work)
            report["bm25_build"] = _bm25_builds(config, settings, work)
            report["search"], report["fan_out"] = _searches(settings, paths)
    finally:
        if ours:  # a cluster this process already had (a caller's) stays up
            ray.shutdown()
    report["load_average_at_end"] = load_average()
    tables += _tables(report)
    notes = [f"\n(Ray: {report['cluster_cpus']} CPUs, started in {report['ray_init_s']:.1f} s; load average "
             f"{report['load_average_at_start']} at the start, {report['load_average_at_end']} at the end)"]
    return Section(report, tables, notes)


def _timed_build(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _builds(config: Any, settings: Settings, work: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    from index.builder import build_index
    from index.directory import IndexDirectory
    from index.distributed import build_on_ray
    from index.documents import read_corpus

    docs = list(read_corpus(settings.dataset))
    if settings.ray_docs:
        docs = docs[: settings.ray_docs]
    corpus = write_jsonl(docs, work / "corpus.jsonl")
    build = config.build_config()
    stored = config.stored()
    paths = {"single": work / "single", "ray": work / "ray", "sharded": work / "sharded"}
    out: dict[str, Any] = {"documents": len(docs)}
    out["single_s"], _ = _timed_build(lambda: build_index(corpus, paths["single"], build, show_progress=False,
                                                          pipeline=stored))
    out["ray_s"], r = _timed_build(lambda: build_on_ray(corpus, paths["ray"], build, settings.ray_address,
                                                        show_progress=False, pipeline=stored))
    out["ray_details"] = r.details
    out["sharded_s"], r = _timed_build(lambda: build_on_ray(corpus, paths["sharded"], build, settings.ray_address,
                                                            shards=settings.ray_shards, show_progress=False,
                                                            pipeline=stored))
    out["sharded_details"] = r.details
    a, b = IndexDirectory.load(paths["single"]), IndexDirectory.load(paths["ray"])
    same = True
    if "bm25" in a.parts:
        sa, sb = a.parts["bm25"], b.parts["bm25"]
        same = sa.vocab == sb.vocab and all(np.array_equal(getattr(sa, k), getattr(sb, k))
                                            for k in ("indptr", "indices", "tf", "doc_len"))
    if "dense" in a.parts:
        diff = float(np.abs(np.asarray(a.parts["dense"].embeddings) - np.asarray(b.parts["dense"].embeddings)).max())
        out["embeddings_max_abs_diff"] = diff
    out["bm25_arrays_equal"] = bool(same)
    return out, paths


def _bm25_builds(config: Any, settings: Settings, work: Path) -> dict[str, Any]:
    from index.builder import build_index
    from index.config import BuildConfig, DenseConfig
    from index.distributed import build_on_ray
    from retrieval.benchmark.scale import write_synthetic_corpus

    n = settings.ray_bm25_passages
    corpus = write_synthetic_corpus(n, work / "synthetic.jsonl", settings.quiet)
    build = BuildConfig(bm25=bm25_settings(config), dense=DenseConfig(enabled=False))
    out: dict[str, Any] = {"passages": n, "components": list(build.retrievers())}
    out["single_s"], _ = _timed_build(lambda: build_index(corpus, work / "bm25-single", build, show_progress=False))
    out["ray_s"], r = _timed_build(lambda: build_on_ray(corpus, work / "bm25-ray", build, settings.ray_address,
                                                        show_progress=False))
    out["ray_details"] = r.details
    out["sharded_s"], r = _timed_build(lambda: build_on_ray(corpus, work / "bm25-sharded", build,
                                                            settings.ray_address, shards=settings.ray_shards,
                                                            show_progress=False))
    out["sharded_details"] = r.details
    return out


def _searches(settings: Settings, paths: dict[str, Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    from retrieval.evaluation.beir import load_beir
    from retrieval.pipeline import SearchPipeline

    queries = list(load_beir(settings.dataset, "test").queries.values())[: settings.ray_queries]
    pipes = {"unsharded": SearchPipeline.from_index(paths["single"]),
             "sharded in process": SearchPipeline.from_index(paths["sharded"]),
             "sharded on Ray": SearchPipeline.from_index(paths["sharded"], ray=settings.ray_address)}
    out: dict[str, Any] = {}
    want: dict[str, list[list[str]]] = {}
    for name, pipe in pipes.items():
        out[name] = {}
        for stage in [s for s in ("bm25", "hybrid") if s in pipe.stages]:
            pipe.retrieve(queries[:3], stage=stage, top_k=10)  # warm-up
            times, tops = [], []
            for q in queries:
                start = time.perf_counter()
                found = pipe.retrieve([q], stage=stage, top_k=10)[0]
                times.append((time.perf_counter() - start) * 1000)
                tops.append([d for d, _ in found])
            if name == "unsharded":
                want[stage] = tops
            same = sum(a == b for a, b in zip(want[stage], tops))
            out[name][stage] = {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "same_top10": same,
                                "queries": len(queries)}
    shards = pipes["sharded on Ray"].index.shards
    times = []
    for _ in range(50):
        start = time.perf_counter()
        shards.call("info", [()] * len(shards))
        times.append((time.perf_counter() - start) * 1000)
    fan_out = {"noop_p50_ms": pct(times, 50), "shards": len(shards)}
    pipes["sharded on Ray"].index.close()
    return out, fan_out


def _tables(report: dict[str, Any]) -> list[Table]:
    b, m = report["build"], report["bm25_build"]
    n = report["shards"]

    def row(what: str, figures: dict[str, Any], key: str, details: dict[str, Any] | None, base: float) -> dict:
        seconds = figures[key]
        out = {"build": what, "seconds": round(seconds, 1), "vs single": f"{base / seconds:.2f}x"}
        if details:
            out.update(tasks=details["tasks"], **{"tasks/s": round(details["tasks_per_s"], 2)},
                       **{"worker s": round(details["task_seconds"], 1)})
        return out

    builds = Table(f"Ray build vs single process: {b['documents']:,} documents, BM25 + dense", [
        row("single process", b, "single_s", None, b["single_s"]),
        row("Ray, one index", b, "ray_s", b["ray_details"], b["single_s"]),
        row(f"Ray, {n} shards", b, "sharded_s", b["sharded_details"], b["single_s"]),
    ], note=f"BM25 arrays of the Ray index equal the single-process one's: {b['bm25_arrays_equal']}; embeddings "
            f"max |diff| {b.get('embeddings_max_abs_diff', 0.0):.1e}")
    bm25 = Table(f"Ray build vs single process: {m['passages']:,} synthetic passages, BM25 only", [
        row("single process", m, "single_s", None, m["single_s"]),
        row("Ray, one index", m, "ray_s", m["ray_details"], m["single_s"]),
        row(f"Ray, {n} shards", m, "sharded_s", m["sharded_details"], m["single_s"]),
    ])
    rows = []
    base = report["search"]["unsharded"]
    for name, stages in report["search"].items():
        for stage, f in stages.items():
            extra = f["p50_ms"] - base[stage]["p50_ms"]
            rows.append({"index": name, "stage": stage, "p50 ms": round(f["p50_ms"], 2),
                         "p95 ms": round(f["p95_ms"], 2), "over unsharded ms": round(extra, 2),
                         "per shard ms": round(extra / n, 2) if name != "unsharded" else "",
                         "same top-10": f"{f['same_top10']}/{f['queries']}"})
    fan = report["fan_out"]
    search = Table(f"Sharded search ({n} shards) vs unsharded, one query per call", rows,
                   note=f"a no-op call to all {fan['shards']} shard actors: p50 {fan['noop_p50_ms']:.2f} ms")
    return [builds, bm25, search]
