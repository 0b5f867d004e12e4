"""A small typed client for `twostage serve`, on httpx (the `serve` extra).

Example:
    >>> from retrieval.client import Client                                   # doctest: +SKIP
    >>> with Client("http://127.0.0.1:8000", api_key="...") as c:             # doctest: +SKIP
    ...     c.add([{"_id": "d1", "title": "Tides", "text": "The moon pulls the sea."}])
    ...     hits = c.search("why are there tides", top_k=5).results
    ...     print(hits[0].doc_id, hits[0].stages["bm25"].rank)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from index.extras import require


class ServerError(RuntimeError):
    """The server answered an error: `status` and its one-line `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass
class Stage:
    score: float
    rank: int


@dataclass
class Hit:
    """One result, as `SearchResult` serialises it."""

    doc_id: str
    score: float
    rank: int
    title: str
    text: str
    text_truncated: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Stage] = field(default_factory=dict)
    passage: dict[str, Any] | None = None
    passages: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Hit:
        stages = {k: Stage(float(v["score"]), int(v["rank"])) for k, v in raw.get("stages", {}).items()}
        return cls(raw["doc_id"], float(raw["score"]), int(raw["rank"]), raw.get("title", ""), raw.get("text", ""),
                   bool(raw.get("text_truncated", False)), raw.get("metadata", {}), stages, raw.get("passage"),
                   raw.get("passages", []))


@dataclass
class SearchResponse:
    query: str
    results: list[Hit]
    timings_ms: dict[str, float]


class Client:
    """Search and writes over HTTP.

    Parameters:
        base_url: where the server listens, e.g. `http://127.0.0.1:8000`.
        api_key: sent as `X-API-Key` (writes need it when the server has one).
        timeout: seconds per request.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float = 30.0, transport: Any = None) -> None:
        httpx = require("httpx", "serve", "the twostage HTTP client")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ServerError(response.status_code, message)
        return response.json()

    # -- search ---------------------------------------------------------------------------------------------

    def search(self, q: str, top_k: int | None = None, stage: str | None = None,
               filter: dict[str, Any] | None = None, passages: bool = False,
               full_text: bool = False) -> SearchResponse:
        body = {"q": q, "top_k": top_k, "stage": stage, "filter": filter, "passages": passages,
                "full_text": full_text}
        raw = self._call("POST", "/search", json={k: v for k, v in body.items() if v is not None})
        return SearchResponse(raw["query"], [Hit.from_json(h) for h in raw["results"]], raw["timings_ms"])

    def search_batch(self, queries: list[str], top_k: int | None = None, stage: str | None = None,
                     filter: dict[str, Any] | None = None) -> list[SearchResponse]:
        body = {"queries": queries, "top_k": top_k, "stage": stage, "filter": filter}
        raw = self._call("POST", "/search/batch", json={k: v for k, v in body.items() if v is not None})
        return [SearchResponse(r["query"], [Hit.from_json(h) for h in r["results"]], raw["timings_ms"])
                for r in raw["responses"]]

    # -- documents ------------------------------------------------------------------------------------------

    def add(self, documents: Iterable[dict[str, Any]], upsert: bool = False, commit: bool = True) -> dict[str, Any]:
        """Add documents (`upsert`: replace those whose id exists); committed before this returns unless
        `commit=False`."""
        params = {"mode": "upsert" if upsert else "add", "commit": str(commit).lower()}
        return self._call("POST", "/documents", params=params, json=list(documents))

    def delete(self, ids: Iterable[str], commit: bool = True) -> dict[str, Any]:
        return self._call("POST", "/documents/delete", params={"commit": str(commit).lower()},
                          json={"ids": list(ids)})

    def commit(self) -> dict[str, Any]:
        return self._call("POST", "/commit")

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """One committed document, or None if the index does not hold it."""
        try:
            return self._call("GET", f"/documents/{_quote(doc_id)}")
        except ServerError as exc:
            if exc.status == 404:
                return None
            raise

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")


def _quote(doc_id: str) -> str:
    from urllib.parse import quote

    return quote(doc_id, safe="")
