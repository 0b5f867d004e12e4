"""`twostage build`: build an index directory from a corpus, storing the whole pipeline config in it (so that
`twostage search` and `twostage eval` run the same pipeline without `--config`)."""

from __future__ import annotations

import argparse

from retrieval import cli

SUMMARY = "Build an index (BM25 + embeddings + document store) from a corpus."
EXAMPLES = ("--config configs/default.yaml --corpus index/samples/sample_corpus.jsonl --output /tmp/idx/sample",
            "--config configs/hybrid.yaml --corpus corpus.jsonl --output /tmp/idx/sharded --ray local --shards 4")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline YAML (its index/first_stage sections are used)")
    p.add_argument("--corpus", required=True, help="BEIR folder, .jsonl, .csv/.tsv, or a folder of .txt/.md")
    p.add_argument("--output", help="index directory to create or replace (default: the config's index.path)")
    p.add_argument("--ray", metavar="ADDRESS", help="build on Ray: 'local' (a cluster in this process), 'auto' (the "
                                                   "cluster this machine runs) or a cluster address; needs the ray "
                                                   "extra")
    p.add_argument("--shards", type=cli.positive_int, help="with --ray: N shard indexes (by a hash of the document "
                                                           "id) and a top-level sharded.json (implies --ray local)")
    p.add_argument("--workers", type=cli.positive_int, help="with --ray: worker actors (default: one per CPU)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def run(args: argparse.Namespace) -> int:
    from index.builder import build_index
    from retrieval.config import load_config

    config = load_config(args.config)
    output = args.output or config.index.path
    if output is None:
        raise ValueError("no --output given and the config has no index.path")
    if args.ray or args.shards:
        from index.distributed import build_on_ray

        report = build_on_ray(args.corpus, output, config.build_config(), address=args.ray or "local",
                              shards=args.shards, workers=args.workers, show_progress=not args.quiet,
                              pipeline=config.stored())
    else:
        report = build_index(args.corpus, output, config.build_config(), show_progress=not args.quiet,
                             pipeline=config.stored())
    row = {"index": str(report.path), "documents": report.documents, "passages": report.passages,
           "skipped_empty": report.skipped_empty, "seconds": round(report.seconds, 2),
           "bytes_on_disk": report.bytes_on_disk, "phases": {k: round(v, 2) for k, v in report.phases.items()}}
    if report.details:
        row["ray"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in report.details.items()}
    if args.json:
        cli.print_json(row)
        return 0
    print(f"index      {report.path}")
    print(f"documents  {report.documents:,}" + (f"  (skipped {report.skipped_empty} empty)"
                                                if report.skipped_empty else ""))
    print(f"passages   {report.passages:,}")
    print(f"seconds    {report.seconds:.1f}")
    width = max(map(len, report.phases), default=0)
    for phase, seconds in report.phases.items():  # reading the corpus, then each component, then the manifest
        print(f"  {phase:<{width}}  {seconds:>8.2f}")
    print(f"size       {cli.human_bytes(report.bytes_on_disk)}")
    if report.details:
        d = report.details
        shards = f", {d['shards']} shards" if d["shards"] else ""
        print(f"ray        {d['workers']} workers, {d['tasks']} tasks ({d['tasks_per_s']:.2f}/s){shards}")
    return 0
