"""Metadata filters in the pipeline: applied before each retriever's top-k (k results whenever k matching
documents score, with their unfiltered scores), one syntax for every field and `doc_id`, clear errors, and the
same answers after updates, merges and reloads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index.builder import build_index
from index.config import BuildConfig
from index.filters import FilterError
from index.writer import IndexWriter
from retrieval.config import load_config
from retrieval.pipeline import SearchPipeline
from tests.index.fakes import HashEncoder

ENCODER = HashEncoder()
WORDS = ["tide", "moon", "ocean", "glacier", "ice", "valley", "bacteria", "drug", "sleep", "adult"]


def _docs(n: int = 60) -> list[dict]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        out.append({"_id": f"d{i}", "text": " ".join(rng.choice(WORDS, 6)), "source": "abc"[i % 3],
                    "year": 2000 + i % 20, "lang": ["en", "de"] if i % 4 == 0 else "en",
                    "published": f"20{10 + i % 10}-0{1 + i % 9}-15", "author": {"name": f"a{i % 5}"}})
    return out


def _write(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture
def index(tmp_path) -> Path:
    build_index(_write(tmp_path / "c.jsonl", _docs()), tmp_path / "idx", BuildConfig(), models={"dense": ENCODER},
                show_progress=False)
    return tmp_path / "idx"


def _pipe(path: Path, top_k: int = 100, **index) -> SearchPipeline:
    config = load_config({"index": {"path": str(path), **index},
                          "first_stage": {"bm25": {"top_k": top_k}, "dense": {"top_k": top_k}}})
    return SearchPipeline(config, models={"dense": ENCODER})


def _meta(i: int) -> dict:
    return {k: v for k, v in _docs()[i].items() if k not in ("_id", "text")}


MATCHES = {
    '{"source": "a"}': lambda m: m["source"] == "a",
    '{"year": {"gte": 2015}}': lambda m: m["year"] >= 2015,
    '{"year": {"gt": 2003, "lt": 2006}, "source": {"in": ["b", "c"]}}':
        lambda m: 2003 < m["year"] < 2006 and m["source"] in "bc",
    '{"lang": "de"}': lambda m: m["lang"] == ["en", "de"],
    '{"published": {"lt": "2013-01-01"}}': lambda m: m["published"] < "2013-01-01",
    '{"author.name": "a3"}': lambda m: m["author"]["name"] == "a3",
    '{"or": [{"source": "a"}, {"not": {"year": {"lte": 2018}}}]}': lambda m: m["source"] == "a" or m["year"] > 2018,
    '{"doc_id": {"in": ["d1", "d2", "d40"]}}': None,
    '{"source": {"exists": false}}': lambda m: False,
}


@pytest.mark.parametrize("spec", list(MATCHES))
def test_filtered_ranking_is_the_full_ranking_restricted(index, spec):
    flt = json.loads(spec)
    pipe = _pipe(index)
    allowed = {f"d{i}" for i in range(60) if (MATCHES[spec](_meta(i)) if MATCHES[spec] else
                                               f"d{i}" in flt["doc_id"]["in"])}
    for stage in ("bm25", "dense", "hybrid"):
        for query in ("moon tide", "glacier ice valley", "sleep"):
            full = pipe.retrieve([query], stage=stage)[0]
            got = pipe.retrieve([query], stage=stage, filter=flt)[0]
            if stage == "hybrid":  # fusion of the filtered lists: the same documents, fused anew
                assert {d for d, _ in got} == {d for d, _ in full if d in allowed}
            else:
                assert got == [(d, s) for d, s in full if d in allowed], stage


def test_k_results_whenever_k_matching_documents_score(index):
    pipe = _pipe(index, top_k=5)
    unfiltered = [d for d, _ in pipe.retrieve(["moon"], stage="dense")[0]]
    outside = [f"d{i}" for i in range(60) if f"d{i}" not in unfiltered]
    results = pipe.query("moon", top_k=5, filter={"doc_id": {"in": outside[:12]}})
    assert len(results) == 5 and {r.doc_id for r in results} <= set(outside[:12])  # not a post-filter of the top 5
    assert len(pipe.query("moon", top_k=5, filter={"doc_id": {"in": outside[:3]}})) == 3
    assert pipe.query("moon", top_k=5, filter={"source": "zzz"}) == []


def test_filter_errors_are_one_line_and_say_where(index):
    pipe = _pipe(index)
    with pytest.raises(FilterError, match="no document has the field 'yaer'; known fields: .*doc_id.*year"):
        pipe.query("moon", filter={"yaer": 2015})
    with pytest.raises(FilterError, match="gtee"):
        pipe.query("moon", filter={"year": {"gtee": 2015}})
    with pytest.raises(FilterError, match="source"):
        pipe.query("moon", filter={"source": {"gte": 3}})
    with pytest.raises(ValueError):  # FilterError is a ValueError: the CLI prints it as one line
        pipe.query("moon", filter=["not", "a", "dict"])


def test_filters_survive_updates_merges_and_reloads(index):
    with IndexWriter(index, models={"dense": ENCODER}) as writer:
        writer.add([{"_id": "new", "text": "moon tide", "source": "zeta", "year": 2030}])
        writer.upsert([{"_id": "d0", "text": "moon tide ocean", "source": "zeta", "year": 1990}])
        writer.delete(["d3"])
        writer.commit()
    pipe = _pipe(index)
    flt = {"source": "zeta"}
    assert {r.doc_id for r in pipe.query("moon", filter=flt)} == {"new", "d0"}
    assert "d3" not in {r.doc_id for r in pipe.query("moon", top_k=100, filter={"source": "a"})}
    assert {r.doc_id for r in pipe.query("moon", filter={"year": {"lt": 2000}})} == {"d0"}
    before = [[(r.doc_id, r.score) for r in pipe.query(q, filter=flt)] for q in ("moon", "tide")]
    with IndexWriter(index, models={"dense": ENCODER}) as writer:
        writer.merge()
    after = _pipe(index)
    assert [[(r.doc_id, r.score) for r in after.query(q, filter=flt)] for q in ("moon", "tide")] == before


def test_chunked_index_filters_whole_documents(tmp_path):
    docs = [{"_id": f"d{i}", "text": " ".join(WORDS * 2), "source": "ab"[i % 2]} for i in range(6)]
    build = BuildConfig.model_validate({"dense": {"enabled": False}, "chunking": {"max_words": 8, "overlap": 2}})
    build_index(_write(tmp_path / "c.jsonl", docs), tmp_path / "idx", build, show_progress=False)
    pipe = SearchPipeline.from_config({"index": {"path": str(tmp_path / "idx"), "chunking": {"max_words": 8,
                                                                                               "overlap": 2}},
                                       "first_stage": {"dense": {"enabled": False}}})
    results = pipe.query("glacier", top_k=10, filter={"source": "b"})
    assert {r.doc_id for r in results} == {"d1", "d3", "d5"} and all(r.passage is not None for r in results)
