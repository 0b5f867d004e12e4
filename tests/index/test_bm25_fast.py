"""The fast BM25 query paths give the plain path's results.

Reference: `rank_bm25`'s scores (the fast paths add postings term by term in query order, as its loop does, so
the scores are compared with tolerance 1e-12, in practice bit-identical), and a brute-force top-k over every
document that holds a query term (score descending, lower row first on ties). Rows must match exactly.
"""

from __future__ import annotations

import itertools
import json
import logging
import tracemalloc

import numpy as np
import pytest
import rank_bm25

import index.bm25 as bm25_module
import index.postings as postings_module
from index.analyzer import Analyzer
from index.bm25 import BM25Scorer, BM25Stats
from index.config import BM25Config
from tests.conftest import SCIFACT

TOL = 1e-12


@pytest.fixture(scope="module")
def scifact_tokens() -> tuple[list[list[str]], list[list[str]]]:
    """The first 1,000 SciFact abstracts and 80 real queries, through our analyzer."""
    analyzer = Analyzer()
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as fh:
        docs = [json.loads(line) for line in itertools.islice(fh, 1000)]
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as fh:
        queries = [analyzer.tokenize(json.loads(line)["text"]) for line in itertools.islice(fh, 80)]
    return [analyzer.tokenize(f"{d['title']}\n{d['text']}") for d in docs], queries


@pytest.fixture(scope="module")
def scifact_stats(scifact_tokens) -> BM25Stats:
    return BM25Stats.build(scifact_tokens[0])


def brute_force_top_k(scorer: BM25Scorer, tokens: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every document holding a query term, sorted by (score desc, row asc)."""
    stats = scorer.stats
    ids = [stats.term_ids[t] for t in tokens if t in stats.term_ids]
    holders = np.unique(np.concatenate([stats.indices[stats.indptr[t]:stats.indptr[t + 1]] for t in ids])) \
        if ids else np.empty(0, dtype=np.int64)
    scores = scorer.get_scores(tokens)[holders]
    order = np.lexsort((holders, -scores))[:k]
    return holders[order].astype(np.int64), scores[order]


@pytest.mark.parametrize("path", ["dense", "sorted"])
@pytest.mark.parametrize("variant", ["okapi", "bm25l", "bm25plus", "lucene"])
@pytest.mark.parametrize("k", [1, 10, 100, 5000])
def test_search_equals_brute_force_on_both_accumulators(monkeypatch, scifact_tokens, scifact_stats, variant, path,
                                                        k):
    queries = scifact_tokens[1]
    # DENSE_FRACTION_INV large: every multi-term query takes the dense bincount; 0: every one sorts its postings.
    monkeypatch.setattr(postings_module, "DENSE_FRACTION_INV", 10**9 if path == "dense" else 0)
    scorer = BM25Scorer(scifact_stats, BM25Config(variant=variant))
    for q in queries:
        rows, scores = scorer.search(q, k)
        ref_rows, ref_scores = brute_force_top_k(scorer, q, k)
        assert rows.tolist() == ref_rows.tolist()
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=TOL)


def test_okapi_scores_match_rank_bm25_and_top10_is_get_top_n(scifact_tokens):
    corpus, queries = scifact_tokens
    scorer = BM25Scorer(BM25Stats.build(corpus))
    ref = rank_bm25.BM25Okapi(corpus)
    everyone = list(range(len(corpus)))
    for q in queries:
        ref_scores = ref.get_scores(q)
        np.testing.assert_allclose(scorer.get_scores(q), ref_scores, rtol=0, atol=TOL)
        rows, scores = scorer.search(q, 10)
        np.testing.assert_allclose(scores, ref_scores[rows], rtol=0, atol=TOL)
        top = ref.get_top_n(q, everyone, n=10)
        if len(set(np.round(ref_scores[top], 9))) == len(top):  # get_top_n orders exact ties by row descending
            assert rows.tolist() == top


@pytest.mark.parametrize("variant", ["okapi", "bm25plus"])
def test_search_batch_is_single_search_bit_for_bit(scifact_tokens, scifact_stats, variant):
    queries = scifact_tokens[1]
    scorer = BM25Scorer(scifact_stats, BM25Config(variant=variant))
    queries = [*queries, [], ["zzz-unknown"], queries[0] * 2]
    for (rows, scores), q in zip(scorer.search_batch(queries, 10), queries):
        single_rows, single_scores = scorer.search(q, 10)
        assert rows.tolist() == single_rows.tolist()
        assert scores.tolist() == single_scores.tolist()


def test_zero_weight_matches_are_still_candidates():
    # okapi with epsilon=0: "common" is in 3 of 4 documents, so its idf is floored to 0; documents holding it
    # score 0 but still hold a query term (rank-bm25 would also rank them above non-matching ones only by order).
    corpus = [["common", "a"], ["common", "b"], ["common", "c"], ["d"]]
    scorer = BM25Scorer(BM25Stats.build(corpus), BM25Config(epsilon=0.0))
    assert not scorer._positive
    rows, scores = scorer.search(["common", "a"], 10)
    assert rows.tolist() == [0, 1, 2]
    assert scores[0] > 0 and scores[1:].tolist() == [0.0, 0.0]
    assert [r.tolist() for r, _ in scorer.search_batch([["common", "a"]], 10)] == [[0, 1, 2]]


def test_ties_across_the_sampled_cut_break_by_row():
    # 5,000 identical documents plus a few better ones: the strided-sample lower bound must keep every tie.
    # (lucene: okapi's idf of a term in every document is negative.)
    corpus = [["x", "y"]] * 5000 + [["x", "x", "y"]] * 3
    scorer = BM25Scorer(BM25Stats.build(corpus), BM25Config(variant="lucene"))
    for query in (["x", "x", "y"], ["x"]):
        rows, scores = scorer.search(query, 10)
        assert rows.tolist() == [5000, 5001, 5002, 0, 1, 2, 3, 4, 5, 6]
        assert scores[0] == scores[2] > scores[3] == scores[9]


def test_degenerate_k_and_queries():
    scorer = BM25Scorer(BM25Stats.build([["a", "b"], ["b"], []]))
    assert len(scorer.search(["a", "b"], 0)[0]) == 0
    assert scorer.search(["a", "b"], 99)[0].tolist() == [0, 1]
    assert len(scorer.search([], 5)[0]) == 0
    assert scorer.search_batch([], 5) == []
    np.testing.assert_array_equal(scorer.get_scores(["zzz"]), np.zeros(3))


# -- query cost (issue 10, case 4) ----------------------------------------------------------------------------------


def _peak_bytes(fn) -> int:
    """Peak bytes allocated while `fn` runs (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("variant", ["okapi", "bm25plus"])
def test_a_repeated_term_costs_one_postings_read(variant):
    # Every document holds both terms: the issue's `"common " * 1428` concatenated each posting list per
    # repetition (gigabytes on a large index). Repeats must cost what the distinct terms cost.
    corpus = [["common", "other", f"w{d % 97}"] for d in range(5000)]
    scorer = BM25Scorer(BM25Stats.build(corpus), BM25Config(variant=variant))
    once, repeated = ["common", "other"], ["common", "other"] * 714
    scorer.search(once, 10)  # warm-up: first calls allocate caches of their own
    base = _peak_bytes(lambda: scorer.search(once, 10))
    assert _peak_bytes(lambda: scorer.search(repeated, 10)) <= 1.5 * base
    assert _peak_bytes(lambda: scorer.get_scores(repeated)) <= 1.5 * _peak_bytes(lambda: scorer.get_scores(once))
    # The scores are still the term-by-term sum (what rank-bm25's loop adds), repeats included.
    naive = sum(scorer.get_scores([t]) for t in repeated)
    np.testing.assert_allclose(scorer.get_scores(repeated), naive, rtol=1e-9, atol=1e-9)
    rows, scores = scorer.search(repeated, 10)
    np.testing.assert_allclose(scores, naive[rows], rtol=1e-9, atol=1e-9)


def test_distinct_terms_beyond_the_cap_are_dropped_with_one_warning(monkeypatch, caplog):
    corpus = [["a", "b"], ["c", "d"], ["e", "a"], ["f"]]
    scorer = BM25Scorer(BM25Stats.build(corpus), BM25Config(variant="lucene"))
    monkeypatch.setattr(bm25_module, "MAX_QUERY_TERMS", 3, raising=False)
    query = ["a", "zzz-unknown", "b", "a", "c", "d", "e", "f"]  # unknown terms cost nothing and do not count
    with caplog.at_level(logging.WARNING, logger="index.bm25"):
        rows, scores = scorer.search(query, 10)
        full = scorer.get_scores(query)
    kept = ["a", "b", "a", "c"]  # the first 3 distinct indexed terms, in query order, with their repeats
    np.testing.assert_array_equal(full, scorer.get_scores(kept))
    assert rows.tolist() == scorer.search(kept, 10)[0].tolist() == [0, 2, 1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("6 distinct terms" in w and "MAX_QUERY_TERMS=3" in w for w in warnings)
