"""Readers during updates: a pipeline with the index open keeps answering while a writer commits, sees each commit
on its next query (auto refresh) or after `refresh()`, and every answer is the answer of one committed state."""

from __future__ import annotations

import threading
import time

import pytest

from index.builder import build_index
from index.manifest import IndexDirError
from index.writer import IndexWriter
from retrieval import SearchPipeline
from tests.conftest import SAMPLE_CORPUS
from tests.reliability import answers, bm25_only, bm25_pipeline_config

QUERIES = ["glaciers carve valleys", "why does the ocean have tides", "ice"]
COMMITS = 50
THREADS = 4


def _pipeline(path, **index):
    config = bm25_pipeline_config(path)
    config["index"].update(index)
    # Lucene's IDF is positive however common "glaciers" becomes, so every commit moves the scores.
    config["first_stage"]["bm25"] = {"variant": "lucene"}
    return SearchPipeline.from_config(config)


def test_queries_during_50_commits_each_answer_one_committed_state(tmp_path):
    build_index(SAMPLE_CORPUS, tmp_path / "idx", bm25_only(), show_progress=False)
    shared = _pipeline(tmp_path / "idx")
    states = [answers(_pipeline(tmp_path / "idx"), QUERIES)]
    seen: list[list] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            deadline = time.monotonic() + 120
            while not done.is_set() and time.monotonic() < deadline:
                seen.append(answers(shared, QUERIES))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(THREADS)]
    for t in threads:
        t.start()
    try:
        with IndexWriter(tmp_path / "idx") as writer:
            for i in range(COMMITS):
                writer.add([{"_id": f"new-{i}", "title": "Glaciers", "text": f"Glaciers carve valleys, note {i}."}])
                if i % 5 == 4:
                    writer.delete([f"new-{i - 2}", f"new-{i - 3}"])  # N changes: each commit differs from the last
                writer.commit()
                states.append(answers(_pipeline(tmp_path / "idx"), QUERIES))
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert all(repr(a) != repr(b) for a, b in zip(states, states[1:]))  # every commit changes what queries see
    valid = {repr(s) for s in states}
    assert seen and all(repr(a) in valid for a in seen)
    assert len({repr(a) for a in seen}) > 1  # the readers saw commits while running
    assert repr(answers(shared, QUERIES)) == repr(states[-1])  # and the last one on the next query


def test_refresh_by_hand_when_auto_refresh_is_off(tmp_path):
    build_index(SAMPLE_CORPUS, tmp_path / "idx", bm25_only(), show_progress=False)
    pipe = _pipeline(tmp_path / "idx", auto_refresh=False)
    before = answers(pipe, QUERIES)
    with IndexWriter(tmp_path / "idx") as writer:
        writer.add([{"_id": "new", "title": "Glaciers", "text": "Glaciers carve valleys."}])
        writer.commit()
    assert answers(pipe, QUERIES) == before  # still the state it loaded
    assert pipe.refresh() is True
    assert "new" in [r.doc_id for r in pipe.query("glaciers carve valleys")]
    assert pipe.refresh() is False  # nothing newer


def test_a_commit_that_cannot_be_loaded_leaves_queries_on_the_loaded_state(tmp_path, caplog):
    """Auto refresh meets a damaged newest commit: queries keep answering from the state they have (warned once,
    not per query), an explicit `refresh()` raises the one-line error, and the next good commit is picked up."""
    build_index(SAMPLE_CORPUS, tmp_path / "idx", bm25_only(), show_progress=False)
    pipe = _pipeline(tmp_path / "idx")
    before = answers(pipe, QUERIES)
    with IndexWriter(tmp_path / "idx") as writer:
        writer.delete(["tides"])  # an answer to one of QUERIES
        writer.commit()
        tombstone = next(p for p in (tmp_path / "idx").iterdir() if "deleted" in p.name)
        good = tombstone.read_bytes()
        tombstone.write_bytes(bytes(len(good)))  # same size, other bytes: the sha256 check refuses it
        with caplog.at_level("WARNING", logger="retrieval.pipeline"):
            assert answers(pipe, QUERIES) == before
            assert answers(pipe, QUERIES) == before
        warned = [r for r in caplog.records if "cannot be loaded" in r.getMessage()]
        assert len(warned) == 1 and "corrupted" in warned[0].getMessage()
        with pytest.raises(IndexDirError, match="corrupted"):
            pipe.refresh()
        tombstone.write_bytes(good)
    assert answers(pipe, QUERIES) != before
    assert answers(pipe, QUERIES) == answers(_pipeline(tmp_path / "idx"), QUERIES)
