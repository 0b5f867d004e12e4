"""Shared reranking batches for concurrent callers: a server's requests that arrive within a few milliseconds of
each other put their (query, passage) pairs into one `predict` call, which sorts all of them by length into
batches, so padding and per-call overhead are paid once for the group instead of once per request.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    pairs: list[tuple[str, str]]
    wake: threading.Event = field(default_factory=threading.Event)  # scored, failed, or made the group's leader
    lead: bool = False
    scores: np.ndarray | None = None
    error: BaseException | None = None


class SharedBatches:
    """A reranker whose `predict` gathers the pairs of concurrent callers into shared calls of the wrapped one.

    Parameters:
        reranker: a reranker with `predict(pairs) -> scores` (`CrossEncoderReranker`); every other attribute is
            the wrapped reranker's.
        wait_ms: how long the first request of a group waits for others to join it (0: only those already
            waiting join).
        max_pairs: a group is sent as soon as it holds this many pairs.

    Each caller gets exactly the scores of its own pairs, in its order. One thread (the first caller of a group)
    runs the wrapped `predict` for the whole group while the others wait, then passes the lead to the next caller
    waiting; a failure is raised in every caller of that group.
    """

    def __init__(self, reranker: Any, wait_ms: float = 2.0, max_pairs: int = 512) -> None:
        if wait_ms < 0 or max_pairs < 1:
            raise ValueError(f"wait_ms must be >= 0 and max_pairs >= 1, got {wait_ms} and {max_pairs}")
        self.reranker = reranker
        self.wait_s = wait_ms / 1000
        self.max_pairs = max_pairs
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._leader = False
        self._more = threading.Condition(self._lock)
        self.calls = 0  # wrapped predict calls, and the requests they served (for /stats)
        self.requests = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reranker, name)

    def predict(self, pairs: Sequence[tuple[str, str]], **kwargs: Any) -> np.ndarray:
        if kwargs or not pairs:  # a caller with its own options (progress bars, batch size) runs alone
            return self.reranker.predict(list(pairs), **kwargs)
        request = _Request(list(pairs))
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
            if request.scores is not None or request.error is not None:
                break
        if request.error is not None:
            raise request.error
        return request.scores

    def _lead(self) -> None:
        """Wait up to `wait_s` for the group to fill, score it (the leader's own request is in it), then hand the
        lead to the oldest request that queued meanwhile: each leader scores one group and returns, so no caller
        is kept serving others while they keep arriving."""
        deadline = time.monotonic() + self.wait_s
        with self._lock:
            while sum(len(r.pairs) for r in self._queue) < self.max_pairs:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._more.wait(left)
            group, self._queue = self._queue, []
        self._score(group)
        with self._lock:
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.wake.set()
            else:
                self._leader = False

    def _score(self, group: list[_Request]) -> None:
        flat = [p for r in group for p in r.pairs]
        try:
            scores = np.asarray(self.reranker.predict(flat), dtype=np.float64)
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the group
            for r in group:
                r.error = exc
                r.wake.set()
            return
        self.calls += 1
        self.requests += len(group)
        at = 0
        for r in group:
            r.scores = scores[at : at + len(r.pairs)]
            at += len(r.pairs)
            r.wake.set()
