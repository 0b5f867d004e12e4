from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys

import pytest
import yaml

from index.builder import build_index
from index.directory import IndexDirectory
from tests.conftest import ROOT, SAMPLE_CORPUS, pipeline_config
from tests.reliability import bm25_only, bm25_pipeline_config


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_build_then_search_json(tmp_path, tiny_bi_encoder):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(tmp_path / "unused", tiny_bi_encoder)))
    out = run("scripts/build_index.py", "--config", str(config), "--corpus", str(SAMPLE_CORPUS),
              "--output", str(tmp_path / "idx"), "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["documents"] == 24 and summary["passages"] == 24 and summary["bytes_on_disk"] > 0

    out = run("scripts/search.py", "--index", str(tmp_path / "idx"), "--config", str(config), "--top-k", "3",
              "--json", "--quiet", "recycling aluminium energy", "sleep and memory")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [x["query"] for x in lines] == ["recycling aluminium energy", "sleep and memory"]
    first = lines[0]["results"][0]
    assert first["doc_id"] == "recycling-aluminium"
    assert {"doc_id", "score", "rank", "title", "text", "metadata", "stages"} <= set(first)
    assert first["stages"]["bm25"]["rank"] == 1

    # without --config the index's own build settings are used; the table is human-readable
    out = run("scripts/search.py", "--index", str(tmp_path / "idx"), "--quiet", "coffee")
    assert out.returncode == 0, out.stderr
    assert "query: coffee" in out.stdout and "Brewing coffee" in out.stdout


def run_in_process(monkeypatch, capsys, script: str, *args: str) -> tuple[int, str, str]:
    """A script run as `python scripts/<script>` would be, in this process (no second start-up of torch)."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def test_rebuild_never_deletes_the_corpus_or_a_note_in_the_index(tmp_path, monkeypatch, capsys):
    """`build_index.py --corpus IDX/corpus.jsonl --output IDX` used to delete corpus.jsonl and NOTES.md."""
    config = tmp_path / "bm25.yaml"
    config.write_text(yaml.safe_dump(bm25_pipeline_config(tmp_path / "unused")))
    idx = tmp_path / "idx"
    build_index(SAMPLE_CORPUS, idx, bm25_only(), show_progress=False)
    shutil.copy(SAMPLE_CORPUS, idx / "corpus.jsonl")
    (idx / "NOTES.md").write_text("mine")
    code, _, err = run_in_process(monkeypatch, capsys, "build_index.py", "--quiet", "--config", str(config),
                                  "--corpus", str(idx / "corpus.jsonl"), "--output", str(idx))
    assert code == 2 and err == (f"error: the corpus {idx / 'corpus.jsonl'} lies inside the output directory {idx}, "
                                 "which a rebuild replaces as a whole; move the corpus out of it or choose another "
                                 "--output\n")
    shutil.move(idx / "corpus.jsonl", tmp_path / "corpus.jsonl")
    code, _, err = run_in_process(monkeypatch, capsys, "build_index.py", "--quiet", "--config", str(config),
                                  "--corpus", str(tmp_path / "corpus.jsonl"), "--output", str(idx))
    assert code == 2 and err.startswith(f"error: {idx} holds entries that are not part of the index")
    assert "'NOTES.md'" in err and err.count("\n") == 1
    assert (idx / "NOTES.md").read_text() == "mine" and len(IndexDirectory.load(idx, verify=True).store) == 24


def test_output_symlink_is_reported_as_the_success_it_is(tmp_path, monkeypatch, capsys):
    """It used to swap the new index in, replace the link by a directory, report failure and leave a temp folder."""
    config = tmp_path / "bm25.yaml"
    config.write_text(yaml.safe_dump(bm25_pipeline_config(tmp_path / "unused")))
    real = tmp_path / "real"
    build_index(SAMPLE_CORPUS, real, bm25_only(), show_progress=False)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    code, out, err = run_in_process(monkeypatch, capsys, "build_index.py", "--quiet", "--json", "--config",
                                    str(config), "--corpus", str(SAMPLE_CORPUS), "--output", str(link))
    assert (code, err) == (0, "") and json.loads(out)["index"] == str(link)
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25.yaml", "link", "real"]
    assert len(IndexDirectory.load(link, verify=True).store) == 24
