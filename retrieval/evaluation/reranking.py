"""Scoring a reranker on judged queries: its runs for each interpolation weight, and their nDCG@10.

The runs are ranked by `retrieval.scores.rerank_list`, the pipeline's own second stage (interpolation, ties and
the unscored tail alike), so a weight chosen here ranks exactly as the pipeline will rank with it; nDCG@10 is
pytrec_eval's, through `metrics.mean_metric`.

Example:
    >>> import numpy as np
    >>> from retrieval.evaluation import ndcg10, rerank_runs
    >>> runs = rerank_runs(lambda pairs: np.array([0.0, 1.0]), {"q": "tides"}, {"q": [("a", 2.0), ("b", 1.0)]},
    ...                    str, top_n=2, weights=[0.0])
    >>> runs[0.0]["q"]
    {'b': 1.0, 'a': 0.0}
    >>> ndcg10(runs[0.0], {"q": {"b": 1}})
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from retrieval.evaluation.metrics import mean_metric
from retrieval.scores import rerank_list


def rerank_runs(score: Callable[[list[tuple[str, str]]], np.ndarray], queries: Mapping[str, str],
                candidates: Mapping[str, Sequence[tuple[str, float]]], doc_text: Callable[[str], str], top_n: int,
                weights: Sequence[float]) -> dict[float, dict[str, dict[str, float]]]:
    """Runs (query -> doc id -> score, best first) for each interpolation weight w of the first-stage score
    (0 = reranker alone): the top `top_n` candidates re-scored by `score` in one call, the rest below them."""
    qids = sorted(queries)
    pairs, spans = [], []
    for q in qids:
        start = len(pairs)
        pairs += [(queries[q], doc_text(d)) for d, _ in candidates[q][:top_n]]
        spans.append((start, len(pairs)))
    scores = np.asarray(score(pairs), dtype=np.float64)
    runs: dict[float, dict[str, dict[str, float]]] = {w: {} for w in weights}
    for q, (s, e) in zip(qids, spans):
        if s == e:  # no candidates: nothing to rank
            continue
        for w in weights:
            runs[w][q] = dict(rerank_list(candidates[q], scores[s:e], w))
    return runs


def ndcg10(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]) -> float:
    """Mean nDCG@10 (pytrec_eval) over the judged queries of `run`, each ranked by its scores (ties in the order
    given, as the pipeline ranked them); 0.0 when none is judged."""
    ranked = {q: sorted(docs.items(), key=lambda x: -x[1]) for q, docs in run.items()}
    return mean_metric(ranked, {q: dict(r) for q, r in qrels.items()}, "ndcg@10")
