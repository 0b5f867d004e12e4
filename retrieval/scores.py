"""Score arithmetic shared by fusion, the pipeline's second stage and reranker evaluation: normalisation, and
how re-scored candidates are blended with the first stage and put above the ones left unscored.

Example:
    >>> import numpy as np
    >>> from retrieval.scores import rerank_list
    >>> rerank_list([("a", 3.0), ("b", 2.0), ("c", 1.0)], np.array([0.1, 0.9]), interpolation=0.0)
    [('b', 0.9), ('a', 0.1), ('c', -0.9)]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalize(values: np.ndarray, method: str) -> np.ndarray:
    """`minmax` into [0, 1] (all ones when every value is equal) or `zscore` (all zeros then)."""
    if len(values) == 0:
        return values
    if method == "minmax":
        lo, hi = values.min(), values.max()
        return np.ones_like(values) if hi == lo else (values - lo) / (hi - lo)
    if method == "zscore":
        std = values.std()
        return np.zeros_like(values) if std == 0 else (values - values.mean()) / std
    raise ValueError(f"unknown normalization {method!r}; use minmax or zscore")


def interpolate(rerank_scores: np.ndarray, first_scores: np.ndarray, interpolation: float) -> np.ndarray:
    """`(1 - w) * minmax(rerank) + w * minmax(first stage)`; with `w = 0` the reranker's own scores, unchanged."""
    scores = np.asarray(rerank_scores, dtype=np.float64)
    if interpolation <= 0:
        return scores
    first = np.asarray(first_scores, dtype=np.float64)
    return (1 - interpolation) * normalize(scores, "minmax") + interpolation * normalize(first, "minmax")


def rerank_list(first: Sequence[tuple[str, float]], rerank_scores: np.ndarray,
                interpolation: float = 0.0) -> list[tuple[str, float]]:
    """The second stage's ranking of one query.

    `first` is the first stage's ranking; its first `len(rerank_scores)` candidates were re-scored. They are
    ordered by their interpolated score (ties keep first-stage order); the rest follow in first-stage order, each
    scored below every re-scored one (`lowest - 1 - i`), so any metric reads one consistent ranking.
    """
    n = len(rerank_scores)
    head, tail = first[:n], first[n:]
    if not head:
        return []
    scores = interpolate(rerank_scores, np.array([s for _, s in head], dtype=np.float64), interpolation)
    order = np.argsort(-scores, kind="stable")
    low = float(scores.min())
    return [(head[i][0], float(scores[i])) for i in order] + [(d, low - 1 - i) for i, (d, _) in enumerate(tail)]
