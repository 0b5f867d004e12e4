"""Build an index directory from a corpus.

    python scripts/build_index.py --config configs/hybrid.yaml --corpus ../shared/datasets/scifact --output /tmp/idx
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from index.builder import build_index  # noqa: E402
from retrieval import cli  # noqa: E402
from retrieval.config import load_config  # noqa: E402


def main(args) -> int:
    config = load_config(args.config)
    output = args.output or config.index.path
    if output is None:
        raise ValueError("no --output given and the config has no index.path")
    report = build_index(args.corpus, output, config.build_config(), show_progress=not args.quiet)
    row = {"index": str(report.path), "documents": report.documents, "passages": report.passages,
           "skipped_empty": report.skipped_empty, "seconds": round(report.seconds, 2),
           "bytes_on_disk": report.bytes_on_disk}
    if args.json:
        cli.print_json(row)
    else:
        print(f"index      {report.path}")
        print(f"documents  {report.documents:,}" + (f"  (skipped {report.skipped_empty} empty)"
                                                    if report.skipped_empty else ""))
        print(f"passages   {report.passages:,}")
        print(f"seconds    {report.seconds:.1f}")
        print(f"size       {cli.human_bytes(report.bytes_on_disk)}")
    return 0


if __name__ == "__main__":
    p = cli.parser("Build an index (BM25 + embeddings + document store) from a corpus.")
    p.add_argument("--config", required=True, help="pipeline YAML (its index/first_stage sections are used)")
    p.add_argument("--corpus", required=True, help="BEIR folder, .jsonl, .csv/.tsv, or a folder of .txt/.md")
    p.add_argument("--output", help="index directory to create or replace (default: the config's index.path)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    cli.run(main, p.parse_args())
