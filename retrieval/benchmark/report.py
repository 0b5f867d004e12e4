"""What a benchmark run is given (`Settings`) and what each section hands back (`Section`: its figures for the
JSON report, its `Table`s and notes for the reader).

Example:
    >>> from retrieval.benchmark.report import Section, Settings, Table
    >>> Settings(dataset="../shared/datasets/scifact").repeats
    5
    >>> Section({"queries": 3}, [Table("BM25 queries", [{"method": "ours", "queries/s": 1e4}])]).tables[0].title
    'BM25 queries'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECTIONS = ("e2e", "bm25", "bm25-index", "dense", "rerank", "curve", "passages", "updates", "filters", "scale",
            "ray")
# passages builds a chunked index and reranks the dev queries four times (minutes), updates, filters, scale and ray
# build their own indexes (minutes; scale: a million passages): asked for by name only.
DEFAULT_SECTIONS = SECTIONS[:-5]
RERANK_VARIANTS = ("config", "torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8", "onnx-int8-partial",
                   "openvino-fp32", "openvino-bf16", "openvino-int8")


@dataclass
class Settings:
    """Which sections run and how much of each: sizes, repetitions, and the splits the quality figures use.

    The defaults are `scripts/benchmark.py`'s. Unknown section or variant names are a `ValueError` here, before
    anything runs."""

    dataset: str | Path  # the BEIR folder (its corpus is tokenized for bm25-index; its splits feed the curve)
    config: str = ""  # the config file, as named in the report
    sections: tuple[str, ...] = DEFAULT_SECTIONS  # a subset of SECTIONS, run in this module's order
    repeats: int = 5  # timed runs per measurement (the median is reported)
    k: int = 10  # top-k of the BM25 and FAISS comparisons
    batch_size: int = 32  # queries per query_batch call
    e2e_queries: int = 30
    e2e_batches: int = 1
    bm25_queries: int = 300  # queries of the BM25 comparison (rank_bm25 is slow)
    dense_passages: int = 128  # passages encoded per run
    dense_queries: int = 200
    rerank_queries: int = 50  # test queries whose candidates are reranked
    rerank_depth: int = 20  # candidates per query of the rerank comparison
    rerank_chunks: int = 5  # timed chunks the pairs are split into
    rerank_variants: tuple[str, ...] = ("config", "torch-fp32", "torch-bf16", "onnx-int8", "openvino-fp32")
    rerank_models: tuple[str, ...] = ()  # other rerankers (e.g. distilled students) run as configured, same pairs
    curve_queries: int = 12  # queries of the rerank depth curve
    curve_depths: tuple[int, ...] = (10, 20, 50, 100)  # rerank top_n values of the curve
    curve_split: str = "dev"  # a BEIR split, or dev: the training queries held out from the reranker
    passage_words: int = 64  # passages: words per passage of the chunked index
    passage_depths: tuple[int, ...] = (1, 2, 4, 8)  # passages: rerank.max_passages values
    cache_dir: str | Path = "indexes/eval"  # passages: where its chunked index is built once and reused
    dev_fraction: float = 0.2  # dev: share of the training queries held out
    dev_seed: int = 13  # dev: seed of the sample (the bundled reranker's)
    updates_docs: int = 0  # updates: SciFact documents read (the first ones; 0: the whole corpus)
    updates_held_out: int = 100  # updates: documents left out of the SciFact build, then added, deleted
    updates_rounds: int = 3  # updates: add + delete rounds before the last add (the medians are reported)
    synthetic_docs: int = 100_000  # updates, filters: documents of the synthetic corpus
    synthetic_queries: int = 200  # updates, filters: synthetic queries, one per call
    synthetic_segments: int = 10  # updates: delta segments (commits) added to the 90% base
    synthetic_faiss: tuple[str, ...] = ("flat", "hnsw")  # updates, filters: FAISS types (BM25 with the first only)
    scale_passages: int = 1_000_000  # scale: synthetic passages (BM25) and vectors (FAISS)
    scale_queries: int = 200  # scale: queries, one per call
    scale_faiss: tuple[str, ...] = ("flat", "hnsw", "ivf", "sq8")  # scale: FAISS types (none: BM25 only)
    scale_ef_construction: int = 40  # scale: hnsw build effort (faiss's default; the config's 200 takes ~5x longer)
    scale_hybrid: str = ""  # scale: FAISS type of a BM25 + dense index at scale_passages (empty: none)
    ray_address: str = "local"  # ray: the cluster ("local": one started in this process)
    ray_docs: int = 2000  # ray: dataset documents built with the config's first stage (0: all)
    ray_shards: int = 4  # ray: shards of the sharded build and search
    ray_bm25_passages: int = 200_000  # ray: synthetic passages of the BM25-only builds
    ray_queries: int = 100  # ray: test queries searched one per call
    quiet: bool = False  # no progress bars

    def __post_init__(self) -> None:
        for what, given, known in (("section", self.sections, SECTIONS),
                                   ("rerank variant", self.rerank_variants, RERANK_VARIANTS),
                                   ("FAISS type", self.synthetic_faiss, ("flat", "hnsw", "ivf", "sq8")),
                                   ("FAISS type", self.scale_faiss, ("flat", "hnsw", "ivf", "sq8")),
                                   ("FAISS type", (self.scale_hybrid,) if self.scale_hybrid else (),
                                    ("flat", "hnsw", "ivf", "sq8"))):
            unknown = sorted(set(given) - set(known))
            if unknown:
                raise ValueError(f"unknown {what}(s) {unknown}; choose from {', '.join(known)}")


@dataclass
class Table:
    """One table for the reader: a title, rows (column -> value, in order) and a note printed above them."""

    title: str
    rows: list[dict[str, Any]]
    note: str = ""


@dataclass
class Section:
    """One section's figures (`report`, JSON-ready), its tables, and notes (what was skipped, and why) that come
    before them."""

    report: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
