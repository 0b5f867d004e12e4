"""The main job on the embedded default: index the bundled sample corpus, then answer a few queries.

    python scripts/demo.py [--config configs/default.yaml] [--output /tmp/twostage-sample-index]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from index.builder import build_index  # noqa: E402
from retrieval import SearchPipeline, cli  # noqa: E402
from retrieval.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "index" / "samples" / "sample_corpus.jsonl"
QUERIES = ["why does the ocean have tides", "how do cross-encoders rerank search results",
           "bacteria resistant to drugs", "how long should adults sleep"]


def main(args) -> int:
    config = load_config(args.config)
    output = Path(args.output) if args.output else Path(tempfile.gettempdir()) / "twostage-sample-index"
    report = build_index(SAMPLE, output, config.build_config(), show_progress=not args.quiet)
    print(f"indexed {report.documents} documents from {SAMPLE.relative_to(ROOT)} into {report.path} "
          f"in {report.seconds:.1f} s")
    config.index.path = report.path
    pipe = SearchPipeline(config)
    print(f"stages: {' -> '.join(pipe.stages)}")
    for query, hits in zip(args.queries or QUERIES, pipe.query_batch(args.queries or QUERIES, top_k=args.top_k)):
        print(cli.format_results(query, hits, pipe.stages))
    return 0


if __name__ == "__main__":
    p = cli.parser("Index the bundled sample corpus and print ranked results with per-stage scores.")
    p.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    p.add_argument("--output", help="where to build the sample index (default: a folder in the temp dir)")
    p.add_argument("--top-k", type=cli.positive_int, default=3)
    p.add_argument("queries", nargs="*", metavar="QUERY")
    cli.run(main, p.parse_args())
