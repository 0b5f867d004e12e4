"""The impact-postings arithmetic shared by BM25 and SPLADE: any weights and multipliers, against a dense product."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import index.postings as postings_module
from index.postings import Postings, top_k


def _random(seed: int, docs: int = 60, terms: int = 40, density: float = 0.15) -> tuple[Postings, np.ndarray]:
    rng = np.random.default_rng(seed)
    mat = sp.random(terms, docs, density=density, random_state=rng, format="csr", dtype=np.float32)
    mat.data = rng.uniform(0.01, 3.0, size=mat.nnz).astype(np.float32)
    mat.sort_indices()
    return Postings(mat.indptr.astype(np.int64), mat.indices.astype(np.int32), mat.data, docs), mat.toarray()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fraction_inv", [0, 10**9])  # every query sorts its postings / every query accumulates
def test_search_equals_the_dense_dot_product(monkeypatch, seed, fraction_inv):
    monkeypatch.setattr(postings_module, "DENSE_FRACTION_INV", fraction_inv)
    postings, dense = _random(seed)
    rng = np.random.default_rng(100 + seed)
    for _ in range(20):
        ids = rng.choice(dense.shape[0], size=rng.integers(1, 6), replace=False).tolist()
        mult = rng.uniform(0.1, 2.0, size=len(ids)).tolist()
        expected = np.asarray(mult) @ dense[ids].astype(np.float64)
        np.testing.assert_allclose(postings.scores(ids, mult), expected, rtol=1e-6, atol=1e-6)
        rows, scores = postings.search(ids, mult, k=7)
        holders = np.flatnonzero(dense[ids].sum(axis=0) > 0)
        order = np.lexsort((holders, -expected[holders]))[:7]
        assert rows.tolist() == holders[order].tolist()
        np.testing.assert_allclose(scores, expected[holders[order]], rtol=1e-6, atol=1e-6)


def test_no_terms_or_k_below_one_return_nothing():
    postings, _ = _random(0)
    for ids, k in (([], 5), ([1, 2], 0)):
        rows, scores = postings.search(ids, None, k)
        assert rows.size == scores.size == 0
    assert postings.scores([], None).tolist() == [0.0] * postings.num_docs


def test_top_k_breaks_ties_by_row():
    rows, scores = top_k(np.array([5, 3, 9, 1]), np.array([1.0, 2.0, 2.0, 1.0]), 3)
    assert rows.tolist() == [3, 9, 1] and scores.tolist() == [2.0, 2.0, 1.0]
