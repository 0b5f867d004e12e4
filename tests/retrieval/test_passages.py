"""Passage-level answers from a chunked index: the best passage with its offsets, the other matched passages when
asked, and the reranker scoring each candidate's retrieved passages up to rerank.max_passages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index.builder import build_index
from retrieval.config import load_config
from retrieval.pipeline import SearchPipeline
from tests.conftest import pipeline_config

FILLER = " ".join(f"filler{i}" for i in range(80))
LONG = f"{FILLER} zebra giraffe savanna {FILLER} zebra herds again {FILLER}"


@pytest.fixture(scope="module")
def chunked(tmp_path_factory, tiny_bi_encoder):
    root = tmp_path_factory.mktemp("chunked")
    corpus = root / "c.jsonl"
    corpus.write_text(json.dumps({"_id": "long", "title": "Animals", "text": LONG}) + "\n"
                      + json.dumps({"_id": "other", "title": "", "text": "zebra crossing in the city"}) + "\n")
    raw = pipeline_config(root / "i", tiny_bi_encoder, dense={"enabled": False})
    raw["index"]["chunking"] = {"max_words": 30, "overlap": 5}
    build_index(corpus, root / "i", load_config(raw).build_config(), show_progress=False)
    return raw


def test_the_best_passage_comes_with_its_offsets(chunked):
    pipe = SearchPipeline.from_config(chunked)
    top = pipe.query("giraffe savanna", top_k=2)[0]
    assert top.doc_id == "long" and top.passage is not None and top.passages == []
    p = top.passage
    assert p.id.startswith("long#") and top.text[p.start:p.end] == p.text and "giraffe savanna" in p.text
    assert top.to_dict()["passage"] == {"id": p.id, "start": p.start, "end": p.end, "text": p.text}


def test_every_matched_passage_when_asked_best_first(chunked):
    pipe = SearchPipeline.from_config(chunked)
    top = pipe.query("zebra giraffe herds", top_k=1, passages=True)[0]
    assert top.passages[0] == top.passage and len(top.passages) >= 2
    assert len({p.id for p in top.passages}) == len(top.passages)
    assert all(top.text[p.start:p.end] == p.text for p in top.passages)
    assert any("herds" in p.text for p in top.passages) and any("giraffe" in p.text for p in top.passages)


def test_an_unchunked_index_has_no_passage(sample_index, tiny_bi_encoder):
    results = SearchPipeline.from_config(pipeline_config(sample_index, tiny_bi_encoder)).query("tea", top_k=2)
    assert results and all(r.passage is None and r.passages == [] for r in results)


class _Recorder:
    """A reranker that scores a passage by how often 'zebra' occurs in it, and records what it was given."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def score_passages(self, query: str, passages: list[list[str]]) -> list[np.ndarray]:
        self.seen = [list(p) for p in passages]
        return [np.array([t.count("zebra") + t.count("herds") for t in doc], dtype=np.float32) for doc in passages]


@pytest.mark.parametrize("max_passages", [1, 2, 4])
def test_the_reranker_scores_up_to_max_passages_and_its_best_passage_is_returned(chunked, tiny_cross_encoder,
                                                                                 max_passages):
    raw = {**chunked, "rerank": {"model": str(tiny_cross_encoder), "top_n": 2, "max_passages": max_passages}}
    recorder = _Recorder()
    pipe = SearchPipeline(load_config(raw), reranker=recorder)
    results = pipe.query("zebra giraffe herds", top_k=2)
    long = next(r for r in results if r.doc_id == "long")
    given = next(doc for doc in recorder.seen if any("filler" in t for t in doc))  # long's passages
    assert all(len(doc) <= max_passages for doc in recorder.seen)
    assert len(given) == min(max_passages, 2)  # "long" has two passages that match the query
    assert long.stages["rerank"].score == max(t.count("zebra") + t.count("herds") for t in given)
    if max_passages > 1:  # the passage the reranker liked best is the one returned
        assert "herds" in long.passage.text


def test_a_config_without_chunking_is_refused_on_a_chunked_index(chunked):
    from index.manifest import IndexDirError

    plain = {**chunked, "index": {**chunked["index"], "chunking": None}}
    with pytest.raises(IndexDirError, match=r'was built with index.chunking: \{"max_words": 30, "overlap": 5\} but the '
                                            r"config has index.chunking: null"):
        SearchPipeline.from_index(chunked["index"]["path"], plain)
