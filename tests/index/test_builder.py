from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import index.builder as builder
from index.builder import build_index
from index.dense import Encoder
from index.directory import IndexDirectory
from index.manifest import MANIFEST_FILE, IndexDirError, sha256_file
from retrieval.config import load_config
from tests.conftest import ROOT, SAMPLE_CORPUS, pipeline_config
from tests.reliability import bm25_only, bm25_pipeline_config, leftovers


def test_manifest_describes_the_index(sample_index, tiny_bi_encoder):
    manifest = json.loads((sample_index / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 1  # one build, never updated: still readable by format-1 libraries
    assert manifest["counts"]["documents"] == 24 and manifest["counts"]["passages"] == 24
    assert manifest["models"]["dense"] == str(tiny_bi_encoder)
    assert manifest["embedding_dim"] == 32
    assert set(manifest["files"]) == {"documents.sqlite", "fields.npz", "fields.json", "bm25.npz", "bm25_vocab.json",
                                      "embeddings.npy", "faiss.index"}
    for name, info in manifest["files"].items():
        assert sha256_file(sample_index / name) == info["sha256"]
    assert not any(p.name.endswith((".pkl", ".pickle")) for p in sample_index.iterdir())


def test_roundtrip_loads_everything(sample_index):
    idx = IndexDirectory.load(sample_index)
    assert len(idx.store) == 24 and idx.bm25.num_docs == 24 and idx.faiss_index.ntotal == 24
    doc = idx.store.get(["tides"])["tides"]
    assert doc["title"] == "Why the sea has tides"
    assert np.allclose(np.linalg.norm(idx.embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("faiss_type", ["hnsw", "ivf", "sq8"])
def test_faiss_types_build_and_find_exact_neighbour(tmp_path, tiny_bi_encoder, faiss_type):
    from index.config import FaissConfig
    from index.dense import search_faiss

    cfg = load_config(pipeline_config(tmp_path / "i", tiny_bi_encoder, dense={"faiss": {"type": faiss_type}}))
    build_index(SAMPLE_CORPUS, tmp_path / "i", cfg.build_config(), show_progress=False)
    idx = IndexDirectory.load(tmp_path / "i")
    ids, _ = search_faiss(idx.faiss_index, np.asarray(idx.embeddings[:5]), 1,
                          FaissConfig(type=faiss_type, nprobe=64))
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_chunked_build_stores_passages(tmp_path, tiny_bi_encoder):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"_id": "long", "text": " ".join(f"w{i}" for i in range(100))}) + "\n"
                      + json.dumps({"_id": "short", "text": "tiny"}) + "\n")
    cfg = load_config(pipeline_config(tmp_path / "i", tiny_bi_encoder) | {"index": {"chunking": {"max_words": 40,
                                                                                                 "overlap": 10}}})
    report = build_index(corpus, tmp_path / "i", cfg.build_config(), show_progress=False)
    assert (report.documents, report.passages) == (2, 4)
    idx = IndexDirectory.load(tmp_path / "i")
    assert idx.store.passage_ids == ["long#0", "long#1", "long#2", "short#0"]
    assert idx.store.passage_texts([1])[1].split()[0] == "w30"


def test_rebuild_replaces_and_refuses_foreign_directory(tmp_path, tiny_bi_encoder):
    cfg = load_config(pipeline_config(tmp_path / "i", tiny_bi_encoder, dense={"enabled": False}))
    build_index(SAMPLE_CORPUS, tmp_path / "i", cfg.build_config(), show_progress=False)
    build_index(SAMPLE_CORPUS, tmp_path / "i", cfg.build_config(), show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i"]  # no temp or old directories left
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(IndexDirError, match="not an index; refusing"):
        build_index(SAMPLE_CORPUS, tmp_path / "data", cfg.build_config(), show_progress=False)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"


# --- issue 10: a rebuild never deletes what it did not write; symlinked --output; a full disk -------------------

def _bm25_index(path: Path, corpus: Path = SAMPLE_CORPUS) -> Path:
    build_index(corpus, path, bm25_only(), show_progress=False)
    return path


def _snapshot(directory: Path) -> dict[str, str]:
    """Every entry under `directory` with its content hash: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(directory)): sha256_file(p) if p.is_file() else "dir"
            for p in sorted(directory.rglob("*"))}


def _bigger_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "bigger.jsonl"
    extra = {"_id": "glaciers", "title": "Glaciers", "text": "Glaciers carve valleys as the ice moves downhill."}
    corpus.write_text(SAMPLE_CORPUS.read_text() + json.dumps(extra) + "\n")
    return corpus


def test_rebuild_refuses_a_corpus_inside_the_index(tmp_path):
    """`--corpus IDX/corpus.jsonl --output IDX` used to delete the corpus it had just indexed."""
    idx = _bm25_index(tmp_path / "idx")
    corpus = idx / "corpus.jsonl"
    shutil.copy(SAMPLE_CORPUS, corpus)
    before = _snapshot(idx)
    with pytest.raises(IndexDirError, match=r"the corpus .*corpus\.jsonl lies inside the output directory"):
        build_index(corpus, idx, bm25_only(), show_progress=False)
    assert _snapshot(idx) == before and leftovers(idx) == []


_INDEX_NAMES = {"documents.sqlite", "bm25.npz", "bm25_vocab.json", MANIFEST_FILE}
_foreign_names = st.sets(st.from_regex(r"[A-Za-z0-9_.][A-Za-z0-9_. -]{0,15}", fullmatch=True)
                         .filter(lambda n: n.strip(".") != "" and n not in _INDEX_NAMES), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def template_index(tmp_path_factory) -> Path:
    return _bm25_index(tmp_path_factory.mktemp("template") / "idx")


@settings(max_examples=20, deadline=None)
@given(names=_foreign_names, as_folder=st.booleans())
def test_rebuild_never_deletes_an_entry_it_did_not_write(template_index, names, as_folder):
    """Any file or folder in the index directory that its manifest does not list makes the rebuild refuse, naming
    it, before any work; nothing in the directory changes."""
    with tempfile.TemporaryDirectory() as tmp:
        idx = shutil.copytree(template_index, Path(tmp) / "idx")
        for name in names:
            if as_folder:
                (idx / name).mkdir()
                (idx / name / "inside.txt").write_text("mine")
            else:
                (idx / name).write_text("mine")
        before = _snapshot(idx)
        with pytest.raises(IndexDirError, match="not part of the index") as err:
            build_index(SAMPLE_CORPUS, idx, bm25_only(), show_progress=False)
        assert repr(sorted(names)[0]) in str(err.value)
        assert _snapshot(idx) == before and leftovers(idx) == []


def test_a_file_put_into_the_index_during_a_rebuild_is_kept(tmp_path, monkeypatch):
    """The check is repeated just before the swap: a note saved into the index while the build ran survives."""
    idx = _bm25_index(tmp_path / "idx")
    before = _snapshot(idx)

    def save_a_note(phase: str) -> None:
        if phase == "manifest":
            (idx / "NOTES.md").write_text("mine")

    monkeypatch.setattr(builder, "_test_pause", save_a_note)
    with pytest.raises(IndexDirError, match=r"not part of the index .*: 'NOTES\.md'; "):
        build_index(_bigger_corpus(tmp_path), idx, bm25_only(), show_progress=False)
    assert _snapshot(idx) == {**before, "NOTES.md": sha256_file(idx / "NOTES.md")}
    assert leftovers(idx) == []


@pytest.mark.parametrize("dangling", [False, True])
def test_output_through_a_symlink_builds_where_it_points(tmp_path, dangling):
    """The symlink stays and points to the new index; nothing is left beside the link or the real directory."""
    real = tmp_path / "real" / "idx"
    if not dangling:
        _bm25_index(real)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    report = build_index(_bigger_corpus(tmp_path), link, bm25_only(), show_progress=False)
    assert report.documents == 25 and report.path == link
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert len(IndexDirectory.load(link, verify=True).store) == 25
    assert leftovers(real) == [] and leftovers(link) == []


def test_output_symlink_loop_is_refused(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(IndexDirError, match=r"loop.*cannot be resolved"):
        build_index(SAMPLE_CORPUS, loop, bm25_only(), show_progress=False)
    assert loop.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["loop"]


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, so that every write of a build can hit a real ENOSPC (mounting needs root, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        gc.collect()  # indexes the test loaded close when collected; a handle the build leaked stays open
        open_there = _open_files_under(mount)
        busy = subprocess.run(["umount", str(mount)], capture_output=True, text=True).returncode != 0
        if busy:  # detach it anyway, so that no mount outlives the test
            subprocess.run(["umount", "--lazy", str(mount)], check=True)
            pytest.fail(f"files on the full disk are still open after the test (leaked handles): {open_there}")


def _open_files_under(directory: Path) -> list[str]:
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd of listdir itself is gone by now
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [p for p in paths if p.startswith(str(directory))]


def _leave_free(mount: Path, free: int) -> None:
    """Fill the filesystem so that exactly `free` bytes (a multiple of its block size) stay available."""
    fs = os.statvfs(mount)
    with open(mount / "filler", "wb") as fh:
        fh.write(b"\0" * (fs.f_bavail * fs.f_frsize - free))


@pytest.mark.parametrize("freed_midway", [False, True])
def test_disk_full_at_any_point_of_a_build_keeps_the_old_index(tmp_path, small_disk, tiny_bi_encoder, monkeypatch,
                                                               freed_midway):
    """For every amount of free space, from none to enough: the build either fails with one OSError (ENOSPC) that
    says the disk is full and where, leaving the old index byte for byte and no temp directory, or succeeds with a
    complete index. `freed_midway`: someone else frees space once the embeddings and FAISS are written, so a write
    that failed before cannot hide behind a manifest that now fits. (It used to raise sqlite3.OperationalError or a
    raw OSError; and faiss, which only prints a failed fclose, left a short faiss.index that the manifest then
    certified.)"""
    config = load_config(pipeline_config(tmp_path / "unused", tiny_bi_encoder)).build_config()
    encoder = Encoder(config.dense.model, config.dense)
    old = tmp_path / "old"
    build_index(SAMPLE_CORPUS, old, config, encoder=encoder, show_progress=False)
    corpus = _bigger_corpus(tmp_path)
    clean = tmp_path / "clean"
    build_index(corpus, clean, config, encoder=encoder, show_progress=False)
    if freed_midway:
        monkeypatch.setattr(builder, "_test_pause",
                            lambda phase: (small_disk / "filler").unlink() if phase == "dense" else None)
    block = os.statvfs(small_disk).f_frsize
    needed = sum(-(-p.stat().st_size // block) for p in clean.iterdir())
    target = small_disk / "idx"
    causes: set[str] = set()
    for blocks in range(needed + 2):
        for entry in small_disk.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        shutil.copytree(old, target)
        before = _snapshot(target)
        _leave_free(small_disk, blocks * block)
        try:
            report = build_index(corpus, target, config, encoder=encoder, show_progress=False)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, (blocks, repr(exc))
            assert str(exc).startswith(f"disk full while writing the index to {target}"), (blocks, str(exc))
            assert "free space" in str(exc) and "--output" in str(exc), (blocks, str(exc))
            assert _snapshot(target) == before and leftovers(target) == [], blocks
            causes.add(type(exc.__cause__).__name__)
            continue
        assert report.documents == 25 and leftovers(target) == [], blocks
        assert _snapshot(target) == _snapshot(clean) | {MANIFEST_FILE: sha256_file(target / MANIFEST_FILE)}, blocks
        loaded = IndexDirectory.load(target, verify=True)
        assert len(loaded.store) == loaded.bm25.num_docs == loaded.faiss_index.ntotal == 25, blocks
    assert causes == {"OperationalError", "OSError"}  # the SQLite store, and every file written through Python
    assert report.documents == 25  # the last round had room enough


def test_disk_full_is_one_error_line_from_the_cli(tmp_path, small_disk, capsys, monkeypatch):
    config = tmp_path / "bm25.yaml"
    config.write_text(yaml.safe_dump(bm25_pipeline_config(tmp_path / "unused")))
    target = small_disk / "idx"
    _leave_free(small_disk, 0)
    monkeypatch.setattr(sys, "argv", ["build_index.py", "--quiet", "--config", str(config), "--corpus",
                                      str(SAMPLE_CORPUS), "--output", str(target)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "scripts" / "build_index.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith(f"error: disk full while writing the index to {target}")
    assert err.count("\n") == 1 and "Traceback" not in err and not target.exists() and leftovers(target) == []


def test_every_writer_s_disk_full_error_is_recognised(small_disk):
    """The errors a full disk really raises: Python's OSError, SQLite's SQLITE_FULL, and faiss's RuntimeError from
    a path-based write_index (which quotes strerror), each wrapped once more as the build's handler may see it."""
    import sqlite3

    import faiss

    _leave_free(small_disk, 0)
    index = faiss.IndexFlatIP(8)
    index.add(np.ones((1000, 8), dtype=np.float32))
    raised = []
    for write in (lambda: (small_disk / "a").write_bytes(b"x" * 10_000),
                  lambda: sqlite3.connect(small_disk / "b").execute("CREATE TABLE t (x)"),
                  lambda: faiss.write_index(index, str(small_disk / "c"))):
        with pytest.raises(Exception) as err:
            write()
        raised.append(err.value)
        try:
            raise RuntimeError("while building") from err.value
        except RuntimeError as wrapped:
            raised.append(wrapped)
    assert [type(e).__name__ for e in raised[::2]] == ["OSError", "OperationalError", "RuntimeError"]
    assert [builder._disk_full_errno(e) for e in raised] == [errno.ENOSPC] * 6
    assert builder._disk_full_errno(RuntimeError("no space here")) is None
    raised.clear()


def test_the_report_times_each_phase(tmp_path, tiny_bi_encoder):
    config = load_config(pipeline_config(tmp_path / "idx", tiny_bi_encoder)).build_config()
    report = build_index(SAMPLE_CORPUS, tmp_path / "idx", config, show_progress=False)
    assert list(report.phases) == ["read", "bm25", "dense", "manifest"]
    assert all(s >= 0 for s in report.phases.values()) and sum(report.phases.values()) <= report.seconds


def test_encoding_under_a_progress_bar_gives_the_same_bits(tiny_bi_encoder):
    from index.config import DenseConfig

    texts = [json.loads(line)["text"] for line in SAMPLE_CORPUS.read_text().splitlines()]
    encoder = Encoder(str(tiny_bi_encoder), DenseConfig(model=str(tiny_bi_encoder), batch_size=4))
    # the bar's loop feeds the model the batches its own encode() would form, so no vector moves by a bit
    np.testing.assert_array_equal(encoder.encode(texts, show_progress=True), encoder.encode(texts))
