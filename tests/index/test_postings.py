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


@pytest.mark.parametrize("cost", [0, 16, 10**9], ids=["mask-after-scoring", "default", "look-up-allowed-rows"])
def test_search_with_allowed_rows_equals_the_restricted_full_ranking(monkeypatch, cost):
    """Both ways of restricting a query to allowed rows (score all postings then mask; look the allowed rows up in
    each term's postings) give the unfiltered scores of the allowed documents, bit for bit."""

    monkeypatch.setattr(postings_module, "SEARCH_COST", cost)
    rng = np.random.default_rng(3)
    n_docs, n_terms = 500, 40
    rows, cols = rng.integers(0, n_terms, 4000), rng.integers(0, n_docs, 4000)
    mat = sp.csr_matrix((rng.random(4000) + 0.1, (rows, cols)), shape=(n_terms, n_docs))
    mat.sum_duplicates()
    mat.sort_indices()
    p = Postings(mat.indptr.astype(np.int64), mat.indices.astype(np.int32), mat.data, n_docs)
    for _ in range(30):
        ids = list(rng.choice(n_terms, rng.integers(1, 5), replace=False))
        mult = None if rng.random() < 0.5 else list(rng.random(len(ids)) + 0.5)
        allowed = rng.random(n_docs) < rng.choice([0.005, 0.1, 0.6])
        full_rows, full_scores = p.search(ids, mult, n_docs)
        keep = allowed[full_rows]
        got_rows, got_scores = p.search(ids, mult, 10, allowed=allowed)
        np.testing.assert_array_equal(got_rows, full_rows[keep][:10])
        np.testing.assert_array_equal(got_scores, full_scores[keep][:10])
