"""The server as users run it (a child process on loopback): the load test's short form (concurrent searches and
committed writes: no 5xx, no acknowledged write lost), SIGKILL during a stream of writes (the restarted server has
every acknowledged commit and nothing half-written), and the typed client."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from index.builder import build_index
from retrieval.client import Client, ServerError
from retrieval.loadtest import free_port, run_load, served, start_server, verify_writes, wait_ready
from tests.conftest import SAMPLE_CORPUS
from tests.reliability import bm25_only


@pytest.fixture
def bm25_index(tmp_path):
    build_index(SAMPLE_CORPUS, tmp_path / "idx", bm25_only(), show_progress=False)
    return tmp_path / "idx"


def test_load_short_form_no_5xx_no_lost_write(bm25_index):
    with served(bm25_index) as url:
        report = run_load(url, ["ocean tides", "sleep", "volcano", "the"], clients=8, requests=300,
                          write_fraction=0.1, max_seconds=120, seed=1)
    assert report.requests == 300 and report.server_errors == 0 and not report.failures
    assert report.added and not report.lost  # writes happened, and every acknowledged one is there
    assert set(report.status["POST /search"]) == {200}


def test_sigkill_during_writes_loses_no_acknowledged_commit(bm25_index):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(bm25_index, port)
    acked: list[str] = []
    stop = threading.Event()
    try:
        wait_ready(url, proc)

        def writer() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                for n in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        r = http.post("/documents", json=[{"_id": f"w{n}", "text": f"written {n}"}])
                    except httpx.HTTPError:
                        return  # the server died mid-request: not acknowledged
                    if r.status_code == 200:
                        acked.append(f"w{n}")

        thread = threading.Thread(target=writer)
        thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        stop.set()
        thread.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 5
    with served(bm25_index) as url:  # the writer lock of the killed server is stale and taken over
        assert verify_writes(url, acked, []) == []
        with Client(url) as client:
            assert client.add([{"_id": "after-restart", "text": "still writable"}])["committed"]
            stats = client.stats()
    assert stats["documents"] >= 25 + len(acked)


def test_client_search_and_writes(bm25_index):
    with served(bm25_index, ["--api-key", "k3y"]) as url:
        with Client(url, api_key="k3y") as client:
            assert client.health()["index_loaded"]
            hit = client.search("why does the ocean have tides", top_k=3).results[0]
            assert hit.doc_id == "tides" and hit.stages["bm25"].rank == 1
            assert client.add([{"_id": "a/b", "text": "slash id glacier"}])["added"] == 1
            assert client.get("a/b")["text"] == "slash id glacier"
            assert [r.results[0].doc_id for r in client.search_batch(["slash id glacier", "tides"])] == \
                ["a/b", "tides"]
            assert client.delete(["a/b"])["deleted"] == 1 and client.get("a/b") is None
        with Client(url) as anonymous:
            with pytest.raises(ServerError) as err:
                anonymous.add([{"_id": "x", "text": "y"}])
            assert err.value.status == 401
