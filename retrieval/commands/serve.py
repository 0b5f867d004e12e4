"""`twostage serve`: the HTTP service (`retrieval.server`) over one index, on uvicorn. It binds 127.0.0.1 unless
`--host` says otherwise; writes need the API key when one is set (`--api-key` or `TWOSTAGE_API_KEY`) and are
refused with `--read-only`."""

from __future__ import annotations

import argparse
import logging
import os

from retrieval import cli

SUMMARY = "Serve an index over HTTP: search, writes, health, stats, a web page (FastAPI + uvicorn)."
EXAMPLES = ("--index /tmp/idx/sample",
            "--index /tmp/idx/sample --config configs/hybrid.yaml --port 8080 --read-only")

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, help="index directory")
    p.add_argument("--config", help="pipeline YAML whose query-time settings replace the index's own")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=cli.Bounded(int, low=0, high=65535), default=8000)
    p.add_argument("--api-key", help="key that writes must send (X-API-Key); default: env TWOSTAGE_API_KEY")
    p.add_argument("--read-only", action="store_true", help="refuse every write (403)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser requests from this origin (repeatable; CORS is off without it)")
    p.add_argument("--batch-wait-ms", type=cli.Bounded(float, low=0), default=2.0,
                   help="how long a request waits for others to share its query encoding and reranking batch")
    p.add_argument("--no-shared-batches", action="store_true", help="encode and rerank each request on its own")
    p.add_argument("--ray", metavar="ADDRESS", help="serve a sharded index with one Ray actor per shard: 'local', "
                                                   "'auto' or a cluster address (needs the ray extra)")
    p.add_argument("--max-top-k", type=cli.positive_int, default=100)
    p.add_argument("--max-batch", type=cli.positive_int, default=64, help="queries per /search/batch request")
    p.add_argument("--max-body-bytes", type=cli.positive_int, default=4 * 1024 * 1024)
    p.add_argument("--request-timeout", type=cli.positive_float, default=30.0, help="seconds per request")


def settings_from(args: argparse.Namespace) -> object:
    from retrieval.server import ServerSettings

    key = args.api_key or os.environ.get("TWOSTAGE_API_KEY") or None
    return ServerSettings(api_key=key, read_only=args.read_only, cors_origins=args.cors_origin,
                          batch_wait_ms=args.batch_wait_ms, shared_batches=not args.no_shared_batches,
                          max_top_k=args.max_top_k, max_batch=args.max_batch, max_body_bytes=args.max_body_bytes,
                          request_timeout_s=args.request_timeout)


def run(args: argparse.Namespace) -> int:
    from index.extras import require

    require("fastapi", "serve", "twostage serve")
    uvicorn = require("uvicorn", "serve", "twostage serve")

    from retrieval import SearchPipeline
    from retrieval.server import create_app

    settings = settings_from(args)
    pipe = SearchPipeline.from_index(args.index, args.config, ray=args.ray)
    app = create_app(pipe, settings)
    writes = "refused (read-only)" if args.read_only else ("need the API key" if settings.api_key else "open")
    logger.info("serving %s on http://%s:%d (stages %s; writes %s)", args.index, args.host, args.port,
                ", ".join(pipe.stages), writes)
    if args.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None and not args.read_only:
        logger.warning("listening on %s with open writes: anyone who reaches it can change the index; set "
                       "--api-key or --read-only", args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
