from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import rank_bm25

import index.bm25 as bm25_module
from index.analyzer import Analyzer
from index.bm25 import BM25Scorer, BM25Stats
from index.config import AnalyzerConfig, BM25Config
from retrieval.retrievers import BM25Retriever
from tests.conftest import SCIFACT

REFERENCE = {"okapi": rank_bm25.BM25Okapi, "bm25l": rank_bm25.BM25L, "bm25plus": rank_bm25.BM25Plus}


@pytest.fixture(scope="module")
def scifact_tokens():
    """Real text: the first 1,500 SciFact abstracts and 60 real queries, through our analyzer."""
    analyzer = Analyzer()
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as fh:
        docs = [json.loads(line) for line in itertools.islice(fh, 1500)]
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as fh:
        queries = [json.loads(line)["text"] for line in itertools.islice(fh, 60)]
    corpus = [analyzer.tokenize(f"{d['title']}\n{d['text']}") for d in docs]
    return corpus, [analyzer.tokenize(q) for q in queries]


@pytest.mark.parametrize("variant", ["okapi", "bm25l", "bm25plus"])
@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (0.9, 0.4)])
def test_scores_equal_rank_bm25_on_real_text(scifact_tokens, variant, k1, b):
    corpus, queries = scifact_tokens
    config = BM25Config(variant=variant, k1=k1, b=b)
    ours = BM25Scorer(BM25Stats.build(corpus), config)
    kwargs = {"k1": k1, "b": b}
    if variant != "okapi":
        kwargs["delta"] = config.resolved_delta()
    ref = REFERENCE[variant](corpus, **kwargs)
    for q in queries:
        np.testing.assert_allclose(ours.get_scores(q), ref.get_scores(q), rtol=0, atol=1e-5)


def test_okapi_top10_matches_rank_bm25_get_top_n(scifact_tokens):
    corpus, queries = scifact_tokens
    ours = BM25Scorer(BM25Stats.build(corpus))
    ref = rank_bm25.BM25Okapi(corpus)
    all_scores = [ref.get_scores(q) for q in queries]
    for q, ref_scores in zip(queries, all_scores):
        rows, scores = ours.search(q, 10)
        top = ref.get_top_n(q, list(range(len(corpus))), 10)
        # identical up to the order of exactly tied scores
        assert sorted(np.round(ref_scores[top], 9)) == sorted(np.round(scores, 9))
        assert set(rows) == set(top) or len(set(np.round(ref_scores[top], 9))) < 10


def test_epsilon_floor_for_negative_idf():
    # "common" is in 3 of 4 documents: log(4 - 3 + .5) - log(3 + .5) < 0, so okapi floors it.
    corpus = [["common", "a"], ["common", "b"], ["common", "c"], ["d"]]
    ours = BM25Scorer(BM25Stats.build(corpus), BM25Config(epsilon=0.25))
    ref = rank_bm25.BM25Okapi(corpus, epsilon=0.25)
    np.testing.assert_allclose(ours.get_scores(["common"]), ref.get_scores(["common"]), atol=1e-12)
    assert ours.idf[ours.stats.term_ids["common"]] > 0


def test_lucene_idf_always_positive_where_rank_bm25_gives_zero():
    # Two documents, the term in one: rank-bm25's okapi idf is log(1.5) - log(1.5) = 0, so the match scores 0.
    corpus = [["apple", "pie"], ["banana", "split"]]
    assert rank_bm25.BM25Okapi(corpus).get_scores(["apple"]).max() == 0
    lucene = BM25Scorer(BM25Stats.build(corpus), BM25Config(variant="lucene"))
    rows, scores = lucene.search(["apple"], 5)
    assert rows.tolist() == [0] and scores[0] > 0


def test_repeated_query_terms_count_twice_and_unknown_terms_add_nothing(scifact_tokens):
    corpus, _ = scifact_tokens
    s = BM25Scorer(BM25Stats.build(corpus))
    once, twice = s.get_scores(["cancer"]), s.get_scores(["cancer", "cancer", "zzzunknownzzz"])
    np.testing.assert_allclose(twice, 2 * once)


def test_search_batch_equals_single_search(scifact_tokens):
    corpus, queries = scifact_tokens
    for variant in ("okapi", "bm25l", "bm25plus", "lucene"):
        s = BM25Scorer(BM25Stats.build(corpus), BM25Config(variant=variant))
        for (r1, s1), q in zip(s.search_batch(queries, 10), queries):
            r2, s2 = s.search(q, 10)
            assert r1.tolist() == r2.tolist()
            np.testing.assert_allclose(s1, s2, atol=1e-9)


def test_search_returns_only_matching_documents_and_handles_empty_query():
    s = BM25Scorer(BM25Stats.build([["a"], ["b"], ["a", "a"]]))
    rows, _ = s.search(["a"], 10)
    assert sorted(rows.tolist()) == [0, 2]
    assert len(s.search([], 10)[0]) == 0 and len(s.search(["zzz"], 10)[0]) == 0


def test_ties_broken_by_row():
    s = BM25Scorer(BM25Stats.build([["x", "y"], ["x", "y"], ["x", "y"]]))
    assert s.search(["x"], 2)[0].tolist() == [0, 1]


def test_save_load_roundtrip(tmp_path, scifact_tokens):
    corpus, queries = scifact_tokens
    stats = BM25Stats.build(corpus[:200])
    stats.save(tmp_path)
    loaded = BM25Stats.load(tmp_path)
    assert loaded.vocab == stats.vocab
    np.testing.assert_array_equal(BM25Scorer(loaded).get_scores(queries[0]), BM25Scorer(stats).get_scores(queries[0]))


def test_doc_tokens_rebuilds_bags_of_words():
    stats = BM25Stats.build([["b", "a", "b"], [], ["c"]])
    assert [sorted(t) for t in stats.doc_tokens()] == [["a", "b", "b"], [], ["c"]]


@pytest.mark.parametrize("variant", ["okapi", "bm25plus"])
def test_both_backends_score_only_the_first_distinct_terms_of_a_long_query(monkeypatch, variant):
    # The query-term cap (index.bm25.MAX_QUERY_TERMS) applies to the rank_bm25 reference backend too, so both
    # backends still answer alike; 3 here instead of 1,024 to keep the corpus small.
    monkeypatch.setattr(bm25_module, "MAX_QUERY_TERMS", 3, raising=False)
    corpus = [["a", "b"], ["c", "d"], ["e", "a"], ["f", "b"], ["g", "h"], ["i", "j"], ["k", "l"]]
    raw = AnalyzerConfig(stopwords=None, stemmer=None)
    sparse = BM25Retriever(BM25Stats.build(corpus), BM25Config(variant=variant), raw)
    reference = BM25Retriever(BM25Stats.build(corpus), BM25Config(variant=variant, backend="rank_bm25"), raw)
    long_query, kept = "a b a c d e f", "a b a c"
    rows, scores = sparse.search(long_query, 10)
    kept_rows, kept_scores = sparse.search(kept, 10)
    assert rows.tolist() == kept_rows.tolist() and sorted(rows.tolist()) == [0, 1, 2, 3]
    np.testing.assert_allclose(scores, kept_scores, rtol=0, atol=1e-12)
    ref_rows, ref_scores = reference.search(long_query, len(corpus))
    ref = dict(zip(ref_rows.tolist(), ref_scores.tolist()))
    np.testing.assert_allclose([ref[r] for r in rows.tolist()], scores, rtol=1e-9, atol=1e-9)


def test_stats_counter_equals_a_naive_count():
    """The streamed counter (term ids and counts in compact arrays, CSR at the end) against a dictionary count."""
    import random
    from collections import Counter, defaultdict

    from index.bm25 import StatsCounter

    rng = random.Random(5)
    docs = [[rng.choice("abcdefghij") * rng.randint(1, 2) for _ in range(rng.randint(0, 12))] for _ in range(300)]
    counter = StatsCounter()
    for d in docs:
        counter.add(d)
    stats = counter.stats()
    first_seen = list(dict.fromkeys(t for d in docs for t in d))
    assert stats.vocab == first_seen and stats.doc_len.tolist() == [len(d) for d in docs]
    postings = defaultdict(list)
    for i, d in enumerate(docs):
        for t, c in Counter(d).items():
            postings[t].append((i, c))
    for t, term in enumerate(stats.vocab):
        lo, hi = stats.indptr[t], stats.indptr[t + 1]
        assert list(zip(stats.indices[lo:hi].tolist(), stats.tf[lo:hi].tolist())) == postings[term]
    assert stats.indices.dtype == np.int32 and stats.tf.dtype == np.int32 and stats.indptr.dtype == np.int64
    empty = StatsCounter().stats()
    assert empty.num_docs == 0 and empty.vocab == []


@pytest.mark.parametrize("variant", ["okapi", "bm25l", "bm25plus", "lucene"])
def test_weights_computed_at_query_time_are_the_same_bits(scifact_tokens, variant, monkeypatch):
    """A large index computes its postings' weights per query (index.bm25.EAGER_POSTINGS): scores, top-k and
    filtered top-k equal those of the weights computed once, bit for bit."""
    corpus, queries = scifact_tokens
    stats = BM25Stats.build(corpus)
    config = BM25Config(variant=variant)
    eager = BM25Scorer(stats, config)
    monkeypatch.setattr(bm25_module, "EAGER_POSTINGS", 0)
    lazy = BM25Scorer(stats, config)
    assert isinstance(eager.excess, np.ndarray) and not isinstance(lazy.excess, np.ndarray)
    assert lazy.postings.positive == eager.postings.positive
    allowed = np.zeros(stats.num_docs, dtype=bool)
    allowed[::7] = True
    few = np.zeros(stats.num_docs, dtype=bool)  # selective: looked up in the postings (allowed_candidates)
    few[[5, 100, 900]] = True
    for q in queries + [queries[0] * 2]:  # and one with every term twice
        assert np.array_equal(lazy.get_scores(q), eager.get_scores(q))
        for got, want in ((lazy.search(q, 10), eager.search(q, 10)),
                          (lazy.search(q, 10, allowed), eager.search(q, 10, allowed)),
                          (lazy.search(q, 10, few), eager.search(q, 10, few))):
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_out_of_range_rows_are_refused_unless_the_checksum_vouched():
    stats = BM25Stats.build([["a", "b"], ["b"]])
    arrays = {"indptr": stats.indptr, "indices": stats.indices.copy(), "tf": stats.tf, "doc_len": stats.doc_len}
    arrays["indices"][-1] = 7  # a row past the two documents
    vocab = json.dumps(stats.vocab).encode()
    with pytest.raises(ValueError, match="BM25 arrays are inconsistent; rebuild the index"):
        BM25Stats.from_arrays(arrays, vocab, Path("bm25.npz"))
    assert BM25Stats.from_arrays(arrays, vocab, Path("bm25.npz"), bounds=False).num_docs == 2


def test_an_index_maps_its_bm25_arrays(tmp_path, monkeypatch):
    """Opening an index maps the BM25 arrays from bm25.npz (np.savez stores them uncompressed) and answers as the
    arrays read into memory do."""
    import index.arrays as arrays
    from index.builder import build_index
    from index.directory import IndexDirectory
    from tests.conftest import SAMPLE_CORPUS
    from tests.reliability import bm25_only

    build_index(SAMPLE_CORPUS, tmp_path / "idx", bm25_only(), show_progress=False)
    monkeypatch.setattr(arrays, "MAP_MIN_BYTES", 0)
    for verify in (True, False):
        mapped = IndexDirectory.load(tmp_path / "idx", verify=verify).segments[0].parts["bm25"]
        read = BM25Stats.load(tmp_path / "idx")
        for name in BM25Stats.ARRAYS:
            assert isinstance(getattr(mapped, name), np.memmap), name
            assert np.array_equal(getattr(mapped, name), getattr(read, name))
