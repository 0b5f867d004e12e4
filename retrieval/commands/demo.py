"""`twostage demo`: the main job on the embedded default: index the bundled sample corpus, then answer a few
queries and print their ranked results with per-stage scores."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from retrieval import cli

logger = logging.getLogger(__name__)

SUMMARY = "Index the bundled sample corpus and print ranked results with per-stage scores."
EXAMPLES = ("", "--config configs/hybrid.yaml --top-k 5 \"why does the ocean have tides\"")

SAMPLE = cli.ROOT / "index" / "samples" / "sample_corpus.jsonl"
QUERIES = ["why does the ocean have tides", "how do cross-encoders rerank search results",
           "bacteria resistant to drugs", "how long should adults sleep"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=str(cli.ROOT / "configs" / "default.yaml"))
    p.add_argument("--output", help="where to build the sample index (default: a folder in the temp dir)")
    p.add_argument("--top-k", type=cli.positive_int, default=3)
    p.add_argument("queries", nargs="*", metavar="QUERY")


def run(args: argparse.Namespace) -> int:
    from index.builder import build_index
    from retrieval import SearchPipeline
    from retrieval.commands.snippet import bold_wanted, pipeline_matcher
    from retrieval.config import load_config

    config = load_config(args.config)
    output = Path(args.output) if args.output else Path(tempfile.gettempdir()) / "twostage-sample-index"
    report = build_index(SAMPLE, output, config.build_config(), show_progress=not args.quiet,
                         pipeline=config.stored())
    print(f"indexed {report.documents} documents from {SAMPLE.relative_to(cli.ROOT)} into {report.path} "
          f"in {report.seconds:.1f} s")
    config.index.path = report.path
    pipe = SearchPipeline(config)
    print(f"stages: {' -> '.join(pipe.stages)}")
    matcher, bold = pipeline_matcher(pipe), bold_wanted()
    queries = args.queries or QUERIES
    for query, hits in zip(queries, pipe.query_batch(queries, top_k=args.top_k)):
        print(cli.format_results(query, hits, pipe.stages, matcher(query), bold))
    for note in pipe.notes():
        logger.info(note)
    return 0
