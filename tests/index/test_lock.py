"""One writer per index: a second `IndexWriter` (in this process or another) and a build over the index are refused
with `IndexLockedError` naming the holder's pid, while nothing on disk changes; closing the writer removes the lock
file and lets the next one in."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from index.builder import build_index
from index.lock import IndexLockedError, lock_path
from index.writer import IndexWriter
from tests.conftest import ROOT, SAMPLE_CORPUS
from tests.reliability import bm25_only

TWOSTAGE = Path(sys.executable).parent / "twostage"
NEW_DOC = {"_id": "new-doc", "title": "Glaciers", "text": "Glaciers carve valleys as the ice moves downhill."}


@pytest.fixture
def index(tmp_path) -> Path:
    path = tmp_path / "idx"
    build_index(SAMPLE_CORPUS, path, bm25_only(), show_progress=False)
    return path


@pytest.fixture
def new_docs(tmp_path) -> Path:
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps(NEW_DOC) + "\n")
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (the index and the lock file beside it) by relative path: its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_second_writer_in_the_same_process_is_refused_naming_the_holder(index, tmp_path):
    with IndexWriter(index) as writer:
        writer.add([NEW_DOC])  # pending, not committed
        before = snapshot(tmp_path)
        with pytest.raises(IndexLockedError, match=rf"by process {os.getpid()} \(lock file "):
            IndexWriter(index)
        assert snapshot(tmp_path) == before
        assert lock_path(index).read_text() == str(os.getpid())
        writer.commit()  # the holder is not disturbed by the refusal
    assert not lock_path(index).exists()
    with IndexWriter(index) as writer:  # and the next one gets in
        assert "new-doc" in writer


def test_the_lock_file_is_removed_on_close_even_after_an_error(index):
    lock = lock_path(index)
    assert lock == index.parent / ".idx.lock" and not lock.exists()
    writer = IndexWriter(index)
    assert lock.is_file()
    writer.close()
    assert not lock.exists()
    writer.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="boom"), IndexWriter(index):
        assert lock.is_file()
        raise RuntimeError("boom")
    assert not lock.exists()


def test_a_build_over_a_held_index_is_refused_and_the_index_untouched(index, tmp_path):
    with IndexWriter(index):
        before = snapshot(tmp_path)
        with pytest.raises(IndexLockedError, match=rf"by process {os.getpid()} "):
            build_index(SAMPLE_CORPUS, index, bm25_only(), show_progress=False)
        assert snapshot(tmp_path) == before
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx.") and p.name != ".idx.lock"]


def test_a_writer_in_another_process_is_refused_while_this_one_holds_the_lock(index, new_docs, tmp_path):
    """`twostage update` from another process: one error line naming this process, exit 2, nothing changed."""
    with IndexWriter(index):
        before = snapshot(tmp_path)
        out = subprocess.run([str(TWOSTAGE), "update", "--quiet", "--index", str(index), "--add", str(new_docs)],
                             capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                             timeout=120)
        assert (out.returncode, out.stdout) == (2, ""), out.stderr
        assert "Traceback" not in out.stderr
        (line,) = out.stderr.splitlines()
        assert line.startswith("error: ") and f"by process {os.getpid()} " in line, out.stderr
        assert snapshot(tmp_path) == before


def test_this_process_is_refused_while_another_process_holds_the_lock(index, new_docs, tmp_path):
    """An update paused mid-commit in another process holds the lock: a writer and a build here are refused,
    naming its pid; once it is gone (killed), the lock is free again."""
    env = {**os.environ, "TWOSTAGE_TEST_PAUSE_AT": "update-segment", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "update_index.py"), "--quiet", "--index",
                             str(index), "--add", str(new_docs)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "TWOSTAGE_PAUSED update-segment", (line, proc.stderr.read() if not line else "")
        before = snapshot(tmp_path)
        assert lock_path(index).read_text() == str(proc.pid)
        with pytest.raises(IndexLockedError, match=rf"by process {proc.pid} "):
            IndexWriter(index)
        with pytest.raises(IndexLockedError, match=rf"by process {proc.pid} "):
            build_index(SAMPLE_CORPUS, index, bm25_only(), show_progress=False)
        assert snapshot(tmp_path) == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    with IndexWriter(index) as writer:  # the killed holder's lock is taken over
        assert "new-doc" not in writer
    assert not lock_path(index).exists()
