"""Load tests of `twostage serve` over loopback: concurrent clients mixing searches and committed writes, then a
check that no acknowledged write was lost (`scripts/load_test.py`, `twostage load-test`, and the tests).

Every loop is bounded twice: by a request count and by a deadline.

Example:
    >>> with served("/tmp/idx/sample") as url:                                     # doctest: +SKIP
    ...     report = run_load(url, ["tides", "sleep"], clients=8, requests=200)
    ...     assert report.server_errors == 0 and not report.lost
"""

from __future__ import annotations

import http.client
import itertools
import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

http_client_errors = http.client.HTTPException

ROOT = Path(__file__).resolve().parent.parent


class _Connection:
    """One keep-alive HTTP/1.1 connection on the standard library: a client this light keeps its own share of the
    two cores out of the server's latency (httpx costs about 0.8 ms more per request here)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        parsed = urlsplit(url)
        self._host, self._port, self._timeout = parsed.hostname or "127.0.0.1", parsed.port or 80, timeout
        self._headers = dict(headers or {})
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> int:
        """The response's status (its body is read and dropped); a broken connection is reopened once."""
        data = None if body is None else json.dumps(body).encode()
        headers = {**self._headers, **({"Content-Type": "application/json"} if data is not None else {})}
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            try:
                self._conn.request(method, path, data, headers)
                response = self._conn.getresponse()
                response.read()
                return response.status
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(index: str | Path, port: int, args: Sequence[str] = (), log: Any = subprocess.DEVNULL,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """`scripts/serve.py` in a child process on 127.0.0.1:`port` (returns at once; see `wait_ready`)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "serve.py"), "--quiet", "--index", str(index),
           "--port", str(port), *args]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT if log is not subprocess.DEVNULL else log,
                            env=env)


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Until `/health` answers 200; raises if the process exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready")
        conn = _Connection(url, timeout=2)
        try:
            if conn.request("GET", "/health") == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError(f"the server at {url} was not ready after {timeout:g} s")


@contextmanager
def served(index: str | Path, args: Sequence[str] = (), timeout: float = 120.0) -> Iterator[str]:
    """A server over `index` for the block's duration; yields its base URL."""
    port = free_port()
    proc = start_server(index, port, args)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class LoadReport:
    """What a load run did and saw."""

    requests: int = 0
    seconds: float = 0.0
    clients: int = 0
    status: dict[str, dict[int, int]] = field(default_factory=dict)  # endpoint -> status -> count
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)  # acknowledged adds, and deletes
    deleted: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # what the check after the run found missing or still there
    failures: list[str] = field(default_factory=list)  # transport errors (first few)

    @property
    def server_errors(self) -> int:
        return sum(n for by in self.status.values() for s, n in by.items() if s >= 500)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for endpoint, ms in sorted(self.latencies_ms.items()):
            arr = np.asarray(ms)
            out.append({"endpoint": endpoint, "requests": len(ms),
                        "status": ", ".join(f"{s}: {n}" for s, n in sorted(self.status[endpoint].items())),
                        "p50 ms": float(np.percentile(arr, 50)), "p95 ms": float(np.percentile(arr, 95)),
                        "p99 ms": float(np.percentile(arr, 99))})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "seconds": round(self.seconds, 3), "clients": self.clients,
                "throughput_rps": round(self.requests / self.seconds, 2) if self.seconds else None,
                "server_errors": self.server_errors, "acknowledged_adds": len(self.added),
                "acknowledged_deletes": len(self.deleted), "lost": self.lost, "failures": self.failures,
                "endpoints": self.rows()}


def run_load(url: str, queries: Sequence[str], clients: int = 32, requests: int = 2000,
             write_fraction: float = 0.05, max_seconds: float = 600.0, seed: int = 0,
             api_key: str | None = None, top_k: int = 10) -> LoadReport:
    """`requests` requests from `clients` threads (each its own connection), a `write_fraction` of them writes
    (an add of a new document, or a delete of one added before, each committed before its answer), then a check
    that every acknowledged add is in the index and every acknowledged delete is gone."""
    report = LoadReport(clients=clients)
    lock = threading.Lock()
    counter = itertools.count()
    deadline = time.monotonic() + max_seconds
    headers = {"X-API-Key": api_key} if api_key else {}

    def record(endpoint: str, status: int, ms: float) -> None:
        with lock:
            by = report.status.setdefault(endpoint, {})
            by[status] = by.get(status, 0) + 1
            report.latencies_ms.setdefault(endpoint, []).append(ms)

    def worker(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        http = _Connection(url, headers)
        try:
            while time.monotonic() < deadline:
                n = next(counter)
                if n >= requests:
                    return
                try:
                    if rng.random() < write_fraction:
                        _write(http, rng, n, record, report, lock)
                    else:
                        start = time.perf_counter()
                        status = http.request("POST", "/search", {"q": queries[n % len(queries)], "top_k": top_k})
                        record("POST /search", status, (time.perf_counter() - start) * 1000)
                except (OSError, http_client_errors) as exc:
                    with lock:
                        if len(report.failures) < 5:
                            report.failures.append(f"{type(exc).__name__}: {exc}")
                        report.status.setdefault("transport", {}).setdefault(599, 0)
                        report.status["transport"][599] += 1
        finally:
            http.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + 60))
    report.seconds = time.perf_counter() - start
    report.requests = sum(len(v) for v in report.latencies_ms.values())
    report.lost = verify_writes(url, report.added, report.deleted, headers)
    return report


def _write(http: Any, rng: random.Random, n: int, record: Any, report: LoadReport, lock: threading.Lock) -> None:
    with lock:
        victim = report.added.pop(rng.randrange(len(report.added))) if report.added and rng.random() < 0.3 \
            else None
    start = time.perf_counter()
    if victim is None:
        doc_id = f"load-{n}"
        status = http.request("POST", "/documents", [{"_id": doc_id, "title": f"Load test document {n}",
                                                      "text": f"loadtoken{n} written by the load test"}])
        record("POST /documents", status, (time.perf_counter() - start) * 1000)
        if status == 200:
            with lock:
                report.added.append(doc_id)
        return
    status = http.request("DELETE", f"/documents/{victim}")
    record("DELETE /documents/{id}", status, (time.perf_counter() - start) * 1000)
    with lock:
        (report.deleted if status == 200 else report.added).append(victim)


def verify_writes(url: str, added: Sequence[str], deleted: Sequence[str],
                  headers: dict[str, str] | None = None) -> list[str]:
    """Every id of `added` is in the index and none of `deleted` is; returns what is wrong, one line each."""
    lost = []
    http = _Connection(url, headers)
    try:
        for doc_id in added:
            if http.request("GET", f"/documents/{doc_id}") != 200:
                lost.append(f"{doc_id}: acknowledged add not found")
        for doc_id in deleted:
            if http.request("GET", f"/documents/{doc_id}") != 404:
                lost.append(f"{doc_id}: acknowledged delete still there")
    finally:
        http.close()
    return lost
