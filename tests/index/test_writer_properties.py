"""Exactness of the living index: after any sequence of adds, upserts, deletes, commits and merges, searching it
equals searching a fresh build of its live documents (in its order): BM25 scores of every variant to 1e-9, the
flat dense and fused rankings identical; and a filtered ranking is the unfiltered one restricted to the matching
documents, on the updated index as on the fresh build."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from index.analyzer import Analyzer
from index.bm25 import BM25Scorer
from index.builder import build_index
from index.config import BM25Config, BuildConfig
from index.directory import IndexDirectory
from index.writer import IndexWriter
from retrieval.config import load_config
from retrieval.pipeline import SearchPipeline
from tests.index.fakes import HashEncoder

WORDS = ["tide", "moon", "ocean", "glacier", "ice", "valley", "bacteria", "drug", "sleep", "adult", "volcano", "ash"]
QUERIES = ["moon tide", "glacier ice valley", "bacteria drug", "sleep", "volcano ash ocean", "ice"]
VARIANTS = ["okapi", "bm25l", "bm25plus", "lucene"]
ENCODER = HashEncoder()
BUILD = BuildConfig.model_validate({"dense": {"faiss": {"type": "flat"}}})

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join)
metadata = st.fixed_dictionaries({"src": st.sampled_from(["a", "b", "c"]), "year": st.integers(2000, 2005)})
doc_ids = st.sampled_from([f"d{i}" for i in range(12)])
operations = st.lists(st.one_of(
    st.tuples(st.just("upsert"), st.lists(st.tuples(doc_ids, texts, metadata), min_size=1, max_size=3)),
    st.tuples(st.just("delete"), st.lists(doc_ids, min_size=1, max_size=3)),
    st.tuples(st.just("commit")),
    st.tuples(st.just("merge")),
), min_size=1, max_size=8)
filters = st.one_of(st.fixed_dictionaries({"src": st.sampled_from(["a", "b", "c"])}),
                    st.fixed_dictionaries({"year": st.fixed_dictionaries({"gte": st.integers(2000, 2005)})}),
                    st.fixed_dictionaries({"src": st.fixed_dictionaries({"in": st.lists(st.sampled_from("abc"),
                                                                                         min_size=1)})}))


def _doc(doc_id: str, text: str, meta: dict) -> dict:
    return {"_id": doc_id, "text": text, **meta}


def _write_corpus(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _pipeline(path: Path) -> SearchPipeline:
    config = load_config({"index": {"path": str(path)}, "first_stage": {"bm25": {"top_k": 100},
                                                                        "dense": {"top_k": 100}}})
    return SearchPipeline(config, models={"dense": ENCODER})


def _assert_same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]], what: str) -> None:
    """Same scores to 1e-9 at every rank and the same documents; documents whose scores are within 1e-9 of each
    other may come in either order, since two builds may sum the same floats in a different order."""
    assert len(got) == len(want), what
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-9, err_msg=what)
    start = 0
    for end in range(1, len(want) + 1):
        if end == len(want) or abs(want[end][1] - want[start][1]) > 1e-9:
            assert {d for d, _ in got[start:end]} == {d for d, _ in want[start:end]}, what
            start = end


def _check_equal(updated: Path, fresh: Path, flt: dict) -> None:
    a, b = IndexDirectory.load(updated), IndexDirectory.load(fresh)
    assert a.store.row_doc_ids == b.store.row_doc_ids
    analyzer = Analyzer(BUILD.bm25.analyzer)
    for variant in VARIANTS:
        config = BM25Config(variant=variant)
        sa, sb = BM25Scorer(a.bm25, config), BM25Scorer(b.bm25, config)
        for q in QUERIES:
            tokens = analyzer.tokenize(q)
            np.testing.assert_allclose(sa.get_scores(tokens), sb.get_scores(tokens), rtol=0, atol=1e-9)
    pa, pb = _pipeline(updated), _pipeline(fresh)
    for stage in ("bm25", "dense", "hybrid"):
        for got, want in zip(pa.retrieve(QUERIES, stage=stage), pb.retrieve(QUERIES, stage=stage), strict=True):
            _assert_same_ranking(got, want, stage)
    allowed = {d for d, m in zip(b.store.row_doc_ids, b.filter_mask(flt)) if m}
    assert set(np.asarray(a.store.row_doc_ids)[a.filter_mask(flt)]) == allowed
    for stage in ("bm25", "dense"):
        for q in QUERIES:  # one query per call: FAISS sums the same way with and without a selector
            full = pa.retrieve([q], stage=stage)[0]
            restricted = [(d, s) for d, s in full if d in allowed]
            _assert_same_ranking(pa.retrieve([q], stage=stage, filter=flt)[0], restricted, f"{stage} {flt}")
            _assert_same_ranking(pb.retrieve([q], stage=stage, filter=flt)[0], restricted, f"{stage} {flt}")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.lists(st.tuples(texts, metadata), min_size=1, max_size=6), ops=operations, flt=filters)
# Found by CI: the two builds' BM25 scores differed in the 17th digit, which an exact comparison called a failure.
@example(initial=[("tide", {"src": "a", "year": 2000}), ("tide", {"src": "a", "year": 2000}),
                  ("ocean", {"src": "a", "year": 2000})],
         ops=[("upsert", [("d0", "tide moon", {"src": "a", "year": 2000}),
                          ("d2", "tide moon ocean glacier", {"src": "a", "year": 2000})])],
         flt={"src": "a"})
def test_any_sequence_of_updates_equals_a_fresh_build(initial, ops, flt):
    tmp = Path(tempfile.mkdtemp())
    try:
        docs = [_doc(f"d{i}", t, m) for i, (t, m) in enumerate(initial)]
        build_index(_write_corpus(tmp / "initial.jsonl", docs), tmp / "idx", BUILD, models={"dense": ENCODER},
                    show_progress=False)
        live = {d["_id"]: d for d in docs}
        with IndexWriter(tmp / "idx", models={"dense": ENCODER}) as writer:
            for op in ops:
                if op[0] == "upsert":
                    batch = list({i: _doc(i, t, m) for i, t, m in op[1]}.values())  # unique ids per batch
                    writer.upsert(batch)
                    live.update((d["_id"], d) for d in batch)
                elif op[0] == "delete":
                    writer.delete(op[1])
                    for i in op[1]:
                        live.pop(i, None)
                elif op[0] == "commit":
                    writer.commit()
                else:
                    writer.merge()
            writer.commit()
        index = IndexDirectory.load(tmp / "idx")
        held = list(index.store.iter_documents())
        assert {d.doc_id: (d.text, d.metadata) for d in held} == \
            {i: (d["text"], {"src": d["src"], "year": d["year"]}) for i, d in live.items()}
        if not held:
            return
        corpus = _write_corpus(tmp / "live.jsonl", [_doc(d.doc_id, d.text, d.metadata) for d in held])
        build_index(corpus, tmp / "fresh", BUILD, models={"dense": ENCODER}, show_progress=False)
        _check_equal(tmp / "idx", tmp / "fresh", flt)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
