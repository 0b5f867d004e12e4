"""Crash safety of updates: scripts/update_index.py is SIGKILLed at each phase of an update commit and of a merge.
The index must still load (sha256 verified) and answer exactly as before the commit (killed before the manifest
rename) or exactly as after it (killed after), the next writer must remove what the killed one left, and an update
after that must work. A killed writer's lock file stays behind, unlocked: the next writer takes it over.

The kill points come from the writer's test hook: TWOSTAGE_TEST_PAUSE_AT=<phase> prints a marker and sleeps."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from index.builder import build_index
from index.dense import Encoder
from index.directory import IndexDirectory
from index.lock import lock_path
from index.manifest import MANIFEST_FILE
from index.writer import IndexWriter
from retrieval import SearchPipeline
from retrieval.config import load_config
from tests.conftest import ROOT, SAMPLE_CORPUS, pipeline_config
from tests.reliability import answers, copy_index, kill_when_paused

# The last phase of each is after the manifest rename (the commit point), the others before it.
UPDATE_PHASES = ["update-segment", "update-tombstones", "update-manifest", "update-committed"]
MERGE_PHASES = ["merge-segment", "merge-manifest", "merge-committed"]

NEW_DOC = {"_id": "new-doc", "title": "Glaciers", "text": "Glaciers carve valleys as the ice moves downhill."}
UPSERTED = {"_id": "tides", "title": "Tides", "text": "Volcanic ash clouds ground flights for days."}
DELETED = "coffee"
LATER_DOC = {"_id": "later-doc", "title": "Deserts", "text": "Sand dunes migrate with the prevailing wind."}
QUERIES = ["why does the ocean have tides", "glaciers carve valleys", "volcanic ash flights", "coffee beans roast",
           "sand dunes wind", "ice"]


def _write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _apply_update(writer: IndexWriter) -> None:
    """The update the killed processes run (--add, --upsert, --delete-ids), through the Python API."""
    writer.add([NEW_DOC])
    writer.upsert([UPSERTED])
    writer.delete([DELETED])
    writer.commit()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_bi_encoder):
    """The base index (sample corpus, BM25 + dense), the update's input files, and the three reference states:
    before (the base), after the update (also what the merges start from) and after the merge."""
    tmp = tmp_path_factory.mktemp("update-crash")
    # backend torch: OpenVINO (the CPU default) would add seconds of start-up to each of the killed processes.
    config = pipeline_config(tmp / "unused", tiny_bi_encoder, dense={"backend": "torch"})
    config_file = tmp / "config.yaml"
    config_file.write_text(yaml.safe_dump({"first_stage": config["first_stage"]}))
    build = load_config(config).build_config()
    # One encoder for everything in this process (the killed processes load their own, with the same settings).
    models = {"dense": Encoder(build.dense.model, build.dense)}
    build_index(SAMPLE_CORPUS, tmp / "before" / "idx", build, show_progress=False, models=models)
    copy_index(tmp / "before" / "idx", tmp / "after" / "idx")
    with IndexWriter(tmp / "after" / "idx", models=models) as writer:
        _apply_update(writer)
    copy_index(tmp / "after" / "idx", tmp / "merged" / "idx")
    with IndexWriter(tmp / "merged" / "idx", models=models) as writer:
        writer.merge()
    result = {"config": config, "config_file": config_file, "tmp": tmp, "models": models,
              "add": _write_jsonl(tmp / "add.jsonl", [NEW_DOC]),
              "upsert": _write_jsonl(tmp / "upsert.jsonl", [UPSERTED]),
              "delete": tmp / "delete.txt"}
    result["delete"].write_text(DELETED + "\n")
    for name in ("before", "after", "merged"):
        path = tmp / name / "idx"
        index = IndexDirectory.load(path, verify=True)
        result[name] = {"path": path, "answers": _answers(path, result), "generation": index.generation,
                        "segments": len(index.segments)}
    assert result["before"]["answers"] != result["after"]["answers"]
    assert (result["before"]["segments"], result["after"]["segments"], result["merged"]["segments"]) == (1, 2, 1)
    return result


def _pipeline(index_path: Path, setup: dict) -> SearchPipeline:
    config = load_config({**setup["config"], "index": {"path": str(index_path)}})
    return SearchPipeline(config, models=setup["models"])


def _answers(index_path: Path, setup: dict) -> list:
    IndexDirectory.load(index_path, verify=True)
    return answers(_pipeline(index_path, setup), QUERIES)


def _expected(phase: str) -> str:
    """The reference state an index killed at `phase` must be in."""
    if phase in UPDATE_PHASES:
        return "after" if phase == "update-committed" else "before"
    return "merged" if phase == "merge-committed" else "after"


def _start(setup, target: Path, phase: str) -> subprocess.Popen:
    env = {**os.environ, "TWOSTAGE_TEST_PAUSE_AT": phase, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "scripts" / "update_index.py"), "--quiet", "--index", str(target)]
    if phase in MERGE_PHASES:
        cmd += ["--merge"]
    else:
        cmd += ["--config", str(setup["config_file"]), "--add", str(setup["add"]), "--upsert", str(setup["upsert"]),
                "--delete-ids", str(setup["delete"])]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _unlisted(path: Path) -> set[str]:
    """Entries of the index directory that its manifest does not list."""
    listed = set(json.loads((path / MANIFEST_FILE).read_text())["files"])
    return set(os.listdir(path)) - listed - {MANIFEST_FILE}


@pytest.fixture(scope="module")
def killed(setup) -> dict[str, dict]:
    """One process per kill point, run side by side, each SIGKILLed once paused; by phase: the index and the pid."""
    phases = [*UPDATE_PHASES, *MERGE_PHASES]
    # A merge starts from the updated index: a delta segment and a deletion to fold.
    targets = {phase: copy_index(setup["after" if phase in MERGE_PHASES else "before"]["path"],
                                 setup["tmp"] / "killed" / phase / "idx") for phase in phases}
    procs = {phase: _start(setup, targets[phase], phase) for phase in phases}
    kill_when_paused(procs)
    return {phase: {"path": targets[phase], "pid": procs[phase].pid} for phase in phases}


@pytest.mark.parametrize("phase", [*UPDATE_PHASES, *MERGE_PHASES])
def test_a_killed_update_leaves_the_index_as_before_or_as_after_the_commit(setup, killed, phase):
    path = killed[phase]["path"]
    expected = setup[_expected(phase)]
    index = IndexDirectory.load(path, verify=True)
    assert (index.generation, len(index.segments)) == (expected["generation"], expected["segments"]), phase
    assert _answers(path, setup) == expected["answers"], phase
    assert lock_path(path).is_file()  # the killed writer never released it
    if phase in ("update-segment", "merge-segment"):
        assert _unlisted(path), "the killed writer left no files: the cleanup below would test nothing"


def test_a_killed_writers_stale_lock_is_taken_over(setup, killed, caplog):
    """Before the next-writer test below: the update killed at update-segment left its lock file (with its pid),
    which no process holds any more; the next writer takes it over, says so, and cleans up."""
    path, pid = killed["update-segment"]["path"], killed["update-segment"]["pid"]
    lock = lock_path(path)
    assert lock == path.parent / ".idx.lock"
    assert lock.read_text().strip() == str(pid)  # the killed writer's, left behind
    with caplog.at_level(logging.WARNING, logger="index.lock"):
        writer = IndexWriter(path)  # not refused: no live process holds it
    try:
        assert lock.read_text().strip() == str(os.getpid())
        assert any(f"left by process {pid}" in r.getMessage() for r in caplog.records), caplog.text
        assert writer.index.generation == setup["before"]["generation"]
        assert _unlisted(path) == set()
    finally:
        writer.close()
    assert not lock.exists()
    assert _answers(path, setup) == setup["before"]["answers"]


@pytest.mark.parametrize("phase", [*UPDATE_PHASES, *MERGE_PHASES])
def test_the_next_writer_removes_what_a_killed_one_left(setup, killed, phase):
    path = killed[phase]["path"]
    IndexWriter(path).close()  # opening is enough: the leftovers go before any change
    assert _unlisted(path) == set(), phase
    assert not lock_path(path).exists()
    assert _answers(path, setup) == setup[_expected(phase)]["answers"], phase
    # ...and the index takes the next update as any other.
    with IndexWriter(path, models=setup["models"]) as writer:
        writer.add([LATER_DOC])
        report = writer.commit()
    assert report.added == 1 and report.generation == setup[_expected(phase)]["generation"] + 1
    assert _unlisted(path) == set(), phase
    assert _pipeline(path, setup).query("sand dunes wind", top_k=1)[0].doc_id == LATER_DOC["_id"]
