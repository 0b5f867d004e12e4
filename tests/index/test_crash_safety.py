"""Crash safety: scripts/build_index.py is SIGKILLed at each phase of a rebuild over an existing index; the old
index must still load (sha256 verified) and answer exactly as before (or, once swapped, the new one exactly as a
clean build does), and the next build must clean up the leftovers.

The kill points come from the builder's test hook: TWOSTAGE_TEST_PAUSE_AT=<phase> prints a marker and sleeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import index.builder as builder
from index.builder import build_index, clean_leftovers
from index.directory import IndexDirectory
from retrieval import SearchPipeline
from retrieval.config import load_config
from tests.conftest import ROOT, SAMPLE_CORPUS, pipeline_config
from tests.reliability import (
    answers,
    bm25_only,
    bm25_pipeline_config,
    copy_index,
    kill_when_paused,
    leftovers,
    wait_for_marker,
)

BEFORE_SWAP = ["read", "bm25", "dense", "manifest"]
KILL_POINTS = [*BEFORE_SWAP, "swapped"]
NEW_DOC = {"_id": "new-doc", "title": "Glaciers", "text": "Glaciers carve valleys as the ice moves downhill."}
QUERIES = ["why does the ocean have tides", "glaciers carve valleys", "bacteria resistant to drugs", "ice"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_bi_encoder):
    """The old index (sample corpus), the new corpus (one more document), a YAML config, and both answer sets."""
    tmp = tmp_path_factory.mktemp("crash")
    config = pipeline_config(tmp / "unused", tiny_bi_encoder)
    config_file = tmp / "config.yaml"
    config_file.write_text(yaml.safe_dump({"first_stage": config["first_stage"]}))
    new_corpus = tmp / "new.jsonl"
    new_corpus.write_text(SAMPLE_CORPUS.read_text() + json.dumps(NEW_DOC) + "\n")
    build = load_config(config).build_config()
    result = {"config": config, "config_file": config_file, "new_corpus": new_corpus, "build": build}
    for name, corpus in (("old", SAMPLE_CORPUS), ("new", new_corpus)):
        build_index(corpus, tmp / name, build, show_progress=False)
        result[name] = tmp / name
        result[f"{name}_answers"] = _answers(tmp / name, config)
    assert result["old_answers"] != result["new_answers"]
    return result


def _answers(index_path: Path, config: dict) -> list:
    IndexDirectory.load(index_path, verify=True)
    return answers(SearchPipeline.from_config({**config, "index": {"path": str(index_path)}}), QUERIES)


def _start_build(setup, target: Path, phase: str) -> subprocess.Popen:
    env = {**os.environ, "TWOSTAGE_TEST_PAUSE_AT": phase, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "scripts" / "build_index.py"), "--quiet", "--config", str(setup["config_file"]),
           "--corpus", str(setup["new_corpus"]), "--output", str(target)]
    # A shell without job control starts background jobs with SIGINT ignored (`nohup bash .ci/run &`), and Python
    # then installs no Ctrl-C handler: give the build the default disposition a terminal would.
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_sigkill_at_every_phase_never_loses_the_index(tmp_path, setup):
    targets = {phase: copy_index(setup["old"], tmp_path / phase / "idx") for phase in KILL_POINTS}
    procs = {phase: _start_build(setup, targets[phase], phase) for phase in KILL_POINTS}  # run side by side
    kill_when_paused(procs)
    for phase, target in targets.items():
        left = leftovers(target)
        assert len(left) == 1 and left[0].name.startswith(".idx.tmp-"), (phase, left)
        expected = setup["new_answers"] if phase == "swapped" else setup["old_answers"]
        assert _answers(target, setup["config"]) == expected, phase
        # The next build cleans up after the killed one and puts the new index in place.
        report = build_index(setup["new_corpus"], target, setup["build"], show_progress=False)
        assert report.documents == 25
        assert leftovers(target) == [], phase
        assert _answers(target, setup["config"]) == setup["new_answers"], phase


def _interrupt_the_fallback_swap(monkeypatch):
    """No renameat2, and Ctrl-C between the fallback swap's two renames; returns the real `os.rename`."""
    monkeypatch.setattr(builder, "_exchange", lambda a, b: False)
    real_rename = os.rename
    calls = []

    def interrupt_on_second_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(builder.os, "rename", interrupt_on_second_rename)
    return real_rename


def test_crash_between_the_two_renames_of_the_fallback_swap(tmp_path, setup, monkeypatch):
    """Where renameat2 is missing the swap is two renames; a crash between them leaves no index at the target for
    a moment. The previous index is then at .idx.old-*, and the next build puts it back before anything else."""
    target = copy_index(setup["old"], tmp_path / "idx")
    real_rename = _interrupt_the_fallback_swap(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        build_index(setup["new_corpus"], target, setup["build"], show_progress=False)
    monkeypatch.setattr(builder.os, "rename", real_rename)
    assert not target.exists()
    (old,) = leftovers(target)
    assert old.name.startswith(".idx.old-")
    clean_leftovers(target)  # what the next build does first
    assert leftovers(target) == []
    assert _answers(target, setup["config"]) == setup["old_answers"]


def test_a_failing_rebuild_after_a_crash_still_restores_the_old_index(tmp_path, setup):
    """A leftover old index (crash mid-swap) and then a rebuild that fails on a bad corpus: the old one is back."""
    target = tmp_path / "idx"
    copy_index(setup["old"], tmp_path / f".idx.old-{_dead_pid()}-abcd1234")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a"}\n')
    with pytest.raises(Exception, match=r"bad\.jsonl:1: missing field 'text'"):
        build_index(bad, target, setup["build"], show_progress=False)
    assert leftovers(target) == []
    assert _answers(target, setup["config"]) == setup["old_answers"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid



# --- issue 10: Ctrl-C says what state the index is in --------------------------------------------------------

@pytest.fixture(scope="module")
def bm25_setup(tmp_path_factory, setup):
    """As `setup`, BM25 only: the builds started here load no model, so each starts in a few seconds."""
    tmp = tmp_path_factory.mktemp("sigint")
    config_file = tmp / "config.yaml"
    config_file.write_text(yaml.safe_dump(bm25_pipeline_config(tmp / "unused")))
    result = {"config_file": config_file, "new_corpus": setup["new_corpus"], "build": bm25_only()}
    for name, corpus in (("old", SAMPLE_CORPUS), ("new", setup["new_corpus"])):
        build_index(corpus, tmp / name, bm25_only(), show_progress=False)
        result[name] = tmp / name
        result[f"{name}_answers"] = _answers(tmp / name, bm25_pipeline_config(tmp / name))
    return result


def test_sigint_says_whether_the_new_index_is_in_place(tmp_path, bm25_setup):
    """Before the swap: the previous index is untouched and the temp directory is gone. After it: the new index is
    in place and the message names the previous copy, which the next build removes. (Both used to print only
    `error: interrupted`.)"""
    phases = ["manifest", "swapped"]
    targets = {phase: copy_index(bm25_setup["old"], tmp_path / phase / "idx") for phase in phases}
    procs = {phase: _start_build(bm25_setup, targets[phase], phase) for phase in phases}
    errors = {}
    try:
        for phase, proc in procs.items():
            wait_for_marker(proc, phase)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130, phase
            errors[phase] = proc.stderr.read()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
    before = targets["manifest"]
    assert errors["manifest"] == (f"error: interrupted before the swap: the index at {before} is untouched "
                                  "(the partial build was removed)\n")
    assert leftovers(before) == []
    assert _answers(before, bm25_pipeline_config(before)) == bm25_setup["old_answers"]
    after = targets["swapped"]
    (previous,) = leftovers(after)
    assert errors["swapped"] == (f"error: interrupted after the swap: the new index is in place at {after}; "
                                 f"the next build removes the previous one, left at {previous}\n")
    assert _answers(after, bm25_pipeline_config(after)) == bm25_setup["new_answers"]
    build_index(bm25_setup["new_corpus"], after, bm25_only(), show_progress=False)
    assert leftovers(after) == []


def test_interrupt_between_the_two_renames_says_where_the_previous_index_waits(tmp_path, bm25_setup, monkeypatch):
    target = copy_index(bm25_setup["old"], tmp_path / "idx")
    _interrupt_the_fallback_swap(monkeypatch)
    with pytest.raises(KeyboardInterrupt) as err:
        build_index(bm25_setup["new_corpus"], target, bm25_only(), show_progress=False)
    (old,) = leftovers(target)
    assert str(err.value) == (f"interrupted during the swap: no index at {target} for now; the previous one waits "
                              f"at {old} and the next build of {target} puts it back first")
