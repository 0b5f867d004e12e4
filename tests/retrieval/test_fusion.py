from __future__ import annotations

import numpy as np
import pytest

from retrieval.fusion import normalize, rrf, weighted


def test_rrf_scores_and_missing_candidates():
    fused = dict(rrf({"bm25": [("a", 9.0), ("b", 5.0)], "dense": [("b", 0.9), ("c", 0.5)]}, k=60))
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["c"] == pytest.approx(1 / 62)
    assert list(dict(rrf({"x": [("a", 1.0), ("b", 0.5)], "y": [("b", 3.0)]}, k=60))) == ["b", "a"]


def test_rrf_k_changes_scores():
    lists = {"x": [("a", 1.0)]}
    assert rrf(lists, k=1)[0][1] == pytest.approx(0.5)


def test_weighted_minmax_with_missing_candidates():
    fused = dict(weighted({"bm25": [("a", 10.0), ("b", 5.0), ("c", 0.0)], "dense": [("c", 0.9), ("a", 0.1)]},
                          {"bm25": 0.5, "dense": 0.5}, "minmax"))
    # a: bm25 1.0, dense 0.0; b: bm25 0.5, dense missing -> 0.0 (the list's minimum); c: 0.0 + 1.0
    assert fused == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5})


def test_weighted_zscore_and_weights():
    out = weighted({"bm25": [("a", 3.0), ("b", 1.0)], "dense": [("b", 1.0), ("a", 0.0)]},
                   {"bm25": 1.0, "dense": 0.0}, "zscore")
    assert [d for d, _ in out] == ["a", "b"]


def test_normalize_constant_and_empty():
    assert normalize(np.array([2.0, 2.0]), "minmax").tolist() == [1.0, 1.0]
    assert normalize(np.array([2.0, 2.0]), "zscore").tolist() == [0.0, 0.0]
    assert len(normalize(np.array([]), "minmax")) == 0
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize(np.array([1.0]), "rank")


def test_rrf_weights_from_config_are_applied(sample_index, tiny_bi_encoder):
    from retrieval import SearchPipeline
    from tests.conftest import pipeline_config

    raw = pipeline_config(sample_index, tiny_bi_encoder)
    raw["first_stage"]["fusion"] = {"method": "rrf", "weights": {"bm25": 1.0, "dense": 0.0}}
    pipe = SearchPipeline.from_config(raw)
    q = ["coffee grind size and water temperature"]
    bm25 = [d for d, _ in pipe.retrieve(q, stage="bm25")[0]]
    assert [d for d, _ in pipe.retrieve(q, stage="hybrid")[0]][: len(bm25)] == bm25
