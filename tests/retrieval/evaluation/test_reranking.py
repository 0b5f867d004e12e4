from __future__ import annotations

import numpy as np
import pytest

from retrieval.evaluation import ndcg10, rerank_runs


def test_rerank_runs_interpolation_extremes():
    cands = {"q": [("a", 3.0), ("b", 2.0), ("c", 1.0), ("d", 0.5)]}
    runs = rerank_runs(lambda pairs: np.array([0.0, 1.0, 2.0]), {"q": "x"}, cands, str, top_n=3, weights=[0.0, 1.0])
    assert sorted(runs[0.0]["q"], key=runs[0.0]["q"].get, reverse=True) == ["c", "b", "a", "d"]
    assert sorted(runs[1.0]["q"], key=runs[1.0]["q"].get, reverse=True) == ["a", "b", "c", "d"]
    assert ndcg10({"q": {"a": 2.0, "b": 1.0}}, {"q": {"a": 1}}) == pytest.approx(1.0)
