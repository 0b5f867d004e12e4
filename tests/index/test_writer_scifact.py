"""The living index on real text: SciFact built without its last 500 abstracts, those added in two commits, 100
documents deleted and 100 upserted with edited text, then compared with a fresh build of the resulting corpus on
all 300 test queries (BM25 every variant to 1e-9; BM25, flat dense and fused rankings identical), before and after
a merge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index.analyzer import Analyzer
from index.bm25 import BM25Scorer
from index.builder import build_index
from index.config import BM25Config
from index.directory import IndexDirectory
from index.documents import read_corpus
from index.writer import IndexWriter
from retrieval.config import load_config
from retrieval.evaluation import load_beir
from retrieval.pipeline import SearchPipeline
from tests.conftest import SCIFACT

pytestmark = pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(),
                                reason="needs ../shared/datasets/scifact (CI has it; see README)")


def _config(path: Path, model: Path) -> dict:
    return {"index": {"path": str(path)},
            "first_stage": {"bm25": {"top_k": 100}, "dense": {"model": str(model), "top_k": 100}}}


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, tiny_bi_encoder):
    tmp = tmp_path_factory.mktemp("scifact-living")
    docs = list(read_corpus(SCIFACT))
    base, rest = docs[:-500], docs[-500:]
    (tmp / "base.jsonl").write_text("".join(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n"
                                            for d in base), encoding="utf-8")
    build = load_config(_config(tmp / "living", tiny_bi_encoder)).build_config()
    build_index(tmp / "base.jsonl", tmp / "living", build, show_progress=False)
    with IndexWriter(tmp / "living", build) as writer:
        writer.add(rest[:250])
        writer.commit()
        writer.add(rest[250:])
        writer.delete([d.doc_id for d in docs[:: 50][:100]])
        edited = [{"_id": d.doc_id, "title": d.title, "text": d.text + " Edited: tides and glaciers."}
                  for d in docs[7:: 40][:100]]
        writer.upsert(edited)
        report = writer.commit()
    assert report.replaced + report.added > 0 and report.deleted > 0
    living = IndexDirectory.load(tmp / "living")
    held = list(living.store.iter_documents())
    (tmp / "live.jsonl").write_text("".join(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n"
                                            for d in held), encoding="utf-8")
    build_index(tmp / "live.jsonl", tmp / "fresh", build, show_progress=False)
    return {"tmp": tmp, "model": tiny_bi_encoder, "live": held}


def _compare(updated: Path, fresh: Path, model: Path) -> None:
    a, b = IndexDirectory.load(updated), IndexDirectory.load(fresh)
    assert a.store.row_doc_ids == b.store.row_doc_ids
    queries = list(load_beir(SCIFACT, "test").queries.values())
    assert len(queries) == 300
    analyzer = Analyzer(a.build_config.bm25.analyzer)
    for variant in ("okapi", "bm25l", "bm25plus", "lucene"):
        sa, sb = BM25Scorer(a.bm25, BM25Config(variant=variant)), BM25Scorer(b.bm25, BM25Config(variant=variant))
        for q in queries[:: 10]:
            tokens = analyzer.tokenize(q)
            np.testing.assert_allclose(sa.get_scores(tokens), sb.get_scores(tokens), rtol=0, atol=1e-9)
    pa = SearchPipeline(load_config(_config(updated, model)), index=a)
    pb = SearchPipeline(load_config(_config(fresh, model)), index=b, models={"dense": pa.dense.encoder})
    for stage in ("bm25", "dense", "hybrid"):
        got, want = pa.retrieve(queries, stage=stage, top_k=10), pb.retrieve(queries, stage=stage, top_k=10)
        assert [[d for d, _ in r] for r in got] == [[d for d, _ in r] for r in want], stage
        for r, w in zip(got, want):
            np.testing.assert_allclose([s for _, s in r], [s for _, s in w], rtol=0, atol=1e-6)


def test_updated_scifact_equals_a_fresh_build(indexes):
    living = IndexDirectory.load(indexes["tmp"] / "living")
    assert len(living.segments) == 3 and living.generation == 2
    _compare(indexes["tmp"] / "living", indexes["tmp"] / "fresh", indexes["model"])


def test_merged_scifact_equals_a_fresh_build(indexes):
    with IndexWriter(indexes["tmp"] / "living") as writer:
        report = writer.merge()
    assert report.segments == 1 and report.documents == len(indexes["live"])
    _compare(indexes["tmp"] / "living", indexes["tmp"] / "fresh", indexes["model"])
