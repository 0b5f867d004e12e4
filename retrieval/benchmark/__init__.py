"""Side-by-side speed (and quality) of every stage against the libraries users would pick instead of us.

Every comparison runs in one process on the same inputs, reports medians of repeated runs (warm-up excluded) and
the ratio beside the absolute figures. Sections: end-to-end pipeline latency and peak RSS (`e2e`, run first, so
the RSS is the pipeline's), BM25 queries and indexing (`bm25`: ours vs rank-bm25 vs bm25s), dense (`dense`:
encoding, FAISS index types), rerank (`rerank`: ours vs plain CrossEncoder.predict, nDCG@10 on a stated subset)
and the rerank depth curve (`curve`: nDCG@10 and latency per top_n). `scripts/benchmark.py` is its command line:
it prints each `Section`'s tables and writes their figures as JSON. Names are imported on first use (PEP 562).

Example:
    >>> from retrieval.benchmark import Settings, run_sections
    >>> settings = Settings("../shared/datasets/scifact", sections=("bm25", "dense"))
    >>> report = dict(run_sections(config, test, settings))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from index.lazy import lazy_exports

_HOMES = {
    "load_average": "retrieval.benchmark.measure",
    "machine": "retrieval.benchmark.measure",
    "median": "retrieval.benchmark.measure",
    "pct": "retrieval.benchmark.measure",
    "timed_runs": "retrieval.benchmark.measure",
    "RERANK_VARIANTS": "retrieval.benchmark.report",
    "SECTIONS": "retrieval.benchmark.report",
    "Section": "retrieval.benchmark.report",
    "Settings": "retrieval.benchmark.report",
    "Table": "retrieval.benchmark.report",
    "run_sections": "retrieval.benchmark.run",
}
__all__ = [
    "RERANK_VARIANTS", "SECTIONS", "Section", "Settings", "Table", "load_average", "machine", "median", "pct",
    "run_sections", "timed_runs",
]

if TYPE_CHECKING:
    from retrieval.benchmark.measure import load_average, machine, median, pct, timed_runs
    from retrieval.benchmark.report import RERANK_VARIANTS, SECTIONS, Section, Settings, Table
    from retrieval.benchmark.run import run_sections

__getattr__ = lazy_exports(__name__, _HOMES)
