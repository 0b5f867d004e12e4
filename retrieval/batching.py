"""Shared batches for concurrent callers: a server's requests that arrive within a few milliseconds of each other
put their reranking pairs into one `predict` call (which sorts all of them by length into batches) and their
query texts into one `encode_queries` call, so padding and per-call overhead are paid once for the group instead
of once per request.

Example:
    >>> from retrieval import SearchPipeline                                   # doctest: +SKIP
    >>> pipe = SearchPipeline.from_index("/tmp/idx/scifact")                   # doctest: +SKIP
    >>> pipe.reranker = SharedBatches(pipe.reranker, wait_ms=3)                # doctest: +SKIP
    >>> # threads calling pipe.query(...) now share the reranker's batches     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    items: list[Any]
    wake: threading.Event = field(default_factory=threading.Event)  # done, failed, or made the group's leader
    lead: bool = False
    rows: np.ndarray | None = None
    error: BaseException | None = None


class SharedCalls:
    """`fn(items) -> array with one row per item`, called once for the items of concurrent callers.

    Parameters:
        fn: the batched function (a reranker's `predict`, an encoder's `encode_queries`).
        wait_ms: how long the first request of a group waits for others to join it (0: only those already
            waiting join).
        max_items: a group is sent as soon as it holds this many items.
        in_flight: how many callers could join now (e.g. a server's requests in progress); when given, a group is
            sent as soon as that many have joined, so a lone caller never waits.

    Each caller gets exactly the rows of its own items, in its order. One thread (the first caller of a group)
    runs `fn` for the whole group while the others wait, then passes the lead to the oldest caller that queued
    meanwhile, so no caller is kept serving others while they keep arriving; a failure is raised in every caller
    of that group.
    """

    def __init__(self, fn: Callable[[list[Any]], Any], wait_ms: float = 2.0, max_items: int = 512,
                 dtype: Any = None, in_flight: Callable[[], int] | None = None) -> None:
        if wait_ms < 0 or max_items < 1:
            raise ValueError(f"wait_ms must be >= 0 and max_items >= 1, got {wait_ms} and {max_items}")
        self.fn = fn
        self.wait_s = wait_ms / 1000
        self.max_items = max_items
        self.dtype = dtype
        self.in_flight = in_flight
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._leader = False
        self._more = threading.Condition(self._lock)
        self.calls = 0  # calls of fn, and the requests they served (for /stats)
        self.requests = 0

    def __call__(self, items: Sequence[Any]) -> np.ndarray:
        request = _Request(list(items))
        with self._lock:
            self._queue.append(request)
            if not self._leader:
                self._leader = request.lead = True
            else:
                self._more.notify()
        while True:
            if request.lead:
                self._lead()
            else:
                request.wake.wait()
            if request.rows is not None or request.error is not None:
                break
        if request.error is not None:
            raise request.error
        return request.rows

    def _lead(self) -> None:
        deadline = time.monotonic() + self.wait_s
        with self._lock:
            while sum(len(r.items) for r in self._queue) < self.max_items:
                if self.in_flight is not None and len(self._queue) >= self.in_flight():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._more.wait(left)
            group, self._queue = self._queue, []
        self._run(group)
        with self._lock:
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.wake.set()
            else:
                self._leader = False

    def _run(self, group: list[_Request]) -> None:
        flat = [item for r in group for item in r.items]
        try:
            rows = np.asarray(self.fn(flat), dtype=self.dtype)
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the group
            for r in group:
                r.error = exc
                r.wake.set()
            return
        self.calls += 1
        self.requests += len(group)
        at = 0
        for r in group:
            r.rows = rows[at : at + len(r.items)]
            at += len(r.items)
            r.wake.set()


class _Shared:
    """A model wrapper: one method shared through `self.shared`, every other attribute the wrapped model's."""

    _wrapped = "model"  # the attribute holding the wrapped model
    shared: SharedCalls

    def __getattr__(self, name: str) -> Any:
        if name == self._wrapped:  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(getattr(self, self._wrapped), name)

    @property
    def calls(self) -> int:
        return self.shared.calls

    @property
    def requests(self) -> int:
        return self.shared.requests


class SharedBatches(_Shared):
    """A reranker whose `predict` gathers the pairs of concurrent callers into shared calls of the wrapped one
    (`SharedCalls`); every other attribute is the wrapped reranker's. A call with options of its own (progress
    bars, batch size) runs alone."""

    _wrapped = "reranker"

    def __init__(self, reranker: Any, wait_ms: float = 2.0, max_pairs: int = 512,
                 in_flight: Callable[[], int] | None = None) -> None:
        self.reranker = reranker
        self.shared = SharedCalls(reranker.predict, wait_ms, max_pairs, dtype=np.float64, in_flight=in_flight)

    def predict(self, pairs: Sequence[tuple[str, str]], **kwargs: Any) -> np.ndarray:
        if kwargs or not pairs:
            return self.reranker.predict(list(pairs), **kwargs)
        return self.shared(pairs)


class SharedEncodings(_Shared):
    """A bi-encoder whose `encode_queries` gathers the queries of concurrent callers into one shared call of the
    wrapped one (`SharedCalls`); documents and every other attribute are the wrapped encoder's."""

    _wrapped = "encoder"

    def __init__(self, encoder: Any, wait_ms: float = 2.0, max_queries: int = 256,
                 in_flight: Callable[[], int] | None = None) -> None:
        self.encoder = encoder
        self.shared = SharedCalls(encoder.encode_queries, wait_ms, max_queries, dtype=np.float32,
                                  in_flight=in_flight)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        if not queries:
            return self.encoder.encode_queries(list(queries))
        return np.ascontiguousarray(self.shared(queries))
