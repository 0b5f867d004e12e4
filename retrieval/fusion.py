"""Fusing ranked lists: reciprocal rank fusion, or a weighted sum of normalized scores.

A candidate missing from a list gets nothing from it under RRF, and that list's lowest normalized score under
the weighted sum (it ranked below everything the list returned).

Example:
    >>> from retrieval.fusion import rrf
    >>> rrf({"bm25": [("a", 9.0), ("b", 3.0)], "dense": [("b", 0.8)]}, k=60)[0][0]
    'b'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from retrieval.scores import normalize

__all__ = ["normalize", "rrf", "weighted"]

Ranked = Sequence[tuple[str, float]]


def _order(scores: dict[str, float], first_seen: dict[str, int]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))


def _first_seen(lists: Mapping[str, Ranked]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for ranked in lists.values():
        for doc_id, _ in ranked:
            seen.setdefault(doc_id, len(seen))
    return seen


def rrf(
    lists: Mapping[str, Ranked], k: int = 60, weights: Mapping[str, float] | None = None
) -> list[tuple[str, float]]:
    """score(d) = sum over lists of weight / (k + rank of d), ranks starting at 1."""
    scores: dict[str, float] = {}
    for name, ranked in lists.items():
        w = 1.0 if weights is None else weights.get(name, 0.0)
        for rank, (doc_id, _) in enumerate(ranked, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + w / (k + rank)
    return _order(scores, _first_seen(lists))


def weighted(lists: Mapping[str, Ranked], weights: Mapping[str, float],
             normalization: str = "minmax") -> list[tuple[str, float]]:
    """score(d) = sum over lists of weight * normalized score; absent from a list = that list's minimum."""
    first_seen = _first_seen(lists)
    totals = dict.fromkeys(first_seen, 0.0)
    for name, ranked in lists.items():
        w = weights.get(name, 0.0)
        if not ranked or w == 0:
            continue
        norm = normalize(np.array([s for _, s in ranked], dtype=np.float64), normalization)
        floor = float(norm.min())
        present = {doc_id: float(v) for (doc_id, _), v in zip(ranked, norm)}
        for doc_id in totals:
            totals[doc_id] += w * present.get(doc_id, floor)
    return _order(totals, first_seen)
