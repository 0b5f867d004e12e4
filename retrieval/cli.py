"""The `twostage` command, and what its subcommands (`retrieval/commands/`) and the scripts share: logging
set-up, `--debug`, `--quiet`, `--json`, bounded number types, strict JSON, terminal-safe tables, and one-line
errors instead of tracebacks.

Each subcommand is a module of `retrieval.commands` with `SUMMARY` (one line), `EXAMPLES` (its options in an
example command line each), `add_arguments(parser)` and `run(args) -> int`; `scripts/<name>.py` runs the same
module through `script()`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
from pydantic import ValidationError

from index.cluster import ClusterError
from index.documents import CorpusError
from index.extras import MissingExtraError
from index.lock import IndexLockedError
from index.manifest import IndexDirError
from index.runtime.models import ModelNotAvailableError
from index.version import library_version
from retrieval.commands.snippet import result_text, snippet
from retrieval.config import ConfigError

# The checkout (the project is installed editable): where the default configs and the sample corpus are.
ROOT = Path(__file__).resolve().parent.parent
# `twostage` subcommand -> its module in retrieval.commands, in the order `twostage --help` lists them.
COMMANDS = {"build": "build", "update": "update", "search": "search", "eval": "evaluate",
            "train-reranker": "train_reranker", "tune-fusion": "tune_fusion",
            "rerank-options": "rerank_options", "bench": "benchmark", "demo": "demo",
            "gpu-check": "gpu_check", "distill-reranker": "distill_reranker", "serve": "serve",
            "load-test": "load_test"}
# OSError covers missing files, permissions, a path under a regular file, a full disk: all the user's to fix.
EXPECTED_ERRORS = (ConfigError, CorpusError, IndexDirError, IndexLockedError, ModelNotAvailableError, MissingExtraError,
                   ClusterError, ValidationError, ValueError, TypeError, OSError)


def metadata_filter(text: str) -> Any:
    """`--filter '<JSON>'`: its syntax checked now (a usage error saying where); fields are checked at search."""
    from index.filters import FilterError, parse_filter_json

    try:
        return parse_filter_json(text)
    except FilterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info logging")


def parser(description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """A script's parser: `--debug` and `--quiet`, the description, and an epilog shown as written."""
    p = argparse.ArgumentParser(description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(p)
    return p


def command(name: str) -> ModuleType:
    """The module of `twostage <name>` (a key of `COMMANDS`)."""
    return importlib.import_module(f"retrieval.commands.{COMMANDS[name]}")


def examples(module: ModuleType, shown_as: str) -> str:
    """A command's `EXAMPLES` as an epilog: one command line each, run as `shown_as`."""
    lines = [f"{shown_as} {options}".rstrip() for options in module.EXAMPLES]
    return f"example{'s' if len(lines) > 1 else ''}:\n" + "\n".join(f"  {line}" for line in lines)


def script(module: ModuleType) -> None:
    """`python scripts/<name>.py`: the command's options on a parser of the script's own, then `run`. Usage errors
    are argparse's (`<script>: error: ...` after the usage line)."""
    p = parser(module.SUMMARY, examples(module, f"python scripts/{Path(sys.argv[0]).name}"))
    module.add_arguments(p)
    run(module.run, p.parse_args())


class _OneLineParser(argparse.ArgumentParser):
    """`twostage`'s parsers: a usage error is one `error:` line and a pointer to the help, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\nsee: {self.prog} --help\n")


def twostage_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The `twostage` parser and one subparser per command (each with its examples)."""
    modules = {name: command(name) for name in COMMANDS}
    first = "\n".join(f"  twostage {name} {m.EXAMPLES[0]}".rstrip() for name, m in modules.items())
    top = _OneLineParser(prog="twostage", formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Two-stage retrieve-and-rerank search: BM25, dense and SPLADE retrievers, "
                                     "fused, then a cross-encoder reranker.",
                         epilog=f"examples:\n{first}\n\n'twostage COMMAND --help' lists a command's options "
                                "and more examples.")
    top.add_argument("--version", action="version", version=f"twostage {library_version()}")
    # Also before the command (`twostage --quiet build ...`); own names, since a subparser's defaults would
    # overwrite the same names set here.
    top.add_argument("--debug", dest="debug_all", action="store_true", help="show full tracebacks and debug logging")
    top.add_argument("--quiet", dest="quiet_all", action="store_true", help="no progress bars or info logging")
    sub = top.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    subs = {}
    for name, module in modules.items():
        p = sub.add_parser(name, help=module.SUMMARY, description=module.SUMMARY,
                           epilog=examples(module, f"twostage {name}"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common_options(p)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
        subs[name] = p
    return top, subs


def main(argv: list[str] | None = None) -> None:
    """The `twostage` command (the `[project.scripts]` entry point)."""
    top, subs = twostage_parser()
    args, unknown = top.parse_known_args(argv)
    if unknown:  # named by the command's parser, so that the hint points at that command's options
        subs.get(args.command, top).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        top.error(f"no command given; choose one of: {', '.join(COMMANDS)}")
    args.debug, args.quiet = args.debug or args.debug_all, args.quiet or args.quiet_all
    run(args.handler, args)


@dataclass(frozen=True)
class Bounded:
    """An argparse `type=`: a finite number of `kind` within bounds (or one of `also`). Its error states the bound
    and argparse names the option: `error: argument --k: must be an integer >= 1, got '0'` (usage error, exit 2)."""

    kind: type[int] | type[float]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[int, ...] = ()

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            value = None
        # ints are always finite (and may be too large for math.isfinite); float() also reads "nan" and "inf"
        finite = value is not None and (self.kind is int or math.isfinite(value))
        if not finite or not (value in self.also or self._inside(value)):
            shown = text if len(text) <= 40 else f"{text[:37]}..."  # a pasted blob stays one short line
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {shown!r}")
        return value

    def _inside(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        def num(v: float) -> str:
            return f"{v:.0f}" if self.kind is int else f"{v:g}"

        if self.low is not None and self.high is not None:
            bound = (f"in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}"
                     f"{')' if self.high_open else ']'}")
        elif self.low is not None:
            bound = f"{'>' if self.low_open else '>='} {num(self.low)}"
        elif self.high is not None:
            bound = f"{'<' if self.high_open else '<='} {num(self.high)}"
        else:
            bound = "(finite)"
        noun = "an integer" if self.kind is int else "a number"
        return f"{noun} {bound}" + "".join(f" or {v}" for v in self.also)


positive_int = Bounded(int, low=1)
non_negative_int = Bounded(int, low=0)
seed = Bounded(int, low=0, high=2**32 - 1)  # what numpy (and so transformers' set_seed) accepts
positive_float = Bounded(float, low=0, low_open=True)
fraction = Bounded(float, low=0, high=1)


def int_list(item: Bounded) -> Callable[[str], list[int]]:
    """An argparse `type=` for comma-separated integers, each checked by `item`."""

    def parse(text: str) -> list[int]:
        try:
            return [int(item(part)) for part in text.split(",")]
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be comma-separated, each {item.describe()}, got {text!r}") from None

    return parse


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
    except KeyboardInterrupt as exc:
        # A build's interrupt says what state the index is in ("interrupted after the swap: ..."); Ctrl-C elsewhere
        # carries no message.
        print(f"error: {str(exc).strip() or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    except EXPECTED_ERRORS as exc:
        if args.debug:
            raise
        message = str(exc).strip()
        first, _, rest = message.partition("\n")
        print(f"error: {first}" + (f"\n{rest}" if rest else ""), file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def to_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON (RFC 8259), which any parser reads: NaN and +-Infinity, which `json.dumps` would write as bare
    words, become null; numpy scalars and arrays become numbers and lists."""
    return json.dumps(_json_safe(obj), ensure_ascii=False, allow_nan=False, indent=indent)


def _json_safe(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_json_safe(k) if isinstance(k, (float, np.generic)) else k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def print_json(obj: Any) -> None:
    print(to_json(obj))


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    """A command's closing summary: JSON alone on stdout with `--json`, else one `key value` line per entry."""
    if as_json:
        print_json(summary)
        return
    for k, v in summary.items():
        print(f"{k:<12} {to_json(v) if isinstance(v, dict | list) else v}")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


# What a terminal acts on or a table breaks at: C0 and C1 controls and DEL (ANSI escape sequences start with ESC
# or CSI), line and paragraph separators, and the bidirectional marks, embeddings, overrides and isolates that can
# make a line display in another order than it reads (Trojan Source).
_UNSAFE = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
           *range(0x2066, 0x206A)]
_ESCAPED = {c: ascii(chr(c))[1:-1] for c in _UNSAFE}  # "\x1b", "\n", "\u202e": visible, and one line


def terminal_safe(text: str) -> str:
    """`text` with every character a terminal would act on shown as its Python escape (ESC as `\x1b`)."""
    return text.translate(_ESCAPED)


def format_results(query: str, hits: list, stages: list[str], matches: Callable[[str], bool] | None = None,
                   bold: bool = False) -> str:
    """A human-readable table: final rank and score, then each stage's score and rank, the title and, given
    `matches` (`snippet.term_matcher`), a snippet of the matching passage with the query's terms marked (bold:
    in bold, else `[term]`). Ids, titles, snippets and the query are shown through `terminal_safe`, so each
    result is one line of inert text."""
    lines = [f"\nquery: {terminal_safe(query)}"]
    if not hits:
        return "\n".join([*lines, "  (no results)"])
    header = "title | snippet" if matches is not None else "title"
    lines.append(f"  {'rank':>4}  {'doc_id':<18} {'score':>9}  " + "  ".join(f"{s:>14}" for s in stages)
                 + f"  {header}")
    for r in hits:
        cols = "  ".join(f"{r.stages[s].score:>9.3f} #{r.stages[s].rank:<3}" if s in r.stages else f"{'-':>14}"
                         for s in stages)
        # A title (or the text standing in for one) is prose: its line breaks and tabs are spaces here.
        title = terminal_safe(" ".join((r.title or r.text)[:60].split()))
        if matches is not None:
            shown = snippet(result_text(r), matches, terminal_safe, bold)
            title = f"{title} | {shown}" if r.title else shown
        lines.append(f"  {r.rank:>4}  {terminal_safe(r.doc_id)[:18]:<18} {r.score:>9.4f}  {cols}  {title}")
    return "\n".join(lines)
