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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Combination:
    """How the second stage blends the reranker's scores of the re-scored head with the first stage's.

    Parameters:
        weight: the first stage's share (`rerank.interpolation`); 0 is the reranker alone.
        method: `interpolate` (a weighted sum of normalised scores), `rrf` (a weighted sum of reciprocal ranks,
            `1 / (rrf_k + rank)`), or `adaptive` (interpolation whose reranker share shrinks, query by query, with
            the reranker's rank agreement with the first stage: `(1 - weight) * clip(rho / full_agreement, 0, 1)`,
            rho being Spearman's correlation over the head).
        normalization: `minmax` or `zscore` (interpolate and adaptive).
    """

    weight: float = 0.0
    method: str = "interpolate"
    normalization: str = "minmax"
    rrf_k: int = 60
    full_agreement: float = 0.5

    @classmethod
    def of(cls, config: object | None) -> Combination:
        """The combination a `RerankConfig` sets (the reranker alone when there is none)."""
        if config is None:
            return cls()
        return cls(weight=config.interpolation, method=config.combination, normalization=config.normalization,
                   rrf_k=config.rrf_k, full_agreement=config.full_agreement)


def agreement(rerank_scores: np.ndarray, first_scores: np.ndarray) -> float:
    """Spearman's rank correlation of the two score lists (0 where it is undefined: fewer than 3 scores or
    one list constant)."""
    if len(rerank_scores) < 3:
        return 0.0
    from scipy.stats import spearmanr

    with np.errstate(all="ignore"):
        rho = spearmanr(rerank_scores, first_scores).statistic
    return 0.0 if not np.isfinite(rho) else float(rho)


def reranker_share(rerank_scores: np.ndarray, first_scores: np.ndarray, combination: Combination) -> float:
    """The reranker's weight in the blend for one query (`1 - weight`, or less for `adaptive`)."""
    share = 1.0 - combination.weight
    if combination.method == "adaptive":
        rho = agreement(rerank_scores, first_scores)
        share *= min(max(rho / combination.full_agreement, 0.0), 1.0)
    return share


def combine(rerank_scores: np.ndarray, first_scores: np.ndarray,
            combination: Combination | float = 0.0) -> np.ndarray:
    """The second stage's scores of the re-scored head (higher is better), from the reranker's scores and the
    first stage's scores of the same candidates, in first-stage order. A float is an `interpolate` weight; with
    weight 0 (any method but rrf's ranks) the reranker's own scores come back unchanged."""
    if not isinstance(combination, Combination):
        combination = Combination(weight=float(combination))
    scores = np.asarray(rerank_scores, dtype=np.float64)
    first = np.asarray(first_scores, dtype=np.float64)
    if combination.method == "rrf":
        k, w = combination.rrf_k, combination.weight
        first_rank = np.arange(1, len(first) + 1)  # the head comes in first-stage order
        rerank_rank = np.empty(len(scores))
        rerank_rank[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
        return w / (k + first_rank) + (1 - w) / (k + rerank_rank)
    if combination.method not in ("interpolate", "adaptive"):
        raise ValueError(f"unknown combination {combination.method!r}; use interpolate, rrf or adaptive")
    share = reranker_share(scores, first, combination)
    if share >= 1:
        return scores
    norm = combination.normalization
    return share * normalize(scores, norm) + (1 - share) * normalize(first, norm)


def interpolate(rerank_scores: np.ndarray, first_scores: np.ndarray, interpolation: float) -> np.ndarray:
    """`(1 - w) * minmax(rerank) + w * minmax(first stage)`; with `w = 0` the reranker's own scores, unchanged."""
    return combine(rerank_scores, first_scores, Combination(weight=interpolation))


def rerank_list(first: Sequence[tuple[str, float]], rerank_scores: np.ndarray,
                interpolation: Combination | float = 0.0) -> list[tuple[str, float]]:
    """The second stage's ranking of one query.

    `first` is the first stage's ranking; its first `len(rerank_scores)` candidates were re-scored. They are
    ordered by their combined score (`combine`; a float is an interpolation weight; ties keep first-stage
    order); the rest follow in first-stage order, each scored below every re-scored one (`lowest - 1 - i`), so
    any metric reads one consistent ranking.
    """
    n = len(rerank_scores)
    head, tail = first[:n], first[n:]
    if not head:
        return []
    scores = combine(rerank_scores, np.array([s for _, s in head], dtype=np.float64), interpolation)
    order = np.argsort(-scores, kind="stable")
    low = float(scores.min())
    return [(head[i][0], float(scores[i])) for i in order] + [(d, low - 1 - i) for i, (d, _) in enumerate(tail)]
