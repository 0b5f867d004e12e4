"""Property-based tests (hypothesis) for the analyzer and BM25: invariants that must hold for any input."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import rank_bm25
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import index.analyzer as analyzer_module
import index.postings as postings_module
from index.analyzer import Analyzer
from index.bm25 import BM25Scorer, BM25Stats
from index.config import AnalyzerConfig, BM25Config

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any Unicode text (surrogates excluded: they are not valid Unicode text), biased towards the interesting
# parts: letters of several scripts, combining marks, CJK, digits, punctuation, whitespace and emoji.
_SPECIAL = st.sampled_from(list("aZé\u0301\u0627\u064e\u0928\u094d\u0924\u6771\u30bf\u03a3\u03c3ß0_ -\t\n😀İﬁ"))
TEXT = st.lists(st.one_of(st.characters(exclude_categories=("Cs",)), _SPECIAL), max_size=60).map("".join)
RAW = AnalyzerConfig(stopwords=None, stemmer=None)


@FAST
@given(TEXT, st.sampled_from([AnalyzerConfig(), RAW, AnalyzerConfig(lowercase=False, max_token_length=5)]))
def test_analyzer_never_fails_and_yields_clean_terms(text, config):
    tokens = Analyzer(config).tokenize(text)
    assert all(isinstance(t, str) and t and not any(c.isspace() for c in t) for t in tokens)
    if config.stemmer is None:
        assert all(len(t) <= config.max_token_length for t in tokens)
    if config.stopwords is not None and config.stemmer is None:
        assert not set(tokens) & Analyzer(config).stopwords


@FAST
@given(TEXT, TEXT)
def test_analyzer_is_additive_over_whitespace(a, b):
    """Terms never span whitespace, so analyzing two texts joined by a space gives both term lists in order
    (the property that lets a huge text be analyzed in slices)."""
    analyzer = Analyzer()
    assert analyzer.tokenize(f"{a} {b}") == analyzer.tokenize(a) + analyzer.tokenize(b)


@FAST
@given(st.lists(TEXT, min_size=1, max_size=8), st.integers(1, 12))
def test_sliced_analysis_equals_whole_analysis(parts, slice_chars):
    text = " ".join(parts)
    whole = Analyzer().tokenize(text)
    with mock.patch.object(analyzer_module, "_SLICE_CHARS", slice_chars):
        assert Analyzer().tokenize(text) == whole


@FAST
@given(TEXT)
@example("\u0130\u0316")  # lower() leaves the marks of "İ̖" out of canonical order
def test_raw_terms_analyze_to_themselves(text):
    """Without stemming or stopwords, a term list analyzes to itself: queries and documents agree on terms."""
    analyzer = Analyzer(RAW)
    tokens = analyzer.tokenize(text)
    assert analyzer.tokenize(" ".join(tokens)) == tokens


# -- BM25 ----------------------------------------------------------------------------------------------------------

TERMS = list("abcdefg")
DOCS = st.lists(st.lists(st.sampled_from(TERMS), min_size=1, max_size=12), min_size=1, max_size=120)
QUERY = st.lists(st.sampled_from([*TERMS, "unseen"]), min_size=1, max_size=5)
K1 = st.floats(0.0, 3.0)
B = st.floats(0.0, 1.0)


@FAST
@given(DOCS, QUERY, K1, B)
def test_lucene_scores_are_never_negative(docs, query, k1, b):
    scores = BM25Scorer(BM25Stats.build(docs), BM25Config(variant="lucene", k1=k1, b=b)).get_scores(query)
    assert scores.shape == (len(docs),)
    assert np.all(np.isfinite(scores)) and np.all(scores >= 0)


@FAST
@given(DOCS, st.sampled_from(["lucene", "bm25l", "bm25plus"]), st.floats(0.1, 3.0), B, st.integers(0, 6),
       st.integers(0, 6))
def test_score_grows_with_term_frequency(docs, variant, k1, b, tf, extra_len):
    """Two documents of the same length, one with one more occurrence of the query term: it scores higher."""
    length = tf + 1 + extra_len
    more = ["q"] * (tf + 1) + ["filler"] * (length - tf - 1)
    fewer = ["q"] * tf + ["filler"] * (length - tf)
    scores = BM25Scorer(BM25Stats.build([*docs, more, fewer]), BM25Config(variant=variant, k1=k1, b=b)).get_scores(
        ["q"])
    assert scores[-2] > scores[-1]


@FAST
@given(DOCS, st.lists(QUERY, min_size=1, max_size=4), st.sampled_from(["okapi", "bm25l", "bm25plus"]),
       st.floats(0.01, 3.0), B, st.floats(0.0, 2.0))
def test_variants_equal_rank_bm25(docs, queries, variant, k1, b, extra):
    """okapi, bm25l and bm25plus give rank-bm25's BM25Okapi, BM25L and BM25Plus scores for any corpus (k1 > 0:
    with k1 = 0 rank-bm25 divides 0 by 0 for documents without the term and returns NaN; we return 0)."""
    if variant == "okapi":
        config = BM25Config(variant=variant, k1=k1, b=b, epsilon=extra)
        reference = rank_bm25.BM25Okapi(docs, k1=k1, b=b, epsilon=extra)
    else:
        config = BM25Config(variant=variant, k1=k1, b=b, delta=extra)
        reference = (rank_bm25.BM25L if variant == "bm25l" else rank_bm25.BM25Plus)(docs, k1=k1, b=b, delta=extra)
    scorer = BM25Scorer(BM25Stats.build(docs), config)
    for query in queries:
        np.testing.assert_allclose(scorer.get_scores(query), reference.get_scores(query), rtol=1e-9, atol=1e-9)


@FAST
@given(DOCS, st.lists(QUERY, min_size=1, max_size=4), st.sampled_from(["okapi", "bm25l", "bm25plus", "lucene"]),
       st.integers(1, 30))
def test_search_returns_the_best_documents_that_hold_a_query_term(docs, queries, variant, k):
    scorer = BM25Scorer(BM25Stats.build(docs), BM25Config(variant=variant))
    batch = scorer.search_batch(queries, k)
    for query, (rows, scores) in zip(queries, batch):
        full = scorer.get_scores(query)
        holders = [d for d, doc in enumerate(docs) if set(doc) & set(query)]
        assert len(rows) == min(k, len(holders)) and len(set(rows.tolist())) == len(rows)
        assert set(rows.tolist()) <= set(holders)
        np.testing.assert_allclose(scores, full[rows], rtol=1e-9, atol=1e-12)
        assert all(x >= y for x, y in zip(scores, scores[1:]))
        left_out = sorted(set(holders) - set(rows.tolist()))
        if len(rows) and left_out:
            assert max(full[left_out]) <= scores[-1] + 1e-9
        single = scorer.search(query, k)
        assert single[0].tolist() == rows.tolist()


@FAST
@given(DOCS)
def test_statistics_survive_a_save_and_load(tmp_path_factory, docs):
    stats = BM25Stats.build(docs)
    directory = tmp_path_factory.mktemp("bm25")
    stats.save(directory)
    loaded = BM25Stats.load(directory)
    assert loaded.vocab == stats.vocab
    for name in ("indptr", "indices", "tf", "doc_len"):
        assert np.array_equal(getattr(loaded, name), getattr(stats, name))
    assert sorted(map(sorted, loaded.doc_tokens())) == sorted(map(sorted, docs))
    assert math.isclose(float(loaded.doc_len.sum()), sum(map(len, docs)))


class _CountingPostings(np.ndarray):
    """A posting array (`BM25Stats.indices`) that counts the postings sliced out of it: what a query reads."""

    def __getitem__(self, key):
        if getattr(self, "is_source", False) and isinstance(key, slice):
            start, stop, _ = key.indices(len(self))
            _CountingPostings.read += max(0, stop - start)
        return super().__getitem__(key)


def _counting_stats(docs: list[list[str]]) -> BM25Stats:
    stats = BM25Stats.build(docs)
    stats.indices = stats.indices.view(_CountingPostings)
    stats.indices.is_source = True  # views sliced from it are not counted again
    return stats


# Long queries with many repeats of few terms: the cost of a query is its distinct terms', not its length's.
REPEATING_QUERY = st.lists(st.sampled_from([*TERMS[:3], "unseen"]), min_size=1, max_size=40)


@FAST
@given(DOCS, REPEATING_QUERY, st.sampled_from(["okapi", "bm25l", "bm25plus", "lucene"]),
       st.sampled_from([0, 10**9]), st.integers(1, 30))
def test_a_query_reads_each_distinct_terms_postings_once(docs, query, variant, dense_fraction_inv, k):
    """For any token list: postings read = the document frequencies of its distinct indexed terms (on both
    accumulators), and the scores are the term-by-term sum rank-bm25's loop computes, repeats included."""
    stats = _counting_stats(docs)
    scorer = BM25Scorer(stats, BM25Config(variant=variant))
    distinct = {stats.term_ids[t] for t in query if t in stats.term_ids}
    expected = int(sum(stats.doc_freq[t] for t in distinct))
    with mock.patch.object(postings_module, "DENSE_FRACTION_INV", dense_fraction_inv):
        for run in (lambda: scorer.search(query, k), lambda: scorer.get_scores(query)):
            _CountingPostings.read = 0
            run()
            assert _CountingPostings.read == expected
    naive = sum(scorer.get_scores([t]) for t in query)
    np.testing.assert_allclose(scorer.get_scores(query), naive, rtol=1e-9, atol=1e-9)
    rows, scores = scorer.search(query, k)
    np.testing.assert_allclose(scores, naive[rows], rtol=1e-9, atol=1e-9)


@FAST
@given(DOCS, REPEATING_QUERY, st.sampled_from(["okapi", "bm25plus", "lucene"]), st.integers(1, 30))
def test_summing_a_long_query_in_parts_changes_no_bit(docs, query, variant, k):
    """The dense accumulator sums a query's postings in parts of about one corpus' worth (bounded memory);
    cut after every term or two, the scores and the ranking are exactly those of one part."""
    scorer = BM25Scorer(BM25Stats.build(docs), BM25Config(variant=variant))
    whole = scorer.get_scores(query), scorer.search(query, k)
    with mock.patch.object(postings_module, "PART_POSTINGS", 1):  # budget: max(documents, 1) postings per part
        parts = scorer.get_scores(query), scorer.search(query, k)
    assert whole[0].tolist() == parts[0].tolist()
    assert whole[1][0].tolist() == parts[1][0].tolist() and whole[1][1].tolist() == parts[1][1].tolist()
