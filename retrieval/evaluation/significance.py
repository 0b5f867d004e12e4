"""Paired significance tests between two stages' per-query scores (scipy).

Example:
    >>> from retrieval.evaluation import paired_test
    >>> paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass
class Significance:
    """A paired test of `b` against `a` on one metric over the same queries."""

    a: str
    b: str
    metric: str
    method: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    p_value: float
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def __str__(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (f"{self.b} vs {self.a} on {self.metric}: {self.mean_b:.4f} vs {self.mean_a:.4f} "
                f"({self.diff:+.4f}), p={self.p_value:.3g} ({self.method}, n={self.n}): {verdict} at {self.alpha}")


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                method: Literal["t-test", "randomization"] = "t-test", *, n_resamples: int = 10_000,
                seed: int = 0) -> float:
    """Two-sided p-value for "b and a have the same mean" over paired per-query scores (scipy)."""
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired scores must be two 1-d arrays of equal length, got {x.shape} and {y.shape}")
    if len(x) < 2 or np.allclose(x, y, rtol=0, atol=1e-12):
        return 1.0
    if method == "t-test":
        p = stats.ttest_rel(y, x).pvalue
    elif method == "randomization":
        p = stats.permutation_test((y, x), lambda u, v, axis: np.mean(u - v, axis=axis), vectorized=True,
                                   permutation_type="samples", n_resamples=n_resamples,
                                   random_state=np.random.default_rng(seed)).pvalue
    else:
        raise ValueError(f"unknown test {method!r}; use 't-test' or 'randomization'")
    return 1.0 if math.isnan(p) else float(p)
