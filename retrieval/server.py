"""The HTTP service: search, writes, health and stats over one index, on FastAPI (`twostage serve`).

Every answer is JSON; every error is `{"error": "<one line>"}` with a 4xx naming the problem (a limit, a bad
filter, a missing key) or a 5xx without any stack trace. Searches run in worker threads, so concurrent requests
share the reranker's batches (`retrieval.batching.SharedBatches`) and answer exactly what `SearchPipeline.query`
returns for the same settings. Writes go through the index's one `IndexWriter`, are committed before the answer
unless `?commit=false`, and the pipeline searches the new commit from the next request on.

Example:
    >>> from retrieval import SearchPipeline                                       # doctest: +SKIP
    >>> from retrieval.server import ServerSettings, create_app                    # doctest: +SKIP
    >>> app = create_app(SearchPipeline.from_index("/tmp/idx/sample"), ServerSettings())  # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)                            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from index.cluster import ClusterError
from index.filters import FilterError
from index.lock import IndexLockedError
from index.manifest import IndexDirError
from retrieval.pipeline import FUSED, RERANK, SearchPipeline, SearchResult

logger = logging.getLogger(__name__)

WEB_PAGE = Path(__file__).with_name("web") / "index.html"
TEXT_CHARS = 300  # of a result's text, unless full_text (as `twostage search --json`)


class ServerSettings(BaseModel):
    """What the server allows and how it batches; every limit, when exceeded, is a 4xx naming it."""

    model_config = ConfigDict(extra="forbid")

    api_key: str | None = Field(default=None, repr=False)  # writes need it when set; never logged
    read_only: bool = False
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    max_query_chars: int = Field(default=1000, ge=1)
    max_top_k: int = Field(default=100, ge=1)
    max_batch: int = Field(default=64, ge=1)
    max_filter_depth: int = Field(default=8, ge=1)
    max_documents: int = Field(default=1000, ge=1)  # per write request
    request_timeout_s: float = Field(default=30.0, gt=0)
    shared_batches: bool = True
    batch_wait_ms: float = Field(default=2.0, ge=0)
    cors_origins: list[str] = Field(default_factory=list)  # CORS is off unless origins are given


class ApiError(Exception):
    """An error answered as `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: str
    top_k: int | None = None
    stage: str | None = None
    filter: dict[str, Any] | None = None
    passages: bool = False
    full_text: bool = False


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[str]
    top_k: int | None = None
    stage: str | None = None
    filter: dict[str, Any] | None = None
    passages: bool = False
    full_text: bool = False


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str]


def result_json(result: SearchResult, full_text: bool = False) -> dict[str, Any]:
    """`SearchResult.to_dict()` with its text cut to TEXT_CHARS unless `full_text`, and `text_truncated` after it
    (what `twostage search --json` prints)."""
    cut = not full_text and len(result.text) > TEXT_CHARS
    out: dict[str, Any] = {}
    for key, value in result.to_dict().items():
        out[key] = value[:TEXT_CHARS] if key == "text" and cut else value
        if key == "text":
            out["text_truncated"] = cut
    return out


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


class _Latencies:
    """Request counts and latency percentiles per endpoint over the last `keep` requests of each."""

    def __init__(self, keep: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._ms: dict[str, deque[float]] = {}
        self._counts: dict[str, dict[str, int]] = {}

    def add(self, endpoint: str, status: int, ms: float) -> None:
        with self._lock:
            self._ms.setdefault(endpoint, deque(maxlen=10_000)).append(ms)
            counts = self._counts.setdefault(endpoint, {})
            key = f"{status // 100}xx"
            counts[key] = counts.get(key, 0) + 1

    def summary(self) -> dict[str, Any]:
        with self._lock:
            out = {}
            for endpoint, values in self._ms.items():
                arr = np.asarray(values)
                out[endpoint] = {"requests": dict(self._counts[endpoint]),
                                 **{f"p{p}_ms": round(float(np.percentile(arr, p)), 3) for p in (50, 95, 99)}}
            return out


class Service:
    """The state behind the app: the pipeline, the one writer (opened on the first write), the settings."""

    def __init__(self, pipeline: SearchPipeline, settings: ServerSettings) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.started = time.time()
        self.latencies = _Latencies()
        self._writer: Any = None
        self._write_lock = threading.Lock()
        self._flight_lock = threading.Lock()
        self.in_flight = 0  # searches in progress: a shared batch stops waiting once all of them have joined
        self.batches = None
        self.encodings: dict[str, Any] = {}  # retriever name -> SharedEncodings
        if settings.shared_batches:
            from retrieval.batching import SharedBatches, SharedEncodings

            wait = {"wait_ms": settings.batch_wait_ms, "in_flight": lambda: self.in_flight}
            if pipeline.reranker is not None and hasattr(pipeline.reranker, "predict"):
                self.batches = SharedBatches(pipeline.reranker, **wait)
                pipeline.reranker = self.batches
            # A refresh reopens retrievers with the models they hold, so the wrapped encoder stays in place.
            for retriever in pipeline.retrievers:
                encoder = getattr(retriever, "encoder", None)
                if encoder is not None and hasattr(encoder, "encode_queries"):
                    self.encodings[retriever.name] = retriever.encoder = SharedEncodings(encoder, **wait)

    # -- checks ---------------------------------------------------------------------------------------------

    def check_search(self, queries: list[str], top_k: int | None, stage: str | None,
                     flt: dict[str, Any] | None) -> None:
        s = self.settings
        if len(queries) > s.max_batch:
            raise ApiError(413, f"{len(queries)} queries in one batch; the limit is {s.max_batch} (max_batch)")
        for i, q in enumerate(queries):
            if len(q) > s.max_query_chars:
                where = "the query" if len(queries) == 1 else f"query #{i}"
                raise ApiError(413, f"{where} has {len(q)} characters; the limit is {s.max_query_chars} "
                                    "(max_query_chars)")
        if top_k is not None and not 1 <= top_k <= s.max_top_k:
            raise ApiError(400 if top_k < 1 else 413,
                           f"top_k must be between 1 and {s.max_top_k} (max_top_k), got {top_k}")
        if stage is not None and stage not in self.pipeline.stages:
            raise ApiError(400, f"stage {stage!r} is not available; available: {', '.join(self.pipeline.stages)}")
        if flt is not None and _depth(flt) > s.max_filter_depth:
            raise ApiError(413, f"the filter is nested {_depth(flt)} levels deep; the limit is "
                                f"{s.max_filter_depth} (max_filter_depth)")

    def model_free(self, stage: str | None) -> bool:
        """Whether answering at `stage` runs no model (BM25 alone): such a query takes well under a millisecond,
        less than handing it to a worker thread and back costs, so it runs on the event loop."""
        stage = stage or self.pipeline.final_stage
        # Shards on Ray answer from other processes (up to SHARD_TIMEOUT_S when one died): never on the event loop.
        if stage == RERANK or getattr(self.pipeline.index, "remote", False):
            return False
        return all(r.loaded_model() is None for r in self.pipeline.retrievers if stage in (r.name, FUSED))

    def check_write(self, api_key: str | None) -> None:
        if self.settings.read_only:
            raise ApiError(403, "this server is read-only (--read-only): writes are refused")
        key = self.settings.api_key
        if key is not None and (api_key is None or not hmac.compare_digest(api_key.encode(), key.encode())):
            raise ApiError(401, "writes need the API key: send it in the X-API-Key header "
                                "(or Authorization: Bearer <key>)")

    # -- work (in worker threads) ---------------------------------------------------------------------------

    def search(self, queries: list[str], top_k: int | None, stage: str | None, flt: dict[str, Any] | None,
               passages: bool, full_text: bool) -> tuple[list[list[dict[str, Any]]], dict[str, float]]:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        with self._flight_lock:
            self.in_flight += 1
        try:
            hits = self.pipeline.query_batch(queries, top_k=top_k, passages=passages, filter=flt, stage=stage,
                                             timings=timings)
        finally:
            with self._flight_lock:
                self.in_flight -= 1
        timings["total"] = (time.perf_counter() - start) * 1000
        return [[result_json(r, full_text) for r in h] for h in hits], {k: round(v, 3) for k, v in timings.items()}

    def writer(self) -> Any:
        if self._writer is None:
            from index.sharded_writer import open_writer

            models = {r.name: m for r in self.pipeline.retrievers if (m := r.loaded_model()) is not None}
            self._writer = open_writer(self.pipeline.index.path, models=models)
        return self._writer

    def write(self, action: Callable[[Any], Any], commit: bool) -> dict[str, Any]:
        with self._write_lock:
            writer = self.writer()
            try:
                count = action(writer)
            except Exception:
                writer.rollback()  # one request's changes are all or nothing
                raise
            out: dict[str, Any] = {"count": count, "committed": False, "pending": writer.pending}
            if commit:
                out.update(self._commit(writer))
            return out

    def commit(self) -> dict[str, Any]:
        with self._write_lock:
            return self._commit(self.writer())

    def _commit(self, writer: Any) -> dict[str, Any]:
        report = writer.commit()
        self.pipeline.refresh()
        return {"committed": True, "pending": False, "generation": report.generation,
                "added": report.added, "replaced": report.replaced, "deleted": report.deleted,
                "unknown": report.unknown, "documents": report.documents}

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def stats(self) -> dict[str, Any]:
        pipe = self.pipeline
        index = pipe.index
        reranker = pipe.reranker
        models = {r.name: getattr(r, "model_name", None) or index.model(r.name) for r in pipe.retrievers}
        out: dict[str, Any] = {
            "index": str(index.path), "generation": index.generation, "documents": len(index.store),
            "passages": index.num_rows, "segments": len(index.segments), "stages": pipe.stages,
            "models": models, "uptime_s": round(time.time() - self.started, 1),
            "endpoints": self.latencies.summary(), "read_only": self.settings.read_only,
        }
        if reranker is not None:
            out["reranker"] = {"model": getattr(reranker, "model_name", None),
                               "backend": getattr(reranker, "backend", None),
                               "precision": getattr(reranker, "precision", None)}
        if self.batches is not None or self.encodings:
            shared: dict[str, Any] = {"wait_ms": self.settings.batch_wait_ms}
            if self.batches is not None:
                shared.update(predict_calls=self.batches.calls, requests=self.batches.requests)
            if self.encodings:
                shared["query_encodings"] = {name: {"calls": e.calls, "requests": e.requests}
                                             for name, e in self.encodings.items()}
            out["shared_batches"] = shared
        return out


class _BodyTooLarge(Exception):
    pass


class _Guard:
    """Plain ASGI middleware (a fraction of a millisecond cheaper per request than FastAPI's `@app.middleware`):
    the body limit (on Content-Length, and counted while a chunked body is read), the request timeout, and each
    request's latency by route for /stats."""

    def __init__(self, app: Any, settings: ServerSettings, latencies: _Latencies) -> None:
        self.app = app
        self.settings = settings
        self.latencies = latencies

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        limit = self.settings.max_body_bytes
        state = {"status": 500, "started": False, "read": 0}
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)

        async def reply(status: int, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            state["status"], state["started"] = status, True
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        async def counted_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        too_large = f"the request body is over {limit} bytes (max_body_bytes)"
        try:
            if length is not None and (not length.isdigit() or int(length) > limit):
                await reply(413, too_large)
            else:
                await asyncio.wait_for(self.app(scope, counted_receive, tracked_send), self.settings.request_timeout_s)
        except _BodyTooLarge:
            if not state["started"]:
                await reply(413, too_large)
        except asyncio.TimeoutError:
            if not state["started"]:
                await reply(504, f"the request took over {self.settings.request_timeout_s:g} s (request_timeout_s)")
        finally:
            route = scope.get("route")
            method = scope["method"]
            endpoint = f"{method} {route.path}" if route is not None else f"{method} (unrouted)"
            self.latencies.add(endpoint, int(state["status"]), (time.perf_counter() - start) * 1000)


def create_app(pipeline: SearchPipeline, settings: ServerSettings | None = None) -> Any:
    """The FastAPI app over `pipeline` (see the module docstring); OpenAPI at `/docs`, the web page at `/`."""
    from fastapi import FastAPI, Header, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or ServerSettings()
    service = Service(pipeline, settings)

    @asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202 - FastAPI's signature
        yield
        service.close()

    app = FastAPI(title="twostage", version="1", lifespan=lifespan,
                  description="Two-stage retrieve-and-rerank search over one index.")
    app.state.service = service
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST",
                           "DELETE"], allow_headers=["Content-Type", "X-API-Key", "Authorization"])

    def error(status: int, message: str) -> Any:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Any:
        return error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        more = len(exc.errors()) - 1
        return error(422, f"{where}: {first.get('msg', 'invalid')}" + (f" (and {more} more)" if more > 0 else ""))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Any:
        logger.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    app.add_middleware(_Guard, settings=settings, latencies=service.latencies)

    async def in_thread(fn: Callable[..., Any], *args: Any, inline: bool = False) -> Any:
        try:
            return fn(*args) if inline else await run_in_threadpool(fn, *args)
        except ApiError:
            raise
        except (FilterError, IndexLockedError) as exc:
            raise ApiError(400 if isinstance(exc, FilterError) else 409, str(exc)) from None
        except (ValueError, TypeError) as exc:  # the library's own checks: UpdateError, bad stage, bad documents
            raise ApiError(400, " ".join(str(exc).split())) from None
        except (IndexDirError, ClusterError) as exc:  # ClusterError: a shard (or the Ray cluster) did not answer
            raise ApiError(503, " ".join(str(exc).split())) from None

    def key_of(x_api_key: str | None, authorization: str | None) -> str | None:
        if x_api_key is not None:
            return x_api_key
        if authorization is not None and authorization.lower().startswith("bearer "):
            return authorization[7:].strip()
        return None

    async def run_search(body: SearchBody) -> Any:
        service.check_search([body.q], body.top_k, body.stage, body.filter)
        results, timings = await in_thread(service.search, [body.q], body.top_k, body.stage, body.filter,
                                           body.passages, body.full_text, inline=service.model_free(body.stage))
        return JSONResponse({"query": body.q, "results": results[0], "timings_ms": timings})

    # -- search ---------------------------------------------------------------------------------------------

    @app.get("/search", summary="Search (query string)")
    async def search_get(q: str = Query(..., description="the query"), top_k: int | None = None,
                         stage: str | None = None,
                         filter: str | None = Query(None, description='JSON, e.g. {"year": {"gte": 2015}}'),
                         passages: bool = False, full_text: bool = False) -> Any:
        parsed = None
        if filter is not None:
            try:
                parsed = json.loads(filter)
            except json.JSONDecodeError as exc:
                raise ApiError(400, f"filter is not valid JSON ({exc.msg} at character {exc.pos})") from None
            if not isinstance(parsed, dict):
                raise ApiError(400, "filter must be a JSON object, e.g. {\"source\": \"pubmed\"}")
        return await run_search(SearchBody(q=q, top_k=top_k, stage=stage, filter=parsed, passages=passages,
                                           full_text=full_text))

    @app.post("/search", summary="Search (JSON body)")
    async def search_post(body: SearchBody) -> Any:
        return await run_search(body)

    @app.post("/search/batch", summary="Many queries, one set of settings")
    async def search_batch(body: BatchBody) -> Any:
        service.check_search(body.queries, body.top_k, body.stage, body.filter)
        results, timings = await in_thread(service.search, body.queries, body.top_k, body.stage, body.filter,
                                           body.passages, body.full_text)
        return JSONResponse({"responses": [{"query": q, "results": r} for q, r in zip(body.queries, results)],
                             "timings_ms": timings})

    # -- documents ------------------------------------------------------------------------------------------

    @app.post("/documents", summary="Add documents (or replace them with ?mode=upsert)")
    async def add_documents(documents: list[dict[str, Any]], mode: Literal["add", "upsert"] = "add",
                            commit: bool = True, x_api_key: str | None = Header(None),
                            authorization: str | None = Header(None)) -> dict[str, Any]:
        service.check_write(key_of(x_api_key, authorization))
        if len(documents) > settings.max_documents:
            raise ApiError(413, f"{len(documents)} documents in one request; the limit is {settings.max_documents} "
                                "(max_documents)")
        action = (lambda w: w.upsert(documents)) if mode == "upsert" else (lambda w: w.add(documents))
        return await in_thread(service.write, action, commit)

    @app.delete("/documents/{doc_id:path}", summary="Delete one document")
    async def delete_document(doc_id: str, commit: bool = True, x_api_key: str | None = Header(None),
                              authorization: str | None = Header(None)) -> dict[str, Any]:
        service.check_write(key_of(x_api_key, authorization))
        return await in_thread(service.write, lambda w: w.delete([doc_id]), commit)

    @app.post("/documents/delete", summary="Delete documents by id")
    async def delete_documents(body: DeleteBody, commit: bool = True, x_api_key: str | None = Header(None),
                               authorization: str | None = Header(None)) -> dict[str, Any]:
        service.check_write(key_of(x_api_key, authorization))
        if len(body.ids) > settings.max_documents:
            raise ApiError(413, f"{len(body.ids)} ids in one request; the limit is {settings.max_documents} "
                                "(max_documents)")
        return await in_thread(service.write, lambda w: w.delete(body.ids), commit)

    @app.post("/commit", summary="Commit pending writes")
    async def commit(x_api_key: str | None = Header(None),
                     authorization: str | None = Header(None)) -> dict[str, Any]:
        service.check_write(key_of(x_api_key, authorization))
        return await in_thread(service.commit)

    @app.get("/documents/{doc_id:path}", summary="One document as committed")
    async def get_document(doc_id: str) -> dict[str, Any]:
        def fetch() -> dict[str, Any] | None:
            index = pipeline.index
            return index.store.get([doc_id])[doc_id] if doc_id in index.document_ids else None

        doc = await in_thread(fetch)
        if doc is None:
            raise ApiError(404, f"no document {doc_id!r} in the index")
        return {"doc_id": doc_id, "title": doc["title"], "text": doc["text"], "metadata": doc["metadata"]}

    # -- service --------------------------------------------------------------------------------------------

    @app.get("/health", summary="Liveness, and whether the index is loaded")
    async def health() -> dict[str, Any]:
        index = pipeline.index
        return {"status": "ok", "index_loaded": True, "generation": index.generation, "documents": len(index.store)}

    @app.get("/stats", summary="Documents, segments, models, uptime, requests and latency per endpoint")
    async def stats() -> dict[str, Any]:
        return await in_thread(service.stats)

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(WEB_PAGE.read_text(encoding="utf-8"))

    return app
