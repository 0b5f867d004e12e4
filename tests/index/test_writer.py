"""The index writer: what each operation does, what it refuses (one line, nothing changed on disk), chunked
indexes, approximate FAISS indexes after deletions, damaged segments, and the advice to merge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from index.builder import build_index
from index.config import BuildConfig
from index.directory import MERGE_SEGMENTS, IndexDirectory
from index.manifest import MANIFEST_FILE, IndexDirError
from index.writer import IndexWriter, UpdateError
from retrieval.config import load_config
from retrieval.pipeline import SearchPipeline
from tests.conftest import SAMPLE_CORPUS
from tests.index.fakes import HashEncoder
from tests.reliability import bm25_only

ENCODER = HashEncoder()


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture
def index(tmp_path) -> Path:
    build_index(SAMPLE_CORPUS, tmp_path / "idx", bm25_only(), show_progress=False)
    return tmp_path / "idx"


def _ids(path: Path) -> list[str]:
    return [d.doc_id for d in IndexDirectory.load(path).store.iter_documents()]


def test_add_upsert_delete_commit(index):
    first = _ids(index)
    with IndexWriter(index) as writer:
        assert writer.add([{"_id": "n1", "title": "Glaciers", "text": "Glaciers carve valleys.", "src": "x"}]) == 1
        assert writer.upsert([{"_id": first[0], "text": "Rewritten."}]) == 1
        assert writer.delete([first[1], "no-such-id"]) == 1
        report = writer.commit()
    assert (report.added, report.replaced, report.deleted, report.unknown) == (1, 1, 1, 1)
    assert report.generation == 1 and report.segments == 2 and report.documents == len(first)
    assert set(report.phases) >= {"read", "bm25", "tombstones", "manifest"}
    ids = _ids(index)
    assert ids == [*first[2:], "n1", first[0]]  # a replaced document moves to the end, as a fresh add
    docs = IndexDirectory.load(index).store.get(["n1", first[0]])
    assert docs["n1"]["metadata"] == {"src": "x"} and docs[first[0]]["text"] == "Rewritten."
    manifest = json.loads((index / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 2 and manifest["counts"]["documents"] == len(first)


def test_empty_commit_writes_nothing(index):
    before = _snapshot(index)
    with IndexWriter(index) as writer:
        report = writer.commit()
    assert report.generation == 0 and _snapshot(index) == before


def test_close_without_commit_discards(index):
    before = _snapshot(index)
    with IndexWriter(index) as writer:
        writer.add([{"_id": "n1", "text": "x"}])
    assert _snapshot(index) == before


@pytest.mark.parametrize("call, message", [
    (lambda w, ids: w.add([{"_id": ids[0], "text": "again"}]), "already holds document"),
    (lambda w, ids: w.add([{"_id": "n", "text": "a"}, {"_id": "n", "text": "b"}]), "more than once in the batch"),
    (lambda w, ids: w.upsert([{"_id": "n", "text": "a"}, {"_id": "n", "text": "b"}]), "more than once in the batch"),
    (lambda w, ids: w.delete(["nope", "nada"], strict=True), "holds no document 'nope', 'nada'"),
    (lambda w, ids: w.delete([3]), "must be strings"),
    (lambda w, ids: w.add([{"text": "no id"}]), "document #0"),
])
def test_bad_updates_are_refused_and_change_nothing(index, call, message):
    before = _snapshot(index)
    ids = _ids(index)
    with IndexWriter(index) as writer:
        with pytest.raises((UpdateError, ValueError), match=message) as err:
            call(writer, ids)
        assert "\n" not in str(err.value)
        assert not writer.pending
        writer.commit()
    assert _snapshot(index) == before


def test_an_id_added_in_this_batch_cannot_be_added_again(index):
    with IndexWriter(index) as writer:
        writer.add([{"_id": "n", "text": "a"}])
        with pytest.raises(UpdateError, match="already holds document 'n'"):
            writer.add([{"_id": "n", "text": "b"}])


def test_other_build_settings_are_refused_naming_the_setting(index):
    before = _snapshot(index)
    other = BuildConfig.model_validate({"dense": {"enabled": False}, "bm25": {"analyzer": {"stemmer": None}}})
    with pytest.raises(UpdateError, match=r"bm25\.analyzer\.stemmer: 'english' \(the update asks for None\)"):
        IndexWriter(index, other)
    assert _snapshot(index) == before
    # query-time settings are not build settings: another BM25 variant is fine
    IndexWriter(index, BuildConfig.model_validate({"dense": {"enabled": False}, "bm25": {"variant": "bm25l"}})).close()


def test_empty_documents_are_skipped_and_counted(index):
    with IndexWriter(index) as writer:
        writer.add([{"_id": "blank", "text": "  "}, {"_id": "n", "text": "words"}])
        report = writer.commit()
    assert report.added == 1 and report.skipped_empty == 1 and "blank" not in _ids(index)


def test_damaged_delta_segment_is_refused(index):
    with IndexWriter(index) as writer:
        writer.add([{"_id": "n1", "text": "Glaciers carve valleys."}])
        writer.commit()
    target = next(p for p in index.iterdir() if p.name.startswith("s000001-") and p.name.endswith("bm25.npz"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IndexDirError, match="corrupted") as err:
        IndexDirectory.load(index)
    assert "\n" not in str(err.value)
    with pytest.raises(IndexDirError, match="corrupted"):
        IndexWriter(index)


def test_damaged_tombstones_are_refused(index):
    ids = _ids(index)
    with IndexWriter(index) as writer:
        writer.delete(ids[:2])
        writer.commit()
    manifest = json.loads((index / MANIFEST_FILE).read_text())
    name = manifest["segments"][0]["deleted"]
    (index / name).write_bytes(b"not an npz" + b"\0" * (manifest["files"][name]["bytes"] - 10))
    with pytest.raises(IndexDirError):
        IndexDirectory.load(index, verify=False)  # right size, wrong bytes: refused even without sha256 checks


def test_merge_folds_segments_and_keeps_answers(index):
    with IndexWriter(index) as writer:
        for i in range(3):
            writer.add([{"_id": f"n{i}", "text": f"Glaciers carve valleys {i}."}])
            writer.commit()
        writer.delete(["n1"])
        writer.commit()
    pipe = SearchPipeline.from_config({"index": {"path": str(index)}, "first_stage": {"dense": {"enabled": False}}})
    before = pipe.retrieve(["glaciers carve valleys", "tides"])
    with IndexWriter(index) as writer:
        report = writer.merge()
    assert report.merged and report.segments == 1 and report.generation == 5
    after = SearchPipeline.from_config({"index": {"path": str(index)}, "first_stage": {"dense": {"enabled": False}}})
    assert after.retrieve(["glaciers carve valleys", "tides"]) == before
    listed = set(json.loads((index / MANIFEST_FILE).read_text())["files"])
    assert {p.name for p in index.iterdir()} == listed | {MANIFEST_FILE}  # the old segments' files are gone


def test_merge_is_advised_after_many_segments(index):
    with IndexWriter(index) as writer:
        for i in range(MERGE_SEGMENTS):
            writer.add([{"_id": f"n{i}", "text": "x"}])
            report = writer.commit()
    assert any("delta segments" in a and "--merge" in a for a in report.advice)
    with IndexWriter(index) as writer:
        assert writer.merge().advice == []


def test_many_deletions_advise_a_merge(index):
    ids = _ids(index)
    with IndexWriter(index) as writer:
        writer.delete(ids[: len(ids) // 2])
        assert any("deleted" in a for a in writer.commit().advice)


def _chunked(tmp_path: Path) -> Path:
    config = BuildConfig.model_validate({"dense": {"enabled": False}, "chunking": {"max_words": 8, "overlap": 2}})
    build_index(SAMPLE_CORPUS, tmp_path / "chunked", config, show_progress=False)
    return tmp_path / "chunked"


def test_chunked_upsert_replaces_passages_and_delete_removes_them(tmp_path):
    path = _chunked(tmp_path)
    first = IndexDirectory.load(path)
    doc = first.store.row_doc_ids[0]
    old = [p for p, d in zip(first.store.passage_ids, first.store.row_doc_ids) if d == doc]
    assert len(old) > 1
    with IndexWriter(path) as writer:
        writer.upsert([{"_id": doc, "text": "Glaciers carve deep valleys."}])
        writer.commit()
    index = IndexDirectory.load(path)
    assert [p for p, d in zip(index.store.passage_ids, index.store.row_doc_ids) if d == doc] == [f"{doc}#0"]
    pipe = SearchPipeline.from_config({"index": {"path": str(path), "chunking": {"max_words": 8, "overlap": 2}},
                                       "first_stage": {"dense": {"enabled": False}}})
    hit = next(r for r in pipe.query("glaciers deep valleys", top_k=3) if r.doc_id == doc)
    assert hit.passage.text == "Glaciers carve deep valleys."
    with IndexWriter(path) as writer:
        writer.delete([doc])
        writer.commit()
    assert doc not in IndexDirectory.load(path).store.row_doc_ids
    assert doc not in [r.doc_id for r in pipe.query("glaciers deep valleys", top_k=50)]


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "sq8"])
@pytest.mark.parametrize("selectors", [False, True], ids=["exact-small-segments", "faiss-selectors"])
def test_approximate_faiss_never_returns_a_deleted_document(tmp_path, kind, selectors, monkeypatch):
    if selectors:  # every segment searched by FAISS with an id selector, however small
        monkeypatch.setattr("index.components.EXACT_SEGMENT_ROWS", 0)
        monkeypatch.setattr("index.dense.EXACT_FILTERED_ROWS", 0)
    corpus = tmp_path / "corpus.jsonl"
    words = ["tide", "moon", "ice", "glacier", "sleep", "drug", "volcano", "ash", "ocean", "valley"]
    rng = np.random.default_rng(0)
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": " ".join(rng.choice(words, 6))}) + "\n"
                              for i in range(300)))
    build = BuildConfig.model_validate({"dense": {"faiss": {"type": kind}}})
    build_index(corpus, tmp_path / "idx", build, models={"dense": ENCODER}, show_progress=False)
    deleted = [f"d{i}" for i in range(0, 300, 2)]
    with IndexWriter(tmp_path / "idx", models={"dense": ENCODER}) as writer:
        writer.add([{"_id": f"n{i}", "text": " ".join(rng.choice(words, 6))} for i in range(50)])
        writer.commit()
        writer.delete(deleted + ["n0", "n1"])
        report = writer.commit()
    config = load_config({"index": {"path": str(tmp_path / "idx")},
                          "first_stage": {"bm25": {"enabled": False}, "dense": {"faiss": {"type": kind}, "top_k": 50}}})
    pipe = SearchPipeline(config, models={"dense": ENCODER})
    queries = [" ".join(rng.choice(words, 3)) for _ in range(30)]
    gone = set(deleted) | {"n0", "n1"}
    for ranked in pipe.retrieve(queries, stage="dense"):
        assert len(ranked) == 50 and not gone & {d for d, _ in ranked}
    if kind in ("ivf", "sq8"):
        assert report.advice == [] or all("merge" in a for a in report.advice)
    with IndexWriter(tmp_path / "idx", models={"dense": ENCODER}) as writer:
        writer.merge()
    for ranked in SearchPipeline(config, models={"dense": ENCODER}).retrieve(queries, stage="dense"):
        assert len(ranked) == 50 and not gone & {d for d, _ in ranked}


def test_leftovers_of_an_interrupted_update_are_removed_by_the_next_writer(index):
    (index / "s000001-bm25.npz").write_bytes(b"partial")
    (index / "manifest.json.tmp").write_text("{}")
    (index / "notes.txt").write_text("the user's")  # not ours: left alone
    IndexWriter(index).close()
    names = {p.name for p in index.iterdir()}
    assert "s000001-bm25.npz" not in names and "manifest.json.tmp" not in names and "notes.txt" in names
    os.remove(index / "notes.txt")
