"""Metadata filters: what a filter costs a query, and whether a filtered query still returns a full top-k.

On the synthetic corpus of the `updates` section (`synthetic_docs` documents, each with a `bucket` in
0..9999 spread evenly), filters `bucket < b` select 50%, 1% and 0.01% of the documents. For BM25 and dense
(random unit vectors, `HashEncoder`) alone, one query per `retrieve` call, each query is timed unfiltered and under
each filter in turn, and each answer is checked: it must hold min(k, matching documents that score) results (BM25:
the matching documents holding a query term; dense: every matching document scores), all inside the filter.

Example:
    >>> from retrieval.benchmark.filters import section_filters
    >>> section_filters(config, Settings(dataset, sections=("filters",))).report["types"]["flat"]  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.benchmark.measure import load_average, pct, progress
from retrieval.benchmark.report import Section, Settings, Table
from retrieval.benchmark.updates import (
    BUCKETS,
    HashEncoder,
    bm25_settings,
    open_pipeline,
    synthetic_build_config,
    synthetic_corpus,
    synthetic_queries,
    timed,
    timed_retrieve,
    write_jsonl,
)

# label -> the bucket bound: `bucket < bound` selects bound / BUCKETS of the documents
SELECTIVITIES = {"50%": BUCKETS // 2, "1%": BUCKETS // 100, "0.01%": 1}
UNFILTERED = "none"


def scoring_rows(pipe: Any, query: str) -> np.ndarray:
    """The rows holding a term the BM25 scorer counts for `query` (the documents BM25 can return)."""
    retriever = pipe.bm25
    stats = retriever.scorer.stats
    out = np.zeros(stats.num_docs, dtype=bool)
    for term in set(retriever.scorer.scored_tokens(retriever.analyzer.tokenize(query))):
        t = stats.term_ids[term]
        out[stats.indices[stats.indptr[t] : stats.indptr[t + 1]]] = True
    return out


def measure_filters(pipe: Any, stage: str, queries: list[str], filters: dict[str, dict[str, Any] | None],
                    masks: dict[str, np.ndarray], buckets: dict[str, int], k: int, quiet: bool) -> dict[str, Any]:
    """Per filter label: p50/p95 ms per call, and the answers shorter or longer than min(k, matching scoring
    documents) and the results outside the filter."""
    for q in queries[: min(10, len(queries))]:  # warm-up, and each filter's mask made once (then cached)
        for flt in filters.values():
            pipe.retrieve([q], stage=stage, top_k=k, filter=flt)
    times: dict[str, list[float]] = {label: [] for label in filters}
    short = dict.fromkeys(filters, 0)
    longer = dict.fromkeys(filters, 0)
    outside = dict.fromkeys(filters, 0)
    for q in progress(queries, f"filters ({stage})", quiet):
        scoring = scoring_rows(pipe, q) if stage == "bm25" else None
        for label, flt in filters.items():
            secs, got = timed_retrieve(pipe, q, stage, k, flt)
            times[label].append(secs)
            mask = masks[label]
            matching = int((mask & scoring).sum()) if scoring is not None else int(mask.sum())
            short[label] += len(got) < min(k, matching)
            longer[label] += len(got) > min(k, matching)
            if flt is not None:
                bound = flt["bucket"]["lt"]
                outside[label] += sum(buckets[d] >= bound for d, _ in got)
    base = pct(times[UNFILTERED], 50)
    return {label: {"p50_ms": pct(v, 50) * 1e3, "p95_ms": pct(v, 95) * 1e3, "x_unfiltered": pct(v, 50) / base,
                    "short_answers": short[label], "long_answers": longer[label],
                    "results_outside_filter": outside[label], "queries": len(v)} for label, v in times.items()}


def section_filters(config: Any, settings: Settings) -> Section:
    """Filtered vs unfiltered query p50 at 50%, 1% and 0.01% selectivity, BM25 and dense, with the answer-length
    check (see the module). One index per `synthetic_faiss` type (BM25 in the first only), built in a temporary
    directory removed at the end."""
    from index.builder import build_index

    n = settings.synthetic_docs
    docs = synthetic_corpus(n)
    buckets = {d["_id"]: d["bucket"] for d in docs}
    queries = synthetic_queries(settings.synthetic_queries)
    encoder = HashEncoder()
    models = {"dense": encoder}
    k = settings.k
    filters: dict[str, dict[str, Any] | None] = {UNFILTERED: None}
    filters.update({label: {"bucket": {"lt": bound}} for label, bound in SELECTIVITIES.items()})
    report: dict[str, Any] = {"load_average_at_start": load_average(), "documents": n, "queries": len(queries),
                              "k": k, "filters": filters, "types": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="twostage-bench-filters-") as tmp:
        work = Path(tmp)
        corpus = write_jsonl(docs, work / "synthetic.jsonl")
        for i, faiss_type in enumerate(settings.synthetic_faiss):
            bm25 = bm25_settings(config) if i == 0 else None
            build = synthetic_build_config(bm25, faiss_type, encoder)
            path = work / f"synthetic-{faiss_type}"
            build_s, _ = timed(lambda b=build, p=path: build_index(corpus, p, b, models=models,
                                                                     show_progress=not settings.quiet))
            pipe = open_pipeline(path, build, k, models)
            masks = {label: (pipe.index.filter_mask(flt) if flt is not None else np.ones(n, dtype=bool))
                     for label, flt in filters.items()}
            matching = {label: int(m.sum()) for label, m in masks.items()}
            stages = [s for s in ("bm25", "dense") if pipe.retriever(s) is not None]
            found = {stage: measure_filters(pipe, stage, queries, filters, masks, buckets, k, settings.quiet)
                     for stage in stages}
            report["types"][faiss_type] = {"build_s": build_s, "matching_documents": matching, "stages": found}
            for stage, by_filter in found.items():
                for label, m in by_filter.items():
                    shown = "none" if label == UNFILTERED else f"bucket < {SELECTIVITIES[label]}"
                    rows.append({"stage": stage if stage == "bm25" else f"dense ({faiss_type})", "filter": shown,
                                 "matching docs": f"{matching[label]:,} ({matching[label] / n:.2%})",
                                 "p50 ms": m["p50_ms"], "p95 ms": m["p95_ms"], "x unfiltered": m["x_unfiltered"],
                                 "short answers": m["short_answers"], "too long": m["long_answers"],
                                 "outside filter": m["results_outside_filter"]})
            del pipe
    report["load_average_at_end"] = load_average()
    note = (f"synthetic {n:,} documents, {len(queries)} queries of 2-5 words, one per retrieve() call, top-{k}; each "
            "query timed unfiltered and under each filter in turn (the filter passed as a dict: parsing it and the "
            "cached mask lookup are in the figure). Short answers: fewer than min(k, matching documents that "
            "score) results (BM25: holding a query term; dense: every matching document); they should be 0. "
            f"Load average {report['load_average_at_start']} at the start, {report['load_average_at_end']} at the "
            "end")
    title = "Filters: filtered vs unfiltered query p50 at 50%, 1% and 0.01% selectivity"
    return Section(report, [Table(title, rows, note)])
