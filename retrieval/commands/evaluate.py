"""`twostage eval`: evaluate every stage of a pipeline on a BEIR-format dataset split (metrics by pytrec_eval).

Without --index the index is built once under --cache-dir (default: indexes/eval/ in the checkout) at a path
derived from the dataset and the config's build settings, and reused while those settings match. Without --config
the pipeline stored in --index is evaluated.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from retrieval import cli

logger = logging.getLogger(__name__)

SUMMARY = "Evaluate each stage of a pipeline on a BEIR dataset (nDCG@10, MRR@10, recall, MAP, P@10)."
EXAMPLES = ("--config configs/hybrid.yaml --dataset ../shared/datasets/scifact --split test",
            "--dataset ../shared/datasets/scifact --index /tmp/idx/scifact --stages bm25,hybrid "
            "--output results.json --run-dir runs/")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="pipeline YAML (default: the pipeline stored in --index)")
    p.add_argument("--dataset", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--stages", help="comma-separated stages (default: every stage the pipeline has)")
    p.add_argument("--index", help="a built index of the dataset (default: build or reuse one under --cache-dir)")
    p.add_argument("--cache-dir", default=str(cli.ROOT / "indexes" / "eval"), help="where built indexes are kept")
    p.add_argument("--output", help="write the JSON report to this file")
    p.add_argument("--run-dir", help="write one TREC run file per stage into this folder")
    p.add_argument("--max-queries", type=cli.positive_int, help="evaluate only the first N judged queries")
    p.add_argument("--batch-size", type=cli.positive_int, default=64, help="queries per retrieval batch (default: 64)")
    p.add_argument("--ignore-identical-ids", action="store_true",
                   help="drop retrieved documents whose id equals the query id (BEIR's default for datasets whose "
                        "queries are also documents)")
    p.add_argument("--filter", metavar="JSON", type=cli.metadata_filter,
                   help="metadata filter every query runs under, e.g. '{\"source\": \"pubmed\"}' (README: Filters)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")


def run(args: argparse.Namespace) -> int:
    from index.cache import cached_index
    from retrieval import SearchPipeline
    from retrieval.config import load_config
    from retrieval.evaluation import evaluate, load_beir

    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    if args.stages is not None and not stages:
        raise ValueError("--stages is empty; give a comma-separated list such as bm25,dense,hybrid")
    if args.config is None and args.index is None:
        raise ValueError("give --config (the index is then built under --cache-dir) or --index (its stored "
                         "pipeline is then evaluated)")
    start = time.perf_counter()
    config = load_config(args.config) if args.config else None
    data = load_beir(args.dataset, args.split, max_queries=args.max_queries)
    seconds = {"load": time.perf_counter() - start}
    start = time.perf_counter()
    index = Path(args.index) if args.index else cached_index(args.dataset, config.build_config(), args.cache_dir,
                                                             show_progress=not args.quiet)
    pipe = SearchPipeline.from_index(index, config)
    seconds["index"] = time.perf_counter() - start
    result = evaluate(pipe, data, stages, batch_size=args.batch_size, ignore_identical_ids=args.ignore_identical_ids,
                      show_progress=not args.quiet, filter=args.filter)
    result.seconds = {**seconds, **result.seconds}
    report = result.to_dict()
    report.update(config=str(args.config) if args.config else None, index=str(pipe.config.index.path))
    for note in result.notes:  # the report holds them too
        logger.info(note)
    tests = [result.compare(result.stages[0], s, "ndcg@10") for s in result.stages[1:]]
    report["significance"] = {t.b: {"baseline": t.a, "metric": t.metric, "method": t.method, "diff": round(t.diff, 6),
                                    "p_value": t.p_value} for t in tests}
    if args.output:
        out = Path(args.output).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(cli.to_json(report, indent=2) + "\n", encoding="utf-8")
    if args.run_dir:
        result.write_runs(args.run_dir)
    if args.json:
        cli.print_json(report)
        return 0
    table = result.table().dropna(axis=1, how="all")
    table["seconds"] = [result.seconds[s] for s in table.index]
    print(f"{data.name} / {data.split}: {result.num_queries} queries, index {pipe.config.index.path}")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    for t in tests:
        print(t)
    return 0
