"""Metrics by pytrec_eval (trec_eval's code), never computed by hand: metric names, tie-free scores, per-query
tables.

`ndcg@k` (graded gains), `mrr@k` (reciprocal rank of a run cut at k), `recall@k`, `map@k`, `p@k`.

Example:
    >>> from retrieval.evaluation.metrics import mean_metric
    >>> mean_metric({"q1": [("a", 2.0), ("b", 1.0)]}, {"q1": {"b": 1}}, "mrr@10")
    0.5
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import pytrec_eval

from retrieval.evaluation.errors import EvaluationError

Run = dict[str, list[tuple[str, float]]]  # query id -> ranked (doc_id, score), best first
Qrels = dict[str, dict[str, int]]  # query id -> doc id -> graded relevance (0 = judged not relevant)

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000", "map@100", "p@10")
# Our metric name -> pytrec_eval measure family ("mrr" is recip_rank over the run cut at k).
_FAMILIES = {"ndcg": "ndcg_cut", "recall": "recall", "map": "map_cut", "p": "P", "mrr": "recip_rank"}
_METRIC = re.compile(r"^(ndcg|recall|map|p|mrr)@([1-9][0-9]*)$")


def parse_metric(name: str) -> tuple[str, int]:
    """`"ndcg@10"` -> `("ndcg", 10)`; an `EvaluationError` names the metrics there are."""
    match = _METRIC.match(name.lower())
    if not match:
        raise EvaluationError(f"unknown metric {name!r}; use ndcg@k, mrr@k, recall@k, map@k or p@k")
    return match.group(1), int(match.group(2))


def trec_scores(ranked: Sequence[tuple[str, float]]) -> dict[str, float]:
    """A ranked list as trec_eval sees it: scores made strictly decreasing in float32 (pytrec_eval's precision;
    ties nudged down by one float32 step), so trec_eval ranks exactly as the pipeline did instead of breaking
    ties by document id."""
    out: dict[str, float] = {}
    prev = np.float32(np.inf)
    for doc_id, score in ranked:
        if doc_id in out:
            continue
        value = np.float32(score)
        if not value < prev:
            value = np.nextafter(prev, np.float32(-np.inf))
        prev = value
        out[doc_id] = float(value)
    return out


def score_run(run: Run, qrels: Qrels, metrics: Iterable[str] = DEFAULT_METRICS, *,
              ignore_identical_ids: bool = False) -> pd.DataFrame:
    """Per-query metrics by pytrec_eval: one row per judged query (index = query id), one column per metric.

    A judged query missing from `run` (or with an empty ranking) scores 0 everywhere, like `trec_eval -c`.
    `ignore_identical_ids` drops documents whose id equals the query id (BEIR's default, for datasets whose
    queries are also documents).
    """
    metrics = list(dict.fromkeys(metrics))
    parsed = {m: parse_metric(m) for m in metrics}
    trec_run: dict[str, dict[str, float]] = {}
    for q, ranked in run.items():
        if ignore_identical_ids:
            ranked = [(d, s) for d, s in ranked if d != q]
        scores = trec_scores(ranked)
        if scores:
            trec_run[q] = scores
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if docs}
    table = pd.DataFrame(0.0, index=pd.Index(list(judged), name="query_id"), columns=metrics)
    cutoffs: dict[str, list[int]] = {}
    for family, k in parsed.values():
        if family != "mrr":
            cutoffs.setdefault(_FAMILIES[family], []).append(k)
    if cutoffs:
        measures = {f"{fam}.{','.join(map(str, sorted(set(ks))))}" for fam, ks in cutoffs.items()}
        results = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(trec_run)
        for m, (family, k) in parsed.items():
            if family != "mrr":
                key = f"{_FAMILIES[family]}_{k}"
                for q, values in results.items():
                    table.at[q, m] = values[key]
    for m, (family, k) in parsed.items():
        if family == "mrr":  # MRR@k: trec_eval's recip_rank over the top k only
            cut = {q: dict(sorted(s.items(), key=lambda x: -x[1])[:k]) for q, s in trec_run.items()}
            results = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(cut)
            for q, values in results.items():
                table.at[q, m] = values["recip_rank"]
    return table


def mean_metric(run: Run, qrels: Qrels, metric: str = "ndcg@10", *, ignore_identical_ids: bool = False) -> float:
    """The mean of one metric (by `score_run`) over the queries of `run` that have judgments; 0.0 when none has."""
    judged = {q: qrels[q] for q in run if qrels.get(q)}
    if not judged:
        return 0.0
    return float(score_run(run, judged, [metric], ignore_identical_ids=ignore_identical_ids)[metric].mean())
