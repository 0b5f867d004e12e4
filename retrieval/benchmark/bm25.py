"""BM25 against the libraries users would pick instead: query throughput on the same tokens (ours vs rank_bm25 vs
bm25s, with how often the top-k agree) and indexing speed from the same pre-tokenized documents.

Example:
    >>> from retrieval.benchmark.bm25 import section_bm25
    >>> section_bm25(pipe, queries, Settings(dataset)).report["identical_top_k_vs_rank_bm25"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval.benchmark.measure import median, timed_runs
from retrieval.benchmark.report import Section, Settings, Table


def bm25_tokens(pipe: Any, queries: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """The index's document tokens and `queries` tokenized by the index's own analyzer."""
    from index.analyzer import Analyzer

    analyzer = Analyzer(pipe.index.build_config.bm25.analyzer)
    return pipe.index.bm25.doc_tokens(), [analyzer.tokenize(q) for q in queries]


def section_bm25(pipe: Any, queries: list[str], settings: Settings) -> Section:
    """Query throughput on the same tokens: ours (single, batched) vs rank_bm25 get_top_n vs bm25s."""
    import bm25s
    import rank_bm25

    from index.bm25 import BM25Scorer

    notes = []
    cfg = pipe.config.first_stage.bm25
    if cfg.variant != "okapi":
        notes.append(f"\nnote: the config's BM25 variant is {cfg.variant!r}; the comparison uses okapi "
                     "(rank_bm25.BM25Okapi)")
        cfg = cfg.model_copy(update={"variant": "okapi"})
    docs, toks = bm25_tokens(pipe, queries[: settings.bm25_queries])
    ours = BM25Scorer(pipe.index.bm25, cfg)
    ref = rank_bm25.BM25Okapi(docs, k1=cfg.k1, b=cfg.b, epsilon=cfg.epsilon)
    # bm25s "robertson" is the same Okapi formula as rank_bm25 except the epsilon floor for negative idf.
    other = bm25s.BM25(k1=cfg.k1, b=cfg.b, method="robertson")
    other.index(docs, show_progress=False)
    everyone = list(range(len(docs)))
    k, repeats = settings.k, settings.repeats
    runs = {
        "rank_bm25 get_top_n": timed_runs(lambda: [ref.get_top_n(t, everyone, n=k) for t in toks], repeats,
                                          warmup=0),
        "bm25s retrieve, one query per call": timed_runs(
            lambda: [other.retrieve([t], k=k, show_progress=False) for t in toks], repeats),
        "bm25s retrieve, all queries in one call": timed_runs(
            lambda: other.retrieve(toks, k=k, show_progress=False), repeats),
        "ours search, one query per call": timed_runs(lambda: [ours.search(t, k) for t in toks], repeats),
        "ours search_batch": timed_runs(lambda: ours.search_batch(toks, k), repeats),
    }
    identical = tie_only = 0
    for t in toks:
        ref_scores = ref.get_scores(t)
        top = np.argsort(ref_scores)[::-1][:k]  # exactly what get_top_n does with these scores
        rows_ = ours.search(t, k)[0]
        n = len(rows_)
        # Ours returns only documents holding a query term; rank_bm25 pads its top-k with score-0 documents.
        padded = n == len(top) or not np.any(ref_scores[top[n:]])
        if padded and rows_.tolist() == top[:n].tolist():
            identical += 1
        elif padded and sorted(ref_scores[top[:n]].tolist()) == sorted(ref_scores[rows_].tolist()):
            tie_only += 1  # the same scores; rank_bm25 orders exact ties by descending row, ours ascending
    overlap = np.mean([len(set(ours.search(t, k)[0].tolist()) & set(other.retrieve([t], k=k, show_progress=False)
                                                                        .documents[0].tolist())) / k
                       for t in toks if t])
    base = len(toks) / median(runs["rank_bm25 get_top_n"])
    rows, out = [], {}
    for name, secs in runs.items():
        qps = len(toks) / median(secs)
        out[name] = {"queries_per_s": qps, "x_rank_bm25": qps / base, "runs_s": secs}
        rows.append({"method": name, "queries/s": qps, "x rank_bm25": qps / base,
                     "ms/query": 1e3 * median(secs) / len(toks)})
    table = Table(f"BM25 queries: {len(toks)} queries, top-{k}, {len(docs):,} documents, same tokens", rows,
                  f"ours vs rank_bm25 top-{k}: {identical}/{len(toks)} identical"
                  + (f", {tie_only} differ only in the order of exactly tied scores" if tie_only else "")
                  + f"; bm25s (robertson) top-{k} overlap with ours {overlap:.3f}")
    report = {"queries": len(toks), "k": k, "documents": len(docs), "methods": out,
              "identical_top_k_vs_rank_bm25": identical, "tie_order_only": tie_only, "bm25s_overlap": overlap}
    return Section(report, [table], notes)


def section_bm25_index(pipe: Any, settings: Settings) -> Section:
    """Documents per second to build each library's index from the same pre-tokenized documents."""
    import bm25s
    import rank_bm25

    from index.analyzer import Analyzer
    from index.bm25 import BM25Scorer, BM25Stats
    from index.documents import model_text, read_corpus

    cfg = pipe.config.first_stage.bm25
    docs = pipe.index.bm25.doc_tokens()
    repeats = settings.repeats
    runs = {
        "rank_bm25.BM25Okapi(...)": timed_runs(lambda: rank_bm25.BM25Okapi(docs, k1=cfg.k1, b=cfg.b),
                                               repeats, warmup=0),
        "bm25s.BM25().index(...)": timed_runs(lambda: bm25s.BM25(k1=cfg.k1, b=cfg.b).index(docs, show_progress=False),
                                              repeats, warmup=0),
        "ours BM25Stats.build + BM25Scorer": timed_runs(lambda: BM25Scorer(BM25Stats.build(docs), cfg), repeats,
                                                        warmup=0),
    }
    base = len(docs) / median(runs["rank_bm25.BM25Okapi(...)"])
    rows, out = [], {}
    for name, secs in runs.items():
        rate = len(docs) / median(secs)
        out[name] = {"docs_per_s": rate, "x_rank_bm25": rate / base, "runs_s": secs}
        rows.append({"method": name, "docs/s": rate, "x rank_bm25": rate / base, "seconds": median(secs)})
    texts = [model_text(d.title, d.text) for d in read_corpus(settings.dataset)]
    analyzer = Analyzer(pipe.index.build_config.bm25.analyzer)
    secs = timed_runs(lambda: [analyzer.tokenize(t) for t in texts], 1, warmup=0)
    out["tokenize (our analyzer, not in the figures above)"] = {"docs_per_s": len(texts) / median(secs)}
    table = Table(f"BM25 indexing: {len(docs):,} pre-tokenized documents", rows,
                  f"(tokenizing them with our analyzer: {len(texts) / median(secs):,.0f} docs/s, common to all)")
    return Section({"documents": len(docs), "methods": out}, [table])
