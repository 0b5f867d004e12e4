"""Helpers shared by the reliability tests (bad input, damaged indexes, crashes, threads)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from index.config import BuildConfig

QUERIES = ["why does the ocean have tides", "bacteria resistant to drugs", "how long should adults sleep",
           "cross-encoders rerank search results", "volcano eruption", "the", ""]


def bm25_only(**extra) -> BuildConfig:
    """A build config without the dense stage: no model to load, so builds take milliseconds."""
    return BuildConfig.model_validate({"dense": {"enabled": False}, **extra})


def bm25_pipeline_config(index_path: Path) -> dict:
    return {"index": {"path": str(index_path)}, "first_stage": {"dense": {"enabled": False}}}


def answers(pipe, queries: Sequence[str] = QUERIES, top_k: int = 10) -> list[list[tuple]]:
    """Everything a caller sees of the results, as plain comparable values (exact floats)."""
    return [[(r.doc_id, r.score, r.rank, r.title, r.text, tuple(sorted((k, v.score, v.rank) for k, v in
                                                                        r.stages.items()))) for r in hits]
            for hits in pipe.query_batch(list(queries), top_k=top_k)]


def leftovers(target: Path) -> list[Path]:
    """Hidden temp/old directories that builds of `target` put beside it (not the writer lock file, which a killed
    build leaves too: the next writer takes it over, see tests/index/test_lock.py)."""
    return sorted(p for p in target.parent.glob(f".{target.name}.*") if p.name != f".{target.name}.lock")


def copy_index(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def wait_for_marker(proc: subprocess.Popen, phase: str) -> None:
    """Read `proc`'s output until the test hook says it paused at `phase` (TWOSTAGE_TEST_PAUSE_AT)."""
    for line in proc.stdout:
        if line.strip() == f"TWOSTAGE_PAUSED {phase}":
            return
    proc.wait()
    raise AssertionError(f"the process ended (rc={proc.returncode}) without pausing at {phase!r}: {proc.stderr.read()}")


def kill_when_paused(procs: Mapping[str, subprocess.Popen]) -> None:
    """SIGKILL each process (by the phase it pauses at) once it has paused there; none is left running."""
    try:
        for phase, proc in procs.items():
            wait_for_marker(proc, phase)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
