"""The HTTP service in-process (FastAPI's TestClient): answers equal `SearchPipeline.query`, writes are committed
before they are acknowledged and seen by the next search, limits and auth answer 4xx naming the problem, and no
response carries a stack trace."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from index.builder import build_index
from retrieval import SearchPipeline
from retrieval.server import ServerSettings, Service, create_app, result_json
from tests.conftest import SAMPLE_CORPUS, pipeline_config
from tests.reliability import bm25_only, bm25_pipeline_config

QUERIES = ["why does the ocean have tides", "bacteria resistant to drugs", "volcano eruption"]


@pytest.fixture
def bm25_index(tmp_path):
    build_index(SAMPLE_CORPUS, tmp_path / "idx", bm25_only(), show_progress=False)
    return tmp_path / "idx"


def client_for(pipe: SearchPipeline, **settings) -> TestClient:
    return TestClient(create_app(pipe, ServerSettings(**settings)), raise_server_exceptions=False)


def expected(pipe: SearchPipeline, q: str, **kw) -> list[dict]:
    return [result_json(r) for r in pipe.query(q, **kw)]


def without_timings(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "timings_ms"}


def test_search_answers_equal_the_library(sample_index, tiny_bi_encoder, tiny_cross_encoder):
    config = pipeline_config(sample_index, tiny_bi_encoder)
    config["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 5, "batch_size": 4}
    library = SearchPipeline.from_config(config)
    with client_for(SearchPipeline.from_config(config)) as client:
        for q in QUERIES:
            got = client.get("/search", params={"q": q, "top_k": 5})
            assert got.status_code == 200
            body = got.json()
            assert body["query"] == q and body["results"] == json.loads(json.dumps(expected(library, q, top_k=5)))
            assert {"bm25", "dense", "hybrid", "rerank", "total"} <= set(body["timings_ms"])
            posted = client.post("/search", json={"q": q, "top_k": 5})
            assert without_timings(posted.json()) == without_timings(body)
        service = client.app.state.service  # bm25 alone runs on the event loop, every model stage in a thread
        assert service.model_free("bm25") and not any(map(service.model_free, (None, "dense", "hybrid", "rerank")))
        one_stage = client.post("/search", json={"q": QUERIES[0], "stage": "bm25", "top_k": 3}).json()
        assert one_stage["results"] == json.loads(json.dumps(expected(library, QUERIES[0], top_k=3, stage="bm25")))
        assert "rerank" not in one_stage["timings_ms"]
        batch = client.post("/search/batch", json={"queries": QUERIES, "top_k": 5}).json()
        assert [r["results"] for r in batch["responses"]] == [
            json.loads(json.dumps(expected(library, q, top_k=5))) for q in QUERIES]


def test_concurrent_requests_share_batches_and_answer_as_alone(sample_index, tiny_bi_encoder, tiny_cross_encoder):
    config = pipeline_config(sample_index, tiny_bi_encoder)
    config["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 8, "batch_size": 4}
    library = SearchPipeline.from_config(config)
    alone = {q: [(r.doc_id, r.rank) for r in library.query(q)] for q in QUERIES * 2}
    with client_for(SearchPipeline.from_config(config), batch_wait_ms=20) as client:
        app_service = client.app.state.service
        with ThreadPoolExecutor(max_workers=6) as pool:
            got = list(pool.map(lambda q: client.post("/search", json={"q": q}).json(), QUERIES * 4))
        for q, body in zip(QUERIES * 4, got):
            assert [(r["doc_id"], r["rank"]) for r in body["results"]] == alone[q]
        batches = app_service.batches
        assert batches.requests == 12 and batches.calls < 12  # some requests shared a predict call
        stats = client.get("/stats").json()
        assert stats["shared_batches"]["requests"] == 12
        assert stats["endpoints"]["POST /search"]["requests"] == {"2xx": 12}


def test_concurrent_requests_share_query_encodings_and_answer_as_alone(sample_index, tiny_bi_encoder, tmp_path):
    import shutil

    index = shutil.copytree(sample_index, tmp_path / "idx")  # this test writes: not into the shared fixture
    config = pipeline_config(index, tiny_bi_encoder)  # hybrid, no reranker: encoding is the shared work
    library = SearchPipeline.from_config(config)
    queries = QUERIES * 4
    alone = {q: [(r.doc_id, r.rank, round(r.score, 5)) for r in library.query(q)] for q in QUERIES}
    with client_for(SearchPipeline.from_config(config), batch_wait_ms=20) as client:
        with ThreadPoolExecutor(max_workers=6) as pool:
            got = list(pool.map(lambda q: client.post("/search", json={"q": q}).json(), queries))
        for q, body in zip(queries, got):
            assert [(r["doc_id"], r["rank"], round(r["score"], 5)) for r in body["results"]] == alone[q]
        shared = client.app.state.service.encodings["dense"]
        assert shared.requests == len(queries) and shared.calls < len(queries)
        assert client.get("/stats").json()["shared_batches"]["query_encodings"]["dense"]["requests"] == len(queries)
        # writes encode documents through the same (wrapped) encoder, and the refreshed pipeline keeps sharing
        assert client.post("/documents", json=[{"_id": "n1", "text": "Tides follow the Moon."}]).status_code == 200
        assert client.post("/search", json={"q": "tides moon"}).status_code == 200
        assert shared.requests == len(queries) + 1


def test_shared_encodings_give_each_caller_its_rows():
    import threading

    import numpy as np

    from retrieval.batching import SharedEncodings

    class Encoder:
        dim = 2

        def __init__(self):
            self.calls = []

        def encode_queries(self, queries):
            self.calls.append(list(queries))
            return np.array([[len(q), i] for i, q in enumerate(queries)], dtype=np.float32)[:, :1]

    inner = Encoder()
    shared = SharedEncodings(inner, wait_ms=30)
    assert shared.dim == 2  # everything else is the wrapped encoder's
    results = {}

    def caller(i):
        queries = ["x" * (i + j) for j in range(i + 1)]
        results[i] = (queries, shared.encode_queries(queries))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for queries, rows in results.values():
        assert rows.shape == (len(queries), 1) and rows[:, 0].tolist() == [len(q) for q in queries]
    assert len(inner.calls) < 8 and sum(len(c) for c in inner.calls) == sum(range(1, 9))

    import time

    alone = SharedEncodings(inner, wait_ms=2000, in_flight=lambda: 1)  # nobody else could join: no wait
    start = time.perf_counter()
    assert alone.encode_queries(["q"]).shape == (1, 1)
    assert time.perf_counter() - start < 0.5


def test_writes_are_committed_before_the_answer(bm25_index):
    pipe = SearchPipeline.from_config(bm25_pipeline_config(bm25_index))
    with client_for(pipe) as client:
        doc = {"_id": "glacier-1", "title": "Glaciers", "text": "Glaciers carve deep valleys.", "source": "test"}
        added = client.post("/documents", json=[doc])
        assert added.status_code == 200 and added.json()["committed"] and added.json()["added"] == 1
        hits = client.get("/search", params={"q": "glaciers carve valleys"}).json()["results"]
        assert hits[0]["doc_id"] == "glacier-1" and hits[0]["metadata"] == {"source": "test"}
        assert client.get("/documents/glacier-1").json()["text"] == doc["text"]
        again = client.post("/documents", json=[doc])
        assert again.status_code == 400 and "glacier-1" in again.json()["error"] and "upsert" in again.json()["error"]
        upserted = client.post("/documents?mode=upsert", json=[{**doc, "text": "Ice sheets grind rock."}])
        assert upserted.json()["replaced"] == 1
        assert client.get("/documents/glacier-1").json()["text"] == "Ice sheets grind rock."
        pending = client.post("/documents?commit=false", json=[{"_id": "later", "text": "Moraines."}]).json()
        assert pending == {"count": 1, "committed": False, "pending": True}
        assert client.get("/documents/later").status_code == 404  # not committed yet
        assert client.post("/commit").json()["generation"] == 3
        assert client.get("/documents/later").status_code == 200
        assert client.delete("/documents/glacier-1").json()["deleted"] == 1
        assert client.get("/documents/glacier-1").status_code == 404
        gone = client.post("/documents/delete", json={"ids": ["later", "never-there"]}).json()
        assert gone["deleted"] == 1 and gone["unknown"] == 1
        ids = [r["doc_id"] for r in client.get("/search", params={"q": "glaciers moraines"}).json()["results"]]
        assert "glacier-1" not in ids and "later" not in ids
    # What the server acknowledged is on disk: a fresh pipeline sees the same index.
    fresh = SearchPipeline.from_config(bm25_pipeline_config(bm25_index))
    assert fresh.index.generation == 5 and len(fresh.index.store) == len(pipe.index.store)


def test_filters_over_http(bm25_index):
    pipe = SearchPipeline.from_config(bm25_pipeline_config(bm25_index))
    with client_for(pipe) as client:
        client.post("/documents", json=[{"_id": f"g{i}", "title": "Glaciers", "text": "Glaciers carve valleys.",
                                         "year": 2000 + i} for i in range(5)])
        flt = {"year": {"gte": 2003}}
        got = client.get("/search", params={"q": "glaciers", "filter": json.dumps(flt)}).json()["results"]
        assert sorted(r["doc_id"] for r in got) == ["g3", "g4"]
        posted = client.post("/search", json={"q": "glaciers", "filter": flt}).json()["results"]
        assert posted == got == json.loads(json.dumps(expected(pipe, "glaciers", filter=flt)))
        unknown = client.post("/search", json={"q": "glaciers", "filter": {"colour": "red"}})
        assert unknown.status_code == 400 and "colour" in unknown.json()["error"] and "year" in unknown.json()["error"]
        bad_json = client.get("/search", params={"q": "x", "filter": "{year"})
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]


@pytest.mark.parametrize("request_args, status, words", [
    (("get", "/search", {"params": {"q": "x" * 1001}}), 413, "max_query_chars"),
    (("get", "/search", {"params": {"q": "tides", "top_k": 101}}), 413, "max_top_k"),
    (("get", "/search", {"params": {"q": "tides", "top_k": 0}}), 400, "top_k"),
    (("get", "/search", {"params": {"q": "tides", "top_k": "ten"}}), 422, "top_k"),
    (("get", "/search", {"params": {"q": "tides", "stage": "rerank"}}), 400, "available: bm25"),
    (("get", "/search", {}), 422, "q"),
    (("post", "/search/batch", {"json": {"queries": ["a"] * 65}}), 413, "max_batch"),
    (("post", "/search", {"json": {"q": "a", "filter": {"and": [{"or": [{"and": [{"or": [{"not": {"and": [
        {"year": {"gte": 1}}]}}]}]}]}]}}}), 413, "max_filter_depth"),
    (("post", "/search", {"json": {"q": "a", "bogus": 1}}), 422, "bogus"),
    (("post", "/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}), 422, "JSON"),
    (("post", "/documents", {"content": b"[" + b'{"_id": "x", "text": "y"},' * 200_000 + b"{}]",
                             "headers": {"content-type": "application/json"}}), 413, "max_body_bytes"),
    (("post", "/documents", {"json": [{"text": "no id"}]}), 400, "id"),
    (("post", "/documents", {"json": [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}]}), 400, "more than once"),
    (("get", "/documents/nope", {}), 404, "nope"),
    (("get", "/nowhere", {}), 404, "Not Found"),
])
def test_bad_requests_get_one_line_4xx(bm25_index, request_args, status, words):
    pipe = SearchPipeline.from_config(bm25_pipeline_config(bm25_index))
    with client_for(pipe) as client:
        method, url, kwargs = request_args
        got = client.request(method.upper(), url, **kwargs)
        assert got.status_code == status, got.text
        message = got.json()["error"]
        assert words in message and "\n" not in message and "Traceback" not in got.text
        assert pipe.index.generation == 0  # nothing was written


def test_api_key_and_read_only(bm25_index, caplog):
    pipe = SearchPipeline.from_config(bm25_pipeline_config(bm25_index))
    doc = [{"_id": "k", "text": "Keyed write."}]
    with caplog.at_level("DEBUG"), client_for(pipe, api_key="s3cret-key") as client:
        refused = client.post("/documents", json=doc)
        assert refused.status_code == 401 and "X-API-Key" in refused.json()["error"]
        assert client.post("/documents", json=doc, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/documents", json=doc, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert client.delete("/documents/k", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert client.get("/search", params={"q": "keyed"}).status_code == 200  # reads need no key
    assert "s3cret-key" not in caplog.text
    with client_for(SearchPipeline.from_config(bm25_pipeline_config(bm25_index)), read_only=True) as client:
        for method, url, kw in [("POST", "/documents", {"json": doc}), ("DELETE", "/documents/k", {}),
                                ("POST", "/documents/delete", {"json": {"ids": ["k"]}}), ("POST", "/commit", {})]:
            got = client.request(method, url, **kw)
            assert got.status_code == 403 and "read-only" in got.json()["error"]


def test_health_stats_openapi_page_and_no_cors_by_default(bm25_index):
    pipe = SearchPipeline.from_config(bm25_pipeline_config(bm25_index))
    with client_for(pipe) as client:
        assert client.get("/health").json()["index_loaded"] is True
        client.get("/search", params={"q": "tides"})
        stats = client.get("/stats").json()
        assert stats["documents"] == len(pipe.index.store) and stats["segments"] == 1
        assert stats["endpoints"]["GET /search"]["requests"] == {"2xx": 1} and stats["uptime_s"] >= 0
        assert "/search" in client.get("/openapi.json").json()["paths"]
        assert "<form" in client.get("/").text
        cors = client.options("/search", headers={"Origin": "https://evil.example",
                                                  "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in cors.headers
    with client_for(pipe, cors_origins=["https://app.example"]) as client:
        ok = client.get("/health", headers={"Origin": "https://app.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"


def test_a_failure_inside_is_a_500_without_a_trace(bm25_index, monkeypatch):
    pipe = SearchPipeline.from_config(bm25_pipeline_config(bm25_index))

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(pipe, "query_batch", broken)
    with client_for(pipe) as client:
        got = client.get("/search", params={"q": "tides"})
        assert got.status_code == 500 and "RuntimeError" in got.json()["error"]
        assert "secret" not in got.text and "Traceback" not in got.text


def test_a_shard_that_does_not_answer_is_a_503_naming_it(bm25_index, monkeypatch):
    from retrieval.sharded import ShardError

    pipe = SearchPipeline.from_config(bm25_pipeline_config(bm25_index))

    def lost(*args, **kwargs):
        raise ShardError("shard 2 of /srv/idx died (ActorDiedError) and did not come back within 60 s; the query "
                         "was not answered")

    monkeypatch.setattr(pipe, "query_batch", lost)
    with client_for(pipe) as client:
        got = client.get("/search", params={"q": "tides"})
        assert got.status_code == 503 and got.json()["error"].startswith("shard 2 of /srv/idx died")


def test_a_slow_request_times_out(bm25_index, monkeypatch):
    import time

    pipe = SearchPipeline.from_config(bm25_pipeline_config(bm25_index))
    real = pipe.query_batch
    monkeypatch.setattr(pipe, "query_batch", lambda *a, **k: (time.sleep(1.0), real(*a, **k))[1])
    # as a query with a model stage: those run in worker threads (a BM25-only one runs on the event loop, bounded
    # by the query-length and top_k limits instead)
    monkeypatch.setattr(Service, "model_free", lambda self, stage: False)
    with client_for(pipe, request_timeout_s=0.2) as client:
        got = client.get("/search", params={"q": "tides"})
        assert got.status_code == 504 and "request_timeout_s" in got.json()["error"]


def test_serve_command_without_the_extra_names_it(bm25_index, monkeypatch, capsys):
    from retrieval import cli

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--index", str(bm25_index)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "twostage[serve]" in err and "Traceback" not in err


def test_shared_batches_keep_each_callers_scores():
    import threading

    import numpy as np

    from retrieval.batching import SharedBatches

    class Recorder:
        def __init__(self):
            self.calls = []

        def predict(self, pairs):
            self.calls.append(len(pairs))
            return np.array([float(len(q) * 100 + len(p)) for q, p in pairs])

    inner = Recorder()
    shared = SharedBatches(inner, wait_ms=30)
    results = {}

    def caller(i):
        pairs = [(f"q{i}" * (i + 1), "p" * j) for j in range(i + 1)]
        results[i] = (pairs, shared.predict(pairs))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for pairs, scores in results.values():
        assert scores.tolist() == [float(len(q) * 100 + len(p)) for q, p in pairs]
    assert sum(inner.calls) == sum(range(1, 9)) and len(inner.calls) < 8

    class Failing:
        def predict(self, pairs):
            raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        SharedBatches(Failing(), wait_ms=0).predict([("q", "p")])


def test_a_second_writer_gets_409_naming_the_lock(bm25_index):
    from index.writer import IndexWriter

    pipe = SearchPipeline.from_config(bm25_pipeline_config(bm25_index))
    with IndexWriter(bm25_index), client_for(pipe) as client:
        got = client.post("/documents", json=[{"_id": "x", "text": "y"}])
        assert got.status_code == 409 and "by process" in got.json()["error"]
        assert client.get("/search", params={"q": "tides"}).status_code == 200  # reads go on


def test_shared_batches_never_keep_a_leader_serving_others():
    """Under a steady stream of callers each call returns after about one group's work: the caller that led a
    group hands the lead on instead of serving everyone who arrives meanwhile (a 32-client load once starved one
    request past the 30 s timeout that way)."""
    import threading
    import time

    import numpy as np

    from retrieval.batching import SharedBatches

    class Slow:
        def predict(self, pairs):
            time.sleep(0.0005 * len(pairs))
            return np.zeros(len(pairs))

    shared = SharedBatches(Slow(), wait_ms=2)
    stop = time.monotonic() + 2.0
    worst: list[float] = []

    def caller(i):
        time.sleep(0.01 * i)  # staggered, so someone is always queueing while a group is scored
        while time.monotonic() < stop:
            t = time.perf_counter()
            shared.predict([("q", "p")] * 10)
            worst.append(time.perf_counter() - t)
            time.sleep(0.001 * (i % 5))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(worst) > 100 and max(worst) < 1.0, max(worst)  # the old leader: the whole 2 s
