"""A sharded index answers as the unsharded one, on real text (SciFact abstracts and queries): BM25 bit for bit in
every variant, flat dense and fused rankings identical, filters and documents the same; in this process and on a
local Ray cluster (shard actors, the reranker as actors), through updates, and when a shard actor dies."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from index.builder import build_index
from index.distributed import build_on_ray
from index.manifest import IndexDirError
from index.sharded import read_layout, shard_of
from index.sharded_writer import ShardedWriter
from index.writer import IndexWriter
from retrieval import SearchPipeline
from retrieval.config import load_config
from retrieval.sharded import ShardError
from tests.conftest import SCIFACT, pipeline_config

DOCS = 300
QUERIES = 60


@pytest.fixture(scope="module")
def scifact_head(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("sharded-corpus") / "head.jsonl"
    docs = []
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as src:
        for i, line in enumerate(src):
            if i == DOCS + 40:
                break
            doc = json.loads(line)
            doc["parity"] = "even" if i % 2 == 0 else "odd"
            if i == 0:
                doc["rare"] = "yes"  # a field one document has: the other shards hold no row with it
            docs.append(doc)
    with open(out, "w", encoding="utf-8") as dst:
        for doc in docs[:DOCS]:
            dst.write(json.dumps(doc) + "\n")
    return out, docs[DOCS:]  # the 40 left out: what updates add


@pytest.fixture(scope="module")
def queries() -> list[str]:
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh][:QUERIES]


@pytest.fixture(scope="module")
def built(tmp_path_factory, scifact_head, tiny_bi_encoder, ray_cluster) -> tuple[Path, Path, dict]:
    corpus, _ = scifact_head
    root = tmp_path_factory.mktemp("sharded")
    config = load_config(pipeline_config(root / "unused", tiny_bi_encoder))
    build_index(corpus, root / "single", config.build_config(), show_progress=False, pipeline=config.stored())
    build_on_ray(corpus, root / "sharded", config.build_config(), shards=3, show_progress=False,
                 pipeline=config.stored())
    return root / "single", root / "sharded", pipeline_config(root / "unused", tiny_bi_encoder)


def _config(base: dict, **bm25) -> dict:
    out = json.loads(json.dumps(base))
    out["first_stage"]["bm25"].update(bm25)
    return out


def _assert_same(a: SearchPipeline, b: SearchPipeline, queries: list[str], flt: dict | None = None) -> None:
    for stage in ("bm25", "dense", "hybrid"):
        ra, rb = a.retrieve(queries, stage=stage, filter=flt), b.retrieve(queries, stage=stage, filter=flt)
        assert [[d for d, _ in r] for r in ra] == [[d for d, _ in r] for r in rb], stage
        if stage == "bm25":
            assert ra == rb  # the same floats
        else:
            assert max(abs(x - y) for p, q in zip(ra, rb) for (_, x), (_, y) in zip(p, q)) <= 1e-6


@pytest.mark.parametrize("variant", ["okapi", "bm25l", "bm25plus", "lucene"])
def test_sharded_answers_equal_unsharded_in_process(built, queries, variant):
    single, sharded, base = built
    config = _config(base, variant=variant)
    a = SearchPipeline.from_index(single, config)
    b = SearchPipeline.from_index(sharded, config)
    assert b.index.num_rows == a.index.num_rows and len(b.index.store) == len(a.index.store)
    _assert_same(a, b, queries)


def test_sharded_answers_equal_unsharded_on_ray(built, queries):
    single, sharded, base = built
    a = SearchPipeline.from_index(single)
    b = SearchPipeline.from_index(sharded, ray="local")
    _assert_same(a, b, queries)
    _assert_same(a, b, queries, {"parity": "even"})
    rare_docs = {r.doc_id for r in a.query(queries[0], top_k=1000, stage="dense", filter={"rare": "yes"})}
    assert len(rare_docs) == 1  # a field of one document, in one of the three shards, filters as on one index
    in_process = SearchPipeline.from_index(sharded)
    for flt in ({"rare": "yes"}, {"rare": {"exists": False}}, {"not": {"rare": "yes"}}):
        _assert_same(a, b, queries[:10], flt)
        _assert_same(a, in_process, queries[:10], flt)
    ra, rb = a.query_batch(queries[:5], top_k=5), b.query_batch(queries[:5], top_k=5)
    assert [[r.to_dict() for r in x] for x in ra] == [[r.to_dict() for r in x] for x in rb]  # documents, stages
    from retrieval.server import ServerSettings, Service

    # A BM25 query on Ray waits on the shard actors: the server runs it in a thread, never on its event loop.
    assert not Service(b, ServerSettings()).model_free("bm25")
    assert Service(SearchPipeline.from_index(sharded), ServerSettings()).model_free("bm25")
    b.index.close()


def test_a_filter_error_on_a_shard_is_the_users_error(built, queries):
    _, sharded, _ = built
    pipe = SearchPipeline.from_index(sharded, ray="local")
    with pytest.raises(ValueError, match="no_such_field"):
        pipe.query(queries[0], filter={"no_such_field": 1})
    pipe.index.close()


def test_the_reranker_runs_as_actors_over_the_merged_candidates(built, queries, tiny_cross_encoder):
    single, sharded, base = built
    config = {**base, "rerank": {"model": str(tiny_cross_encoder), "top_n": 10}}
    a = SearchPipeline.from_index(single, config)
    b = SearchPipeline.from_index(sharded, config, ray="local")
    assert type(b.reranker).__name__ == "RayReranker"
    b.reranker.MIN_PAIRS = 2  # split each query's 10 pairs over both actors
    b.reranker.actors.append(b.reranker.actors[0])  # two runs per call even on one actor
    ra, rb = a.retrieve(queries[:10], stage="rerank"), b.retrieve(queries[:10], stage="rerank")
    assert [[d for d, _ in r] for r in ra] == [[d for d, _ in r] for r in rb]
    assert max(abs(x - y) for p, q in zip(ra, rb) for (_, x), (_, y) in zip(p, q)) <= 1e-5
    b.index.close()


def test_a_shard_actor_killed_during_a_query_is_restarted_and_the_query_retried(built, queries, monkeypatch,
                                                                                 caplog):
    single, sharded, _ = built
    want = SearchPipeline.from_index(single).retrieve(queries[:3], stage="bm25")
    monkeypatch.setenv("TWOSTAGE_TEST_SHARD_DELAY", "1.5")  # each shard call takes 1.5 s: time to kill one
    pipe = SearchPipeline.from_index(sharded, ray="local")
    shards = pipe.index.shards
    pid = shards.call("pid", [()], [1])[0]
    got: list = []
    worker = threading.Thread(target=lambda: got.append(pipe.retrieve(queries[:3], stage="bm25")))
    start = time.monotonic()
    worker.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=120)
    assert not worker.is_alive() and got == [want]
    assert shards.call("pid", [()], [1])[0] != pid  # answered by the restarted actor
    assert time.monotonic() - start < 60
    assert any("died during search_bm25" in r.getMessage() for r in caplog.records)
    pipe.index.close()


def test_a_shard_that_cannot_come_back_fails_the_query_naming_it(built, queries, tmp_path):
    _, sharded, _ = built
    import shutil

    broken = tmp_path / "copy"
    shutil.copytree(sharded, broken)
    pipe = SearchPipeline.from_index(broken, ray="local")
    shards = pipe.index.shards
    pid = shards.call("pid", [()], [2])[0]
    shutil.rmtree(broken / read_layout(broken).manifest.shards[2])  # the machine lost the shard's disk
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(ShardError) as err:
        pipe.retrieve(queries[:2], stage="bm25")
    assert "shard 2 of" in str(err.value) and "\n" not in str(err.value)
    assert time.monotonic() - start < 60
    pipe.index.close()


def test_updates_go_to_the_owning_shard_and_keep_the_statistics_exact(built, scifact_head, queries, tmp_path,
                                                                        tiny_bi_encoder):
    import shutil

    single, sharded, base = built
    _, extra = scifact_head
    a_path, b_path = tmp_path / "single", tmp_path / "sharded"
    shutil.copytree(single, a_path)
    shutil.copytree(sharded, b_path)
    head = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open(encoding="utf-8")][:DOCS]
    deletes = [d["_id"] for d in head[10:40]]
    upserts = [{**d, "text": d["text"][::-1][:300]} for d in head[50:60]]
    for path, cls in ((a_path, IndexWriter), (b_path, ShardedWriter)):
        with cls(path) as w:
            w.add(extra[:20])
            w.commit()
            w.delete(deletes)
            w.upsert(upserts)
            w.add(extra[20:])
            w.commit()
    for variant in ("okapi", "bm25plus", "lucene"):
        config = _config(base, variant=variant)
        a = SearchPipeline.from_index(a_path, config)
        b = SearchPipeline.from_index(b_path, config)
        assert len(b.index.store) == len(a.index.store) == DOCS + 40 - 30
        for stage in ("bm25", "dense", "hybrid"):
            ra, rb = a.retrieve(queries, stage=stage), b.retrieve(queries, stage=stage)
            assert [[d for d, _ in r] for r in ra] == [[d for d, _ in r] for r in rb], (variant, stage)
            assert max(abs(x - y) for p, q in zip(ra, rb) for (_, x), (_, y) in zip(p, q)) <= 1e-9
    layout = read_layout(b_path)  # its corpus statistics are the unsharded index's live ones
    whole = SearchPipeline.from_index(a_path).index.parts["bm25"]
    assert set(layout.corpus.vocab) == set(whole.vocab)
    assert dict(zip(layout.corpus.vocab, layout.corpus.doc_freq.tolist())) == \
        dict(zip(whole.vocab, whole.doc_freq.tolist()))
    with ShardedWriter(b_path) as w:  # a merge keeps the answers
        w.merge()
    b = SearchPipeline.from_index(b_path)
    a = SearchPipeline.from_index(a_path)
    assert [[d for d, _ in r] for r in a.retrieve(queries, stage="hybrid")] == \
        [[d for d, _ in r] for r in b.retrieve(queries, stage="hybrid")]


def test_a_reader_refuses_a_shard_at_another_commit_and_the_next_writer_finishes_it(built, scifact_head, tmp_path):
    import shutil

    _, sharded, _ = built
    _, extra = scifact_head
    path = tmp_path / "sharded"
    shutil.copytree(sharded, path)
    layout = read_layout(path)
    # An update that committed one shard and stopped before the top level (as a kill there leaves it).
    with IndexWriter(layout.shard_path(0)) as w:
        w.add([d for d in extra if shard_of(d["_id"], 3) == 0][:2])
        w.commit()
    with pytest.raises(IndexDirError, match="twostage update --index"):
        SearchPipeline.from_index(path)
    with ShardedWriter(path):
        pass
    pipe = SearchPipeline.from_index(path)
    assert len(pipe.index.store) == DOCS + 2
    assert np.array_equal(np.sort(np.concatenate(read_layout(path).rows)), np.arange(DOCS + 2))
