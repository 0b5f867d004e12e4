"""Build one index directory: documents store, BM25 statistics, embeddings + FAISS, and the manifest.

The build writes into a hidden temp directory beside the target and swaps it into place at the end, so a crash
at any point leaves the previous index intact; leftovers of crashed builds are removed by the next build.

Example:
    >>> from index.builder import build_index
    >>> build_index("../shared/datasets/scifact", "/tmp/scifact-index")  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from index.analyzer import Analyzer
from index.bm25 import BM25Stats
from index.chunking import chunk_document
from index.config import BuildConfig
from index.dense import CHARS_PER_TOKEN_CAP, EMBEDDINGS_FILE, Encoder, build_faiss, save_faiss
from index.documents import ReadStats, read_corpus
from index.manifest import MANIFEST_FILE, IndexDirError, write_manifest

logger = logging.getLogger(__name__)

LIBRARY_VERSION = "0.1.0"
_RENAME_EXCHANGE = 2


@dataclass
class BuildReport:
    path: Path
    documents: int
    passages: int
    skipped_empty: int
    seconds: float
    bytes_on_disk: int


def _temp_name(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


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
        olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
        for old in reversed(olds):
            if (old / MANIFEST_FILE).is_file():
                os.rename(old, target)
                logger.warning("restored the previous index at %s from an interrupted build", target)
                break
    for kind in ("tmp", "old"):
        for leftover in target.parent.glob(f".{target.name}.{kind}-*"):
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


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        return
    if _exchange(tmp, target):
        _test_pause("swapped")
        shutil.rmtree(tmp)  # now holds the previous index
        return
    # Fallback: two renames; a crash between them leaves the old index at `.name.old-*`, which the next build
    # or `IndexDirectory.load` does not lose (clean_leftovers only removes it once a new index is in place).
    old = _temp_name(target, "old")
    os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old)


def _check_target(target: Path) -> None:
    if target.exists():
        if not target.is_dir():
            raise IndexDirError(f"{target} exists and is a file; choose another --output")
        if any(target.iterdir()) and not (target / MANIFEST_FILE).is_file():
            raise IndexDirError(
                f"{target} exists, is not empty and is not an index; refusing to replace it (choose another --output)"
            )


def build_index(corpus: str | Path, output: str | Path, config: BuildConfig | None = None,
                encoder: Encoder | None = None, show_progress: bool = True) -> BuildReport:
    """Read `corpus`, build every enabled component, and put the index at `output` atomically."""
    config = config or BuildConfig()
    target = Path(output).expanduser().absolute()
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    if not config.bm25.enabled and not config.dense.enabled:
        raise ValueError("both bm25 and dense are disabled; enable at least one first-stage retriever")
    start = time.perf_counter()
    tmp = _temp_name(target, "tmp")
    tmp.mkdir()
    try:
        report = _build_into(Path(corpus), tmp, config, encoder, show_progress)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.path = target
    report.seconds = time.perf_counter() - start
    report.bytes_on_disk = sum(f.stat().st_size for f in target.iterdir() if f.is_file())
    return report


def _build_into(corpus: Path, tmp: Path, config: BuildConfig, encoder: Encoder | None,
                show_progress: bool) -> BuildReport:
    from index.store import StoreWriter

    stats = ReadStats()
    analyzer = Analyzer(config.bm25.analyzer)
    writer = StoreWriter(tmp, chunked=config.chunking is not None)
    tokens: list[list[str]] = []
    terms: dict[str, str] = {}  # one string object per distinct term keeps the token lists small
    dense_texts: list[str] = []
    docs = read_corpus(corpus, config.corpus, stats)
    for doc in tqdm(docs, desc="reading", unit="doc", disable=not show_progress):
        passages = list(chunk_document(doc, config.chunking))
        writer.add(doc, passages)
        for p in passages:
            joined = f"{p.title}\n{p.text}" if p.title else p.text
            if config.bm25.enabled:
                tokens.append([terms.setdefault(t, t) for t in analyzer.tokenize(joined)])
            if config.dense.enabled:
                dense_texts.append(joined[: 512 * CHARS_PER_TOKEN_CAP])
    files = [writer.close()]
    _test_pause("read")
    manifest: dict = {
        "library_version": LIBRARY_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "corpus": str(corpus),
        "config": config.model_dump(mode="json"),
        "counts": {"documents": stats.documents, "passages": writer.rows, "skipped_empty": stats.skipped_empty},
        "components": [],
    }
    if config.bm25.enabled:
        bm25 = BM25Stats.build(tokens)
        files += bm25.save(tmp)
        manifest["components"].append("bm25")
        manifest["counts"]["vocabulary"] = len(bm25.vocab)
        del tokens, terms
        _test_pause("bm25")
    if config.dense.enabled:
        encoder = encoder or Encoder(config.dense.model, config.dense)
        emb = encoder.encode_documents(dense_texts, show_progress=show_progress)
        np.save(tmp / EMBEDDINGS_FILE, emb, allow_pickle=False)
        files += [EMBEDDINGS_FILE, save_faiss(build_faiss(emb, config.dense.faiss), tmp)]
        manifest["components"].append("dense")
        manifest["models"] = {"dense": config.dense.model}
        manifest["embedding_dim"] = int(emb.shape[1])
        _test_pause("dense")
    write_manifest(tmp, manifest, files)
    _test_pause("manifest")
    return BuildReport(tmp, stats.documents, writer.rows, stats.skipped_empty, 0.0, 0)
