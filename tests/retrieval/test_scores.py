"""The rerank formula the pipeline and reranker evaluation share: interpolation, order, and the unscored tail."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.scores import Combination, agreement, combine, interpolate, normalize, rerank_list, reranker_share

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


def test_rrf_adds_weighted_reciprocal_ranks_of_both_orders():
    scores = np.array([0.1, 0.9, 0.5])  # reranker order: b, c, a
    got = combine(scores, np.array([9.0, 7.0, 5.0]), Combination(0.3, "rrf", rrf_k=10))
    np.testing.assert_allclose(got, [0.3 / 11 + 0.7 / 13, 0.3 / 12 + 0.7 / 11, 0.3 / 13 + 0.7 / 12])
    assert [d for d, _ in rerank_list(FIRST, scores, Combination(1.0, "rrf"))[:3]] == ["a", "b", "c"]
    assert [d for d, _ in rerank_list(FIRST, scores, Combination(0.0, "rrf"))[:3]] == ["b", "c", "a"]


def test_zscore_interpolation_normalizes_both_lists_by_mean_and_spread():
    scores, first = np.array([0.1, 0.9, 0.5, 0.3]), np.array([9.0, 7.0, 5.0, 1.0])
    got = combine(scores, first, Combination(0.4, "interpolate", "zscore"))
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    np.testing.assert_allclose(got, 0.6 * z(scores) + 0.4 * z(first))


def test_adaptive_gives_the_reranker_its_share_only_as_far_as_it_agrees_with_the_first_stage():
    first = np.array([9.0, 7.0, 5.0, 3.0, 1.0])
    agreeing = np.array([5.0, 4.0, 3.0, 1.0, 2.0])  # spearman 0.9
    reversed_ = -first  # spearman -1: the first stage decides alone
    full = Combination(0.3, "adaptive", full_agreement=0.5)
    assert reranker_share(agreeing, first, full) == pytest.approx(0.7)
    assert reranker_share(reversed_, first, full) == 0.0
    np.testing.assert_allclose(combine(reversed_, first, full), normalize(first, "minmax"))
    half = np.array([1.0, 5.0, 4.0, 3.0, 2.0])  # spearman 0.0
    assert agreement(half, first) == pytest.approx(0.0)
    partly = np.array([4.0, 5.0, 3.0, 1.0, 2.0])  # spearman 0.8
    assert reranker_share(partly, first, Combination(0.3, "adaptive", full_agreement=1.0)) == pytest.approx(0.56)
    assert agreement(np.array([1.0, 1.0]), np.array([2.0, 1.0])) == 0.0  # too short to tell


def test_combination_of_a_rerank_config_reads_its_settings():
    from rerank.config import RerankConfig

    cfg = RerankConfig(model="m", interpolation=0.4, combination="adaptive", normalization="zscore",
                       full_agreement=0.7, rrf_k=20)
    assert Combination.of(cfg) == Combination(0.4, "adaptive", "zscore", 20, 0.7)
    assert Combination.of(None) == Combination()
    with pytest.raises(ValueError, match="unknown combination"):
        combine(np.ones(3), np.ones(3), Combination(0.5, "max"))
