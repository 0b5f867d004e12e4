"""Build one index directory: documents store, BM25 statistics, embeddings + FAISS, and the manifest.

The build writes into a hidden temp directory beside the target and swaps it into place at the end, so a crash
at any point leaves the previous index intact; leftovers of crashed builds are removed by the next build. The swap
replaces the whole directory, so a build refuses to start (and to swap) while the target holds anything the
previous build did not write; a symlinked target is resolved, so the link stays and points to the new index.

Example:
    >>> from index.builder import build_index
    >>> build_index("../shared/datasets/scifact", "/tmp/scifact-index")  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import glob
import json
import logging
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from index.chunking import chunk_document
from index.components import Component, all_files, component_class
from index.config import RETRIEVERS, BuildConfig
from index.documents import Document, ReadStats, model_text, read_corpus
from index.fields import FIELDS_FILES, FieldIndex
from index.lock import WriterLock
from index.manifest import MANIFEST_FILE, IndexDirError, write_manifest
from index.progress import bar
from index.segments import LEFTOVER
from index.sharded import SHARDED_FILE, SHARDED_LEFTOVER
from index.store import STORE_FILE, StoreWriter
from index.version import library_version

logger = logging.getLogger(__name__)

LIBRARY_VERSION = library_version()
_RENAME_EXCHANGE = 2
# Every name a build writes; what a rebuild may replace when the previous manifest is too damaged to list its files.
_BUILD_FILES = frozenset({MANIFEST_FILE, STORE_FILE, *FIELDS_FILES, *all_files()})
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = 13  # sqlite3.SQLITE_FULL (named in the module only from Python 3.11)


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build; the message says what state the index at the target was left in."""


class DiskFullError(OSError):
    """The disk (or quota) filled up while a build wrote its temp directory; the target was not changed."""


@dataclass
class BuildReport:
    path: Path
    documents: int
    passages: int
    skipped_empty: int
    seconds: float
    bytes_on_disk: int
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase: reading, then each component
    skipped_files: dict[str, int] = field(default_factory=dict)  # folder corpora: files not read, by extension
    details: dict[str, Any] = field(default_factory=dict)  # a Ray build's workers, tasks, tasks per second


def _temp_name(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _temp_glob(target: Path, kind: str, pid: int | str = "*") -> list[Path]:
    # escaped: a name such as `idx[1]` must match itself, not a character class
    return list(target.parent.glob(f"{glob.escape(f'.{target.name}.{kind}-')}{pid}-*"))


def _test_pause(phase: str) -> None:
    """Test hook (crash-safety tests only): with TWOSTAGE_TEST_PAUSE_AT=<phase>, print a marker and wait to be
    killed. Phases: read, bm25, dense, manifest (all before the swap), swapped (after it, before cleanup)."""
    if os.environ.get("TWOSTAGE_TEST_PAUSE_AT") == phase:
        print(f"TWOSTAGE_PAUSED {phase}", flush=True)
        time.sleep(600)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(target: Path) -> list[Path]:
    """Remove temp/old directories that crashed builds of `target` left behind."""
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    if not target.exists():
        # A crash between the two renames of the fallback swap: put the previous index back first.
        olds = sorted(_temp_glob(target, "old"), key=lambda p: p.stat().st_mtime)
        for old in reversed(olds):
            if (old / MANIFEST_FILE).is_file():
                os.rename(old, target)
                logger.warning("restored the previous index at %s from an interrupted build", target)
                break
    for kind in ("tmp", "old"):
        for leftover in _temp_glob(target, kind):
            try:
                pid = int(leftover.name.rsplit("-", 2)[1])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and _pid_alive(pid):
                continue  # another build of the same target is running
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    if removed:
        logger.info("removed %d leftovers of interrupted builds next to %s", len(removed), target)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _swap_into_place(tmp: Path, target: Path) -> Path | None:
    """Put `tmp` at `target`; returns where the previous index now is (to be removed), None if there was none."""
    if not target.exists():
        os.rename(tmp, target)
        return None
    if _exchange(tmp, target):
        return tmp
    # Fallback: two renames; a crash between them leaves the old index at `.name.old-*`, which the next build
    # or `IndexDirectory.load` does not lose (clean_leftovers only removes it once a new index is in place).
    old = _temp_name(target, "old")
    os.rename(target, old)
    os.rename(tmp, target)
    return old


def _remove_previous(previous: Path, target: Path) -> None:
    # The new index is in place: failing to delete the old copy is no reason to report the build as failed.
    try:
        shutil.rmtree(previous)
    except OSError as exc:
        logger.warning("the new index is in place at %s, but its previous copy at %s could not be removed (%s); "
                       "the next build removes it", target, previous, exc)


def _resolve_output(given: Path) -> Path:
    """The real directory behind `given`: the swap renames directories, and renaming onto a symlink would replace
    the link (and leave the directory it pointed to behind) instead of the index."""
    try:
        target = given.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, before Python 3.13
        raise IndexDirError(f"--output {given} cannot be resolved ({exc}); fix the symlink or choose another "
                            "--output") from None
    if target.is_symlink():  # a loop that resolve() leaves as it is (Python 3.13+)
        raise IndexDirError(f"--output {given} cannot be resolved (a symlink loop); fix the symlink or choose "
                            "another --output")
    if target != given:
        logger.info("%s is a symlink; building the index where it points, at %s", given, target)
    return target


def _check_target(target: Path, corpus: Path) -> None:
    if target.exists():
        if not target.is_dir():
            raise IndexDirError(f"{target} exists and is a file; choose another --output")
        if any(target.iterdir()) and not _is_index(target):
            raise IndexDirError(
                f"{target} exists, is not empty and is not an index; refusing to replace it (choose another --output)"
            )
    real_corpus = Path(os.path.realpath(corpus.expanduser()))
    if real_corpus == target or target in real_corpus.parents:
        raise IndexDirError(f"the corpus {corpus} lies inside the output directory {target}, which a rebuild "
                            "replaces as a whole; move the corpus out of it or choose another --output")
    _refuse_foreign_entries(target)


def _is_index(target: Path) -> bool:
    """An index (`manifest.json`) or a sharded one (`sharded.json`, `index.sharded`)."""
    return (target / MANIFEST_FILE).is_file() or (target / SHARDED_FILE).is_file()


def _previous_build_files(target: Path) -> set[str]:
    """What the build that wrote `target` put there: the files its manifest lists, and the manifest. A manifest
    too damaged to say counts as listing every name a build writes, so that a rebuild can still repair it."""
    if (target / SHARDED_FILE).is_file() and not (target / MANIFEST_FILE).is_file():
        try:
            top = json.loads((target / SHARDED_FILE).read_bytes())
            listed = [*top.get("files", {}), *top.get("shards", [])]
        except (OSError, ValueError, AttributeError, TypeError, RecursionError):
            listed = [n for n in os.listdir(target) if SHARDED_LEFTOVER.fullmatch(n)]
        own = {n for n in os.listdir(target) if SHARDED_LEFTOVER.fullmatch(n)}
        return {SHARDED_FILE, *(n for n in listed if isinstance(n, str)), *own}
    try:
        listed = json.loads((target / MANIFEST_FILE).read_bytes()).get("files")
    except (OSError, ValueError, AttributeError, RecursionError):
        listed = None
    if not isinstance(listed, dict) or not listed:
        listed = _BUILD_FILES
    # What an interrupted update left (its unlisted segment files, its temp folder) is the index's too.
    own = {name for name in os.listdir(target) if LEFTOVER.fullmatch(name)}
    return {MANIFEST_FILE, *(name for name in listed if isinstance(name, str)), *own}


def _refuse_foreign_entries(target: Path) -> None:
    """The swap replaces the whole directory: anything in it that the previous build did not write would be lost."""
    if not _is_index(target):
        return  # absent or empty (a non-empty directory that is not an index is refused by _check_target)
    foreign = sorted(set(os.listdir(target)) - _previous_build_files(target))
    if foreign:
        shown = ", ".join(repr(name) for name in foreign[:5]) + (f" and {len(foreign) - 5} more"
                                                                if len(foreign) > 5 else "")
        raise IndexDirError(f"{target} holds entries that are not part of the index (not in its {MANIFEST_FILE}): "
                            f"{shown}; a rebuild replaces the whole directory and would delete them: move them out "
                            f"of {target} or choose another --output")


def _disk_full_errno(exc: BaseException) -> int | None:
    """ENOSPC or EDQUOT when `exc`, or what it was raised from, says the disk is full, in the words of Python
    (OSError), SQLite (SQLITE_FULL) or a C library that reports strerror in a RuntimeError (faiss)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return current.errno
        if isinstance(current, sqlite3.Error) and (getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL
                                                   or "database or disk is full" in str(current)):
            return errno.ENOSPC
        if isinstance(current, RuntimeError):
            for code in _DISK_FULL_ERRNOS:
                if os.strerror(code) in str(current):
                    return code
        current = current.__cause__ or current.__context__
    return None


def _disk_full_error(target: Path, code: int) -> DiskFullError:
    err = DiskFullError(f"disk full while writing the index to {target} ({os.strerror(code)}); {target} is "
                        f"unchanged and the partial build was removed; free space on the disk holding {target.parent} "
                        "or choose another --output")
    err.errno = code  # for callers that test errno; set after construction, the message stays as written
    return err


def _same_directory(path: Path, identity: os.stat_result | None) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return identity is not None and (st.st_dev, st.st_ino) == (identity.st_dev, identity.st_ino)


def _interrupted(target: Path, tmp: Path, new_build: os.stat_result | None) -> str:
    """What Ctrl-C left at `target`, read from the file system (so it is right wherever the signal landed)."""
    own = os.getpid()
    if _same_directory(target, new_build):
        previous = sorted([*_temp_glob(target, "tmp", own), *_temp_glob(target, "old", own)])
        tail = f"; the next build removes the previous one, left at {previous[0]}" if previous else ""
        return f"interrupted after the swap: the new index is in place at {target}{tail}"
    shutil.rmtree(tmp, ignore_errors=True)
    if (target / MANIFEST_FILE).is_file():
        return f"interrupted before the swap: the index at {target} is untouched (the partial build was removed)"
    olds = _temp_glob(target, "old", own)
    if olds:
        return (f"interrupted during the swap: no index at {target} for now; the previous one waits at {olds[0]} "
                f"and the next build of {target} puts it back first")
    return f"interrupted before the swap: no index was made at {target} (the partial build was removed)"


def build_index(corpus: str | Path, output: str | Path, config: BuildConfig | None = None,
                encoder: Any | None = None, show_progress: bool = True,
                models: dict[str, Any] | None = None, pipeline: dict[str, Any] | None = None,
                into: Callable[..., BuildReport] | None = None) -> BuildReport:
    """Read `corpus`, build every enabled component, and put the index at `output` atomically.

    Parameters:
        corpus: a corpus file or folder in any format `index.documents.read_corpus` reads.
        output: the index directory (replaced as a whole, atomically, when it holds a previous index).
        config: what to build (`BuildConfig`; a pipeline config's `build_config()`).
        encoder: an already loaded bi-encoder to build the dense component with (else loaded from the config).
        models: already loaded models by retriever name (`{"dense": encoder}` is what `encoder` sets).
        show_progress: progress bars for reading and encoding (shown on a terminal only).
        pipeline: the whole pipeline config to store in the index (`PipelineConfig.stored()`), which searching
            the index without a config then uses.
        into: what writes the new index into the build's temp directory (`index.distributed` passes a Ray build);
            called as `into(corpus, tmp, config, models, show_progress, pipeline)`.
    """
    config = config or BuildConfig()
    given = Path(output).expanduser().absolute()
    target = _resolve_output(given)
    _check_target(target, Path(corpus))
    if not config.retrievers():
        raise ValueError("every first-stage retriever is disabled; enable at least one")
    models = {**(models or {}), **({"dense": encoder} if encoder is not None else {})}
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = WriterLock(target).acquire()  # no update may commit into the directory this build replaces
    except OSError as exc:
        code = _disk_full_errno(exc)
        if code is not None:
            raise _disk_full_error(target, code) from exc
        raise
    try:
        report = _build_locked(Path(corpus), target, config, models, show_progress, pipeline, into or _build_into)
    finally:
        lock.release()
    report.path = given
    report.bytes_on_disk = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())  # shards: folders
    return report


def _build_locked(corpus: Path, target: Path, config: BuildConfig, models: dict[str, Any], show_progress: bool,
                  pipeline: dict[str, Any] | None, into: Callable[..., BuildReport]) -> BuildReport:
    clean_leftovers(target)
    start = time.perf_counter()
    tmp = _temp_name(target, "tmp")
    new_build: os.stat_result | None = None
    try:
        tmp.mkdir()
        new_build = tmp.stat()
        report = into(corpus, tmp, config, models, show_progress, pipeline)
        _refuse_foreign_entries(target)  # again: something saved into the index while the build ran
        previous = _swap_into_place(tmp, target)
        _test_pause("swapped")
        if previous is not None:
            _remove_previous(previous, target)
    except KeyboardInterrupt as exc:
        raise BuildInterrupted(_interrupted(target, tmp, new_build)) from exc
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        code = _disk_full_errno(exc)
        if code is not None:
            raise _disk_full_error(target, code) from exc
        raise
    report.seconds = time.perf_counter() - start
    return report


@dataclass
class SegmentBuild:
    """What building one segment wrote into its directory: the files, the rows, seconds per phase, and what the
    manifest records about its components (`models`, `counts`, `embedding_dim`, ...)."""

    files: list[str]
    rows: int
    documents: int
    phases: dict[str, float]
    info: dict[str, Any]


def build_segment(docs: Iterable[Document], directory: Path, config: BuildConfig, models: dict[str, Any],
                  show_progress: bool, pause: Callable[[str], None] = lambda phase: None) -> SegmentBuild:
    """Write one segment's files (store, metadata columns, each enabled component) into `directory`, under their
    plain names: a build's whole index, or an update's new documents. Each document is read once, chunked, and
    each passage given to every component in row order."""
    writer = StoreWriter(directory, chunked=config.chunking is not None)
    components: list[Component] = [component_class(name)(name, cfg, models.get(name))
                                   for name, cfg in config.retrievers().items()]
    metadata: list[dict[str, Any]] = []
    phases: dict[str, float] = {}
    start = time.perf_counter()
    documents = 0
    try:
        for doc in bar(docs, "reading documents", "doc", show=show_progress):
            passages = list(chunk_document(doc, config.chunking))
            writer.add(doc, passages)
            documents += 1
            for p in passages:
                metadata.append(doc.metadata)
                text = model_text(p.title, p.text)
                for component in components:
                    component.add(text)
        files = [writer.close()]
    except BaseException:
        # An open handle would keep the deleted store's space in use, and a full disk full.
        writer.conn.close()
        raise
    files += FieldIndex.build(metadata).save(directory)
    del metadata
    phases["read"] = time.perf_counter() - start
    pause("read")
    info: dict[str, Any] = {"components": []}
    for component in components:
        start = time.perf_counter()
        found = component.finish(directory, show_progress)
        phases[component.name] = time.perf_counter() - start
        files += list(type(component).FILES)
        info["components"].append(component.name)
        merge_info(info, found)
        pause(component.name)
    return SegmentBuild(files, writer.rows, documents, phases, info)


def merge_info(manifest: dict[str, Any], info: dict[str, Any]) -> None:
    """Fold what a component reports into the manifest: dicts (`models`, `counts`) key by key."""
    for key, value in info.items():
        if isinstance(value, dict):
            manifest.setdefault(key, {}).update(value)
        else:
            manifest[key] = value


def _build_into(corpus: Path, tmp: Path, config: BuildConfig, models: dict[str, Any], show_progress: bool,
                pipeline: dict[str, Any] | None) -> BuildReport:
    stats = ReadStats()
    built = build_segment(read_corpus(corpus, config.corpus, stats), tmp, config, models, show_progress,
                          _test_pause)
    return write_built(corpus, tmp, config, pipeline, stats, built)


def write_built(corpus: Path, tmp: Path, config: BuildConfig, pipeline: dict[str, Any] | None, stats: ReadStats,
                built: SegmentBuild) -> BuildReport:
    """Write the manifest of a built segment 0 (`build_segment`'s files in `tmp`)."""
    manifest: dict = {
        "library_version": LIBRARY_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "corpus": str(corpus),
        # A retriever that is not configured at all is left out, so an index without it reads as one written
        # before the retriever existed (older versions refuse keys they do not know).
        "config": {k: v for k, v in config.model_dump(mode="json").items() if not (k in RETRIEVERS and v is None)},
        "counts": {"documents": stats.documents, "passages": built.rows, "skipped_empty": stats.skipped_empty,
                   **({"skipped_files": dict(stats.skipped_files)} if stats.skipped_files else {})},
    }
    if pipeline is not None:
        manifest["pipeline"] = pipeline
    merge_info(manifest, built.info)
    start = time.perf_counter()
    write_manifest(tmp, manifest, built.files)
    built.phases["manifest"] = time.perf_counter() - start
    _test_pause("manifest")
    return BuildReport(tmp, stats.documents, built.rows, stats.skipped_empty, 0.0, 0, built.phases,
                       dict(stats.skipped_files))
