"""A load while a rebuild swaps the same index sees exactly one build: every pipeline answers exactly as a stable
copy of one of the two builds does, and no load fails because of the swap."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from index.builder import build_index
from index.directory import IndexDirectory
from index.manifest import MAX_LOAD_ATTEMPTS, IndexDirError, IndexFiles
from retrieval import SearchPipeline
from tests.reliability import answers, bm25_only, bm25_pipeline_config

WORDS = [f"w{i}" for i in range(40)]
QUERIES = ["w1 w2 w3", "w5", "w7 w11 w13 w17", "w0 w39"]
# Before the fix about one load in 15 mixed two builds or failed falsely; 2 s holds ~100 loads.
SECONDS = 2.0


def _corpus(path: Path, seed: int, reverse: bool) -> Path:
    """150 documents with the same ids in both corpora but other texts, lengths and row order: any mix of one
    build's BM25 arrays with the other's store changes the (doc_id, score, text) a query returns."""
    rng = random.Random(seed)
    ids = [f"d{i:03d}" for i in range(150)]
    lines = [json.dumps({"_id": i, "text": " ".join(rng.choices(WORDS, k=rng.randint(3, 30)))})
             for i in (reversed(ids) if reverse else ids)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _answers(index_path: Path) -> list:
    return answers(SearchPipeline.from_config(bm25_pipeline_config(index_path)), QUERIES)


@pytest.fixture
def fine_thread_switching() -> Iterator[None]:
    """Switch threads often so that loads interleave with every step of the swap (the default 5 ms lets a tiny
    load finish between two swaps most of the time)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


def test_load_during_rebuilds_sees_one_build(tmp_path, fine_thread_switching):
    corpora = [_corpus(tmp_path / "a.jsonl", 1, False), _corpus(tmp_path / "b.jsonl", 2, True)]
    expected = []
    for n, corpus in enumerate(corpora):
        build_index(corpus, tmp_path / f"stable-{n}", bm25_only(), show_progress=False)
        expected.append(_answers(tmp_path / f"stable-{n}"))
    assert expected[0] != expected[1]
    target = tmp_path / "idx"
    build_index(corpora[0], target, bm25_only(), show_progress=False)
    stop = threading.Event()
    builds = [0]
    failures: list[BaseException] = []

    def rebuild() -> None:
        try:
            while not stop.is_set():
                build_index(corpora[builds[0] % 2], target, bm25_only(), show_progress=False)
                builds[0] += 1
        except BaseException as exc:  # reported by the test thread below
            failures.append(exc)

    builder = threading.Thread(target=rebuild, daemon=True)
    builder.start()
    loads: list[int] = []  # which build each load answered as
    try:
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline and builder.is_alive():
            got = _answers(target)
            assert got in expected, f"load {len(loads)} mixed two builds"
            loads.append(expected.index(got))
    finally:
        stop.set()
        builder.join(timeout=60)
    assert not failures, failures
    assert builds[0] > 10 and set(loads) == {0, 1}, (builds, len(loads))


@pytest.fixture
def two_builds(tmp_path) -> tuple[Path, list[Path], list[list]]:
    """An index of corpus A, both corpora, and the answers of a stable copy of each build."""
    corpora = [_corpus(tmp_path / "a.jsonl", 1, False), _corpus(tmp_path / "b.jsonl", 2, True)]
    expected = []
    for n, corpus in enumerate(corpora):
        build_index(corpus, tmp_path / f"stable-{n}", bm25_only(), show_progress=False)
        expected.append(_answers(tmp_path / f"stable-{n}"))
    build_index(corpora[0], tmp_path / "idx", bm25_only(), show_progress=False)
    return tmp_path / "idx", corpora, expected


def _swap_before_reading(monkeypatch, target: Path, corpora: list[Path], times: int) -> list[int]:
    """Make a rebuild swap `target` (and remove the old build) right before the loader reads a file, `times`
    times: a load then always hits a removed file of the build it started on."""
    swaps = [0]
    original = IndexFiles.read_bytes

    def read_bytes(self: IndexFiles, name: str) -> bytes:
        if swaps[0] < times:
            swaps[0] += 1
            build_index(corpora[swaps[0] % 2], target, bm25_only(), show_progress=False)
        return original(self, name)

    monkeypatch.setattr(IndexFiles, "read_bytes", read_bytes)
    return swaps


@pytest.mark.parametrize("swaps", [1, 2, MAX_LOAD_ATTEMPTS - 1])
def test_a_swap_mid_load_reloads_the_new_build(monkeypatch, two_builds, swaps):
    target, corpora, expected = two_builds
    done = _swap_before_reading(monkeypatch, target, corpora, swaps)
    assert _answers(target) == expected[swaps % 2] and done[0] == swaps


def test_an_index_swapped_at_every_attempt_is_refused_in_one_line(monkeypatch, two_builds):
    target, corpora, _ = two_builds
    _swap_before_reading(monkeypatch, target, corpora, MAX_LOAD_ATTEMPTS)
    with pytest.raises(IndexDirError, match=rf"{target} was replaced by a rebuild {MAX_LOAD_ATTEMPTS} times while "
                                            r"being read; load it again once the rebuilds are done"):
        IndexDirectory.load(target)
