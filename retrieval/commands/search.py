"""`twostage search`: query an index and print ranked results with per-stage scores and a snippet of the
matching passage (or one JSON object per query). Without `--config` the pipeline the index was built with is
used (`SearchPipeline.from_index`); a config given replaces its query-time settings."""

from __future__ import annotations

import argparse
import logging

from retrieval import cli
from retrieval.server import TEXT_CHARS

SUMMARY = "Search an index built by `twostage build`."
EXAMPLES = ('--index /tmp/idx/sample "how do tides work"',
            '--index /tmp/idx/sample --config configs/hybrid.yaml --top-k 5 --json "vitamin D and cancer"')

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, help="index directory")
    p.add_argument("--config", help="pipeline YAML whose query-time settings replace the index's own "
                                    "(default: the pipeline the index was built with)")
    p.add_argument("--top-k", type=cli.positive_int, help="results per query (default: the config's output.top_k)")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    p.add_argument("--full-text", action="store_true",
                   help=f"with --json: full document text, not {TEXT_CHARS} chars (text_truncated says when cut)")
    p.add_argument("--passages", action="store_true",
                   help="with --json: every matched passage of each result, best first (chunked indexes)")
    p.add_argument("--filter", metavar="JSON", type=cli.metadata_filter,
                   help='metadata filter, e.g. \'{"source": "pubmed", "year": {"gte": 2015}}\' (README: Filters)')
    p.add_argument("--ray", metavar="ADDRESS", help="search a sharded index with one Ray actor per shard: 'local', "
                                                   "'auto' or a cluster address (needs the ray extra)")
    p.add_argument("queries", nargs="+", metavar="QUERY")


def run(args: argparse.Namespace) -> int:
    from retrieval import SearchPipeline
    from retrieval.commands.snippet import bold_wanted, pipeline_matcher
    from retrieval.server import result_json

    pipe = SearchPipeline.from_index(args.index, args.config, ray=args.ray)
    results = pipe.query_batch(args.queries, top_k=args.top_k, passages=args.passages, filter=args.filter)
    matcher, bold = pipeline_matcher(pipe), bold_wanted()
    for query, hits in zip(args.queries, results):
        if args.json:
            cli.print_json({"query": query, "results": [result_json(r, args.full_text) for r in hits]})
        else:
            print(cli.format_results(query, hits, pipe.stages, matcher(query), bold))
    for note in pipe.notes():
        logger.info(note)
    return 0
