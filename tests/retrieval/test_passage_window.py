"""`rerank.passage_window`: the reranker reads a long document's best-matching window (by the first stage's
analyzer), not its head; short documents and documents with nothing of the query are read whole."""

from __future__ import annotations

import json

import numpy as np

from index.builder import build_index
from retrieval import SearchPipeline
from retrieval.config import load_config
from retrieval.passage_window import best_window
from tests.reliability import bm25_only, bm25_pipeline_config


def test_best_window_picks_most_distinct_terms_then_occurrences_then_earliest():
    text = "tide " * 3 + "x " * 10 + "tide moon " + "y " * 10 + "tide moon"
    assert best_window(text, {"tide", "moon"}, str.split, words=4) == "x x tide moon"
    assert best_window("a b", {"a"}, str.split, words=4) == "a b"  # short: whole
    assert best_window("a " * 20, {"zzz"}, str.split, words=4) == ("a " * 20)  # nothing matches: whole
    ends = best_window("w " * 30 + "moon", {"moon"}, str.split, words=7)
    assert ends.endswith("moon") and len(ends.split()) == 7  # the last words get a window too


class Recorder:
    def __init__(self):
        self.pairs = []

    def predict(self, pairs, **kwargs):
        self.pairs.extend(pairs)
        return np.arange(len(pairs), dtype=np.float64)

    def score_passages(self, query, passages):  # marks it as a passage-level reranker
        raise AssertionError("predict is used for shared batches")


def test_the_reranker_reads_the_window(tmp_path):
    long_text = " ".join(["Filler words about nothing in particular."] * 60) + " Glaciers carve deep valleys slowly."
    docs = [{"_id": "long", "title": "Long", "text": long_text},
            {"_id": "short", "title": "Short", "text": "Glaciers move."}]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    build_index(corpus, tmp_path / "idx", bm25_only(), show_progress=False)
    config = bm25_pipeline_config(tmp_path / "idx")
    config["rerank"] = {"model": "unused", "top_n": 2, "passage_window": 20}
    recorder = Recorder()
    pipe = SearchPipeline(load_config(config), reranker=recorder)
    pipe.query("how do glaciers carve valleys")
    texts = dict((p.split(" ", 1)[0], p) for _, p in recorder.pairs)
    assert texts["Long"].startswith("Long ") and texts["Long"].endswith("Glaciers carve deep valleys slowly.")
    assert len(texts["Long"].split()) == 21  # the title and a 20-word window
    assert texts["Short"] == "Short Glaciers move."
    assert pipe.rerank_text("how do glaciers carve valleys", "Long", long_text) == texts["Long"]
    del config["rerank"]["passage_window"]
    plain = SearchPipeline(load_config(config), reranker=Recorder())
    assert plain.rerank_text("glaciers", "Long", long_text) == "Long " + long_text
