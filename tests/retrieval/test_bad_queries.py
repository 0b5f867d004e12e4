"""Bad queries never crash a caller: each has one defined outcome, alone and inside query_batch."""

from __future__ import annotations

import logging

import pytest

from retrieval import SearchPipeline
from tests.conftest import pipeline_config

GOOD = ["why does the ocean have tides", "bacteria resistant to drugs", "how long should adults sleep"]


@pytest.fixture(scope="module")
def pipe(sample_index, tiny_bi_encoder) -> SearchPipeline:
    return SearchPipeline.from_config(pipeline_config(sample_index, tiny_bi_encoder))


@pytest.fixture(scope="module")
def rerank_pipe(sample_index, tiny_bi_encoder, tiny_cross_encoder) -> SearchPipeline:
    config = pipeline_config(sample_index, tiny_bi_encoder)
    config["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 10}
    return SearchPipeline.from_config(config)


def _ids(hits) -> list[tuple[str, float]]:
    return [(r.doc_id, r.score) for r in hits]


@pytest.mark.parametrize("query", ["", " ", "\t\n  \r", "\x00\x01\x1f", "\ud800", "\x7f \udfff \x0b"],
                         ids=["empty", "space", "whitespace", "controls-only", "lone-surrogate", "mixed-nothing"])
def test_nothing_to_search_for_returns_empty(pipe, rerank_pipe, query):
    assert pipe.query(query) == []
    assert rerank_pipe.query(query) == []
    assert pipe.retrieve([query], stage="dense") == [[]]


def test_only_stopwords_bm25_finds_nothing_dense_still_answers(pipe, sample_index):
    query = "The of AND to is a it was"
    assert pipe.retrieve([query], stage="bm25") == [[]]
    dense = pipe.retrieve([query], stage="dense", top_k=5)[0]
    hits = pipe.query(query, top_k=5)
    assert len(hits) == 5 and all("bm25" not in r.stages and "dense" in r.stages for r in hits)
    assert [r.doc_id for r in hits] == [d for d, _ in dense]  # RRF of one list keeps its order
    bm25_only = SearchPipeline.from_config({"index": {"path": str(sample_index)},
                                            "first_stage": {"dense": {"enabled": False}}})
    assert bm25_only.query(query) == []


def test_only_stopwords_with_a_reranker(rerank_pipe):
    hits = rerank_pipe.query("the of and", top_k=5)
    assert len(hits) == 5 and all("rerank" in r.stages and "bm25" not in r.stages for r in hits)


def test_100k_character_query_is_truncated_and_logged(pipe, caplog):
    query = ("ocean tides moon " * 6000)[:100_000]
    with caplog.at_level(logging.WARNING, logger="retrieval.pipeline"):
        hits = pipe.query(query)
    assert "query has 100000 characters; truncated to output.max_query_chars=10000" in caplog.text
    assert _ids(hits) == _ids(pipe.query(query[:10_000]))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval.pipeline"):
        pipe.query_batch(["tides", query])
    assert "query #1 has 100000 characters" in caplog.text


def test_100k_character_query_with_a_reranker(rerank_pipe):
    hits = rerank_pipe.query("tides " * 20_000, top_k=3)
    assert len(hits) == 3 and all("rerank" in r.stages for r in hits)


@pytest.mark.parametrize("value", [None, 5, 3.5, b"ocean tides", ["ocean"], {"q": "ocean"}],
                         ids=["None", "int", "float", "bytes", "list", "dict"])
def test_non_string_query_raises_type_error(pipe, value):
    with pytest.raises(TypeError, match=rf"^query must be a str, not {type(value).__name__}$"):
        pipe.query(value)
    with pytest.raises(TypeError, match=rf"^query #1 must be a str, not {type(value).__name__}$"):
        pipe.query_batch(["ocean tides", value])


@pytest.mark.parametrize("value", ["ocean tides", b"ocean", None, 42])
def test_query_batch_wants_a_list(pipe, value):
    with pytest.raises(TypeError, match=r"^query_batch takes a list of strings"):
        pipe.query_batch(value)


def test_a_bad_query_in_a_batch_stops_it_before_any_work(pipe, monkeypatch):
    calls = []
    monkeypatch.setattr(pipe, "_run", lambda *a: calls.append(a))
    with pytest.raises(TypeError, match=r"query #2 must be a str, not int"):
        pipe.query_batch(["tides", "sleep", 7, "drugs"])
    assert calls == []


def test_empty_queries_in_a_batch_get_empty_lists_and_do_not_disturb_the_others(pipe, rerank_pipe):
    for p in (pipe, rerank_pipe):
        mixed = p.query_batch([GOOD[0], "", GOOD[1], "   \n", "\x00", GOOD[2]], top_k=5)
        alone = p.query_batch(GOOD, top_k=5)
        assert [len(h) for h in mixed] == [5, 0, 5, 0, 0, 5]
        assert [_ids(h) for h in mixed if h] == [_ids(h) for h in alone]
    assert pipe.query_batch([]) == []


@pytest.mark.parametrize("top_k", [1000, 24, 25])
def test_top_k_larger_than_the_corpus(pipe, sample_index, top_k):
    hits = pipe.query("ocean tides and the moon", top_k=top_k)
    assert 0 < len(hits) <= 24
    assert [r.rank for r in hits] == list(range(1, len(hits) + 1))
    assert len({r.doc_id for r in hits}) == len(hits)
    bm25_only = SearchPipeline.from_config({"index": {"path": str(sample_index)},
                                            "first_stage": {"dense": {"enabled": False}, "bm25": {"top_k": 500}}})
    assert len(bm25_only.query("the ocean", top_k=top_k)) == len(bm25_only.retrieve(["the ocean"])[0])


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "3"])
def test_bad_top_k(pipe, top_k):
    with pytest.raises(ValueError, match=r"top_k must be a positive integer, got"):
        pipe.query("ocean", top_k=top_k)


def test_control_characters_and_surrogates_become_spaces(pipe):
    assert _ids(pipe.query("ocean\x00tides\x07")) == _ids(pipe.query("ocean tides"))
    assert _ids(pipe.query("ocean \ud800 tides")) == _ids(pipe.query("ocean   tides"))
    assert _ids(pipe.query("\x1bocean\x1f")) == _ids(pipe.query("ocean"))


@pytest.mark.parametrize("query", ["東京タワー", "مُحَمَّد", "नमस्ते", "🎉😀👍🏽", "\u202eevil\u202c", "\u200b", "\ufeff",
                                   "\u0301" * 40, "x" * 10_000, "a" * 64 + "b", "ocean\u2028tides"],
                         ids=["cjk", "arabic", "hindi", "emoji", "bidi-override", "zero-width", "bom",
                              "combining-only", "10k-word", "65-char-word", "line-separator"])
def test_odd_text_is_answered(pipe, rerank_pipe, query):
    """Text without spaces to strip is a query: dense answers even when BM25 has no term for it."""
    hits = pipe.query(query, top_k=5)
    assert len(hits) == 5 and all("dense" in r.stages for r in hits)
    assert len(rerank_pipe.query(query, top_k=5)) == 5


# -- retrieve(): the same validation as query_batch --------------------------------------------------------------


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "3", [3]])
def test_retrieve_refuses_a_bad_top_k_as_query_batch_does(pipe, top_k):
    for call in (lambda: pipe.query_batch(["ocean"], top_k=top_k), lambda: pipe.retrieve(["ocean"], top_k=top_k)):
        with pytest.raises(ValueError, match=r"^top_k must be a positive integer, got "):
            call()


@pytest.mark.parametrize(("value", "reason"), [("ocean tides", "; wrap a single query in a list"),
                                               (b"ocean", "; wrap a single query in a list"),
                                               (None, ", not NoneType"), (42, ", not int")])
def test_retrieve_wants_a_list_of_queries(pipe, value, reason):
    """A plain string is not run as one query per character."""
    with pytest.raises(TypeError, match=rf"^retrieve takes a list of strings{reason}$"):
        pipe.retrieve(value)


def test_retrieve_names_a_bad_query_before_any_work(pipe, monkeypatch):
    calls = []
    monkeypatch.setattr(pipe, "_run", lambda *a: calls.append(a))
    with pytest.raises(TypeError, match=r"^query #1 must be a str, not int$"):
        pipe.retrieve(["tides", 7])
    assert calls == []


@pytest.mark.parametrize("top_k", [1, 3, 24, 1000])
def test_retrieve_top_k_cuts_the_stage_ranking(pipe, top_k):
    full = pipe.retrieve(["the ocean and the moon"], stage="hybrid")[0]
    assert pipe.retrieve(["the ocean and the moon"], stage="hybrid", top_k=top_k)[0] == full[:top_k]
    assert [d for d, _ in full[:top_k]] == [r.doc_id for r in pipe.query("the ocean and the moon", top_k=top_k)]
