"""Query an index and print ranked results with per-stage scores.

    python scripts/search.py --index /tmp/idx --config configs/hybrid.yaml "vitamin D and cancer"
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from index.directory import IndexDirectory  # noqa: E402
from retrieval import SearchPipeline, cli  # noqa: E402
from retrieval.config import PipelineConfig, load_config  # noqa: E402


def main(args) -> int:
    if args.config:
        config = load_config(args.config)
    else:  # the index's own build settings, no reranker
        config = PipelineConfig.for_index(IndexDirectory.load(args.index).build_config)
    config.index.path = Path(args.index).expanduser().resolve()
    pipe = SearchPipeline(config)
    results = pipe.query_batch(args.queries, top_k=config.output.top_k if args.top_k is None else args.top_k)
    for query, hits in zip(args.queries, results):
        if args.json:
            cli.print_json({"query": query, "results": [
                {"doc_id": r.doc_id, "score": r.score, "rank": r.rank, "title": r.title,
                 "text": r.text if args.full_text else r.text[:300], "metadata": r.metadata,
                 "stages": {k: {"score": v.score, "rank": v.rank} for k, v in r.stages.items()}}
                for r in hits]})
            continue
        print(cli.format_results(query, hits, pipe.stages))
    return 0


if __name__ == "__main__":
    p = cli.parser("Search an index built by scripts/build_index.py.")
    p.add_argument("--index", required=True, help="index directory")
    p.add_argument("--config", help="pipeline YAML (default: the index's own first-stage settings)")
    p.add_argument("--top-k", type=cli.positive_int, help="results per query (default: the config's output.top_k)")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    p.add_argument("--full-text", action="store_true", help="with --json: full document text, not 300 chars")
    p.add_argument("queries", nargs="+", metavar="QUERY")
    cli.run(main, p.parse_args())
