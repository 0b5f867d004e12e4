"""What every script shares: logging set-up, `--debug`, `--json`, and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from index.documents import CorpusError
from index.manifest import IndexDirError
from index.models import ModelNotAvailableError
from retrieval.config import ConfigError

# OSError covers missing files, permissions, a path under a regular file, a full disk: all the user's to fix.
EXPECTED_ERRORS = (ConfigError, CorpusError, IndexDirError, ModelNotAvailableError, ValidationError, ValueError,
                   TypeError, OSError)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info logging")
    return p


def run(main: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> None:
    """Run `main(args)`; expected failures print `error: ...` on one line and exit 2 (--debug: traceback)."""
    level = logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("faiss.loader", "sentence_transformers", "httpx", "urllib3", "huggingface_hub", "transformers"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:  # the per-tensor "Loading weights" bar is noise in a CLI
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    try:
        code = main(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except EXPECTED_ERRORS as exc:
        if args.debug:
            raise
        message = str(exc).strip()
        first, _, rest = message.partition("\n")
        print(f"error: {first}" + (f"\n{rest}" if rest else ""), file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=float))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def format_results(query: str, hits: list, stages: list[str]) -> str:
    """A human-readable table: final rank and score, then each stage's score and rank."""
    lines = [f"\nquery: {query}"]
    if not hits:
        return "\n".join([*lines, "  (no results)"])
    lines.append(f"  {'rank':>4}  {'doc_id':<18} {'score':>9}  " + "  ".join(f"{s:>14}" for s in stages) + "  title")
    for r in hits:
        cols = "  ".join(f"{r.stages[s].score:>9.3f} #{r.stages[s].rank:<3}" if s in r.stages else f"{'-':>14}"
                         for s in stages)
        title = (r.title or r.text)[:60].replace("\n", " ")
        lines.append(f"  {r.rank:>4}  {r.doc_id[:18]:<18} {r.score:>9.4f}  {cols}  {title}")
    return "\n".join(lines)
