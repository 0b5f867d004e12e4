"""The rerank formula the pipeline and reranker evaluation share: interpolation, order, and the unscored tail."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.scores import interpolate, normalize, rerank_list

FIRST = [("a", 9.0), ("b", 7.0), ("c", 5.0), ("d", 3.0), ("e", 1.0)]


@pytest.mark.parametrize("scores", [[0.1, 0.9, 0.5], [-12.0, -3.0, -7.5], [4.0, 4.0, 4.0]])
@pytest.mark.parametrize("interpolation", [0.0, 0.3, 1.0])
def test_the_tail_stays_below_every_rescored_candidate_in_first_stage_order(scores, interpolation):
    # Raw cross-encoder scores can be negative: a fixed tail score (-1 - i) would then rank the tail above them.
    ranked = rerank_list(FIRST, np.array(scores), interpolation)
    assert [d for d, _ in ranked[3:]] == ["d", "e"]
    assert max(s for _, s in ranked[3:]) < min(s for _, s in ranked[:3])
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert sorted(d for d, _ in ranked) == [d for d, _ in FIRST]


def test_interpolation_zero_keeps_the_reranker_scores_and_one_keeps_the_first_stage_order():
    scores = np.array([0.2, 0.9, 0.4])
    assert rerank_list(FIRST, scores, 0.0)[:3] == [("b", 0.9), ("c", 0.4), ("a", 0.2)]
    assert [d for d, _ in rerank_list(FIRST, scores, 1.0)[:3]] == ["a", "b", "c"]
    np.testing.assert_allclose(interpolate(scores, np.array([9.0, 7.0, 5.0]), 0.5),
                               0.5 * normalize(scores, "minmax") + 0.5 * np.array([1.0, 0.5, 0.0]))


def test_ties_keep_first_stage_order_and_an_empty_head_is_empty():
    assert [d for d, _ in rerank_list(FIRST, np.array([1.0, 1.0, 1.0]))] == ["a", "b", "c", "d", "e"]
    assert rerank_list([], np.array([])) == []
