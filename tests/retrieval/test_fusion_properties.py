"""Property-based tests (hypothesis) for fusion: RRF and the normalized weighted sum."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.fusion import normalize, rrf, weighted

FAST = settings(max_examples=80, deadline=None)

IDS = st.lists(st.text("abcdefghij", min_size=1, max_size=3), unique=True, max_size=25)
SCORE = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def ranked(draw, ids=IDS):
    """A ranked list: unique ids with non-increasing scores."""
    doc_ids = draw(ids)
    scores = sorted(draw(st.lists(SCORE, min_size=len(doc_ids), max_size=len(doc_ids))), reverse=True)
    return list(zip(doc_ids, scores))


@FAST
@given(ranked(), st.integers(1, 5), st.integers(1, 200))
def test_rrf_of_identical_lists_preserves_their_order(lst, copies, k):
    fused = rrf({f"r{i}": lst for i in range(copies)}, k=k)
    assert [d for d, _ in fused] == [d for d, _ in lst]
    expected = [copies / (k + rank) for rank in range(1, len(lst) + 1)]
    assert all(math.isclose(s, e, rel_tol=1e-12) for (_, s), e in zip(fused, expected))
    assert all(a > b for (_, a), (_, b) in zip(fused, fused[1:]))


@FAST
@given(ranked(), st.sampled_from(["minmax", "zscore"]), st.floats(0.01, 10), st.floats(0.01, 10))
def test_weighted_fusion_of_identical_lists_preserves_their_order(lst, normalization, w1, w2):
    fused = weighted({"bm25": lst, "dense": lst}, {"bm25": w1, "dense": w2}, normalization)
    assert [d for d, _ in fused] == [d for d, _ in lst]


@FAST
@given(ranked(), ranked(), st.integers(1, 100))
def test_rrf_returns_the_union_once_each_with_the_sum_of_reciprocal_ranks(a, b, k):
    fused = rrf({"bm25": a, "dense": b}, k=k)
    ids = [d for d, _ in fused]
    assert len(ids) == len(set(ids)) and set(ids) == {d for d, _ in a} | {d for d, _ in b}
    rank_a = {d: r for r, (d, _) in enumerate(a, start=1)}
    rank_b = {d: r for r, (d, _) in enumerate(b, start=1)}
    for doc_id, score in fused:
        expected = sum(1 / (k + r[doc_id]) for r in (rank_a, rank_b) if doc_id in r)
        assert math.isclose(score, expected, rel_tol=1e-12)
    assert all(x >= y for (_, x), (_, y) in zip(fused, fused[1:]))


@FAST
@given(st.permutations(list("abcdefgh")), st.permutations(list("abcdefgh")), st.integers(1, 100))
def test_rrf_keeps_a_document_that_wins_in_every_list_ahead(order_a, order_b, k):
    """If d ranks above e in every list, d ranks above e after fusion."""
    a = [(d, 10.0 - i) for i, d in enumerate(order_a)]
    b = [(d, 1.0 - i / 10) for i, d in enumerate(order_b)]
    fused = [d for d, _ in rrf({"bm25": a, "dense": b}, k=k)]
    for d in order_a:
        for e in order_a:
            if order_a.index(d) < order_a.index(e) and order_b.index(d) < order_b.index(e):
                assert fused.index(d) < fused.index(e)


@FAST
@given(st.lists(SCORE, max_size=30), st.sampled_from(["minmax", "zscore"]))
def test_normalization_is_monotone_and_bounded(values, method):
    arr = np.array(values, dtype=np.float64)
    out = normalize(arr, method)
    assert out.shape == arr.shape and np.all(np.isfinite(out))
    order = np.argsort(arr, kind="stable")
    assert np.all(np.diff(out[order]) >= -1e-12)
    if method == "minmax" and len(arr):
        assert out.min() >= 0 and out.max() <= 1 + 1e-12
