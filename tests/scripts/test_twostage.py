"""The installed `twostage` command, run as a user runs it (a real process): --version, --help with an example per
subcommand, one-line usage errors, and build then search on the sample corpus with the tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from index.builder import LIBRARY_VERSION, build_index
from retrieval.cli import COMMANDS
from tests.beir_data import write_beir
from tests.conftest import ROOT, SAMPLE_CORPUS, pipeline_config
from tests.reliability import bm25_only

TWOSTAGE = Path(sys.executable).parent / "twostage"


def twostage(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(TWOSTAGE), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_version_has_one_source(tmp_path):
    out = twostage("--version", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"twostage {version('twostage')}"
    assert version("twostage") == LIBRARY_VERSION  # what every manifest records


def test_help_lists_every_command_with_an_example(tmp_path):
    out = twostage("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for name in COMMANDS:
        assert f"\n    {name}" in out.stdout, name  # listed, with its summary
        assert f"\n  twostage {name}" in out.stdout, name  # and an example command line


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_help_shows_its_options_and_an_example(name, tmp_path):
    out = twostage(name, "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: twostage {name} ")
    assert "--quiet" in out.stdout and "--debug" in out.stdout
    example = out.stdout.split("\nexample")[1]
    assert f"\n  twostage {name}" in example


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        ([], "error: no command given; choose one of: build, update, search, eval,", "twostage --help"),
        (["nope"], "error: argument COMMAND: invalid choice: 'nope'", "twostage --help"),
        (["--nope"], "error: unrecognized arguments: --nope", "twostage --help"),
        (["search", "--index", "idx", "--nope", "ocean"], "error: unrecognized arguments: --nope",
         "twostage search --help"),
        (["build", "--corpus", "c.jsonl"], "error: the following arguments are required: --config",
         "twostage build --help"),
        (["search", "--index", "idx", "--top-k", "0", "ocean"],
         "error: argument --top-k: must be an integer >= 1, got '0'", "twostage search --help"),
        (["eval", "--dataset", "d", "--batch-size", "x"], "error: argument --batch-size: must be an integer >= 1",
         "twostage eval --help"),
    ],
    ids=["no-command", "unknown-command", "unknown-flag", "unknown-command-flag", "missing-option", "bad-value",
         "bad-type"],
)
def test_bad_usage_is_one_error_line_and_a_hint(args, message, hint, tmp_path):
    out = twostage(*args, cwd=tmp_path)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.splitlines() == [out.stderr.splitlines()[0], f"see: {hint}"], out.stderr
    assert out.stderr.startswith(message), out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--index", "nope", "ocean"], "error: index directory"),
        (["eval", "--dataset", "nope"], "error: give --config (the index is then built under --cache-dir) or --index"),
    ],
    ids=["missing-index", "eval-without-config-or-index"],
)
def test_bad_input_is_one_error_line(args, message, tmp_path):
    out = twostage(*args, cwd=tmp_path)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_bi_encoder) -> tuple[Path, dict, dict]:
    """`twostage build` of the sample corpus with BM25 + the tiny bi-encoder, chunked into short passages."""
    tmp = tmp_path_factory.mktemp("twostage")
    config = tmp / "c.yaml"
    raw = pipeline_config(tmp / "unused", tiny_bi_encoder)
    raw["index"]["chunking"] = {"max_words": 12, "overlap": 2}
    config.write_text(yaml.safe_dump(raw))
    out = twostage("build", "--config", str(config), "--corpus", str(SAMPLE_CORPUS), "--output", str(tmp / "idx"),
                   "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    return tmp / "idx", json.loads(out.stdout), raw


def test_build_reports_the_index(built):
    idx, summary, _ = built
    assert summary["index"] == str(idx) and summary["documents"] == 24 and summary["passages"] > 24
    assert summary["bytes_on_disk"] > 0
    assert list(summary["phases"]) == ["read", "bm25", "dense", "manifest"]  # seconds per phase, in build order
    assert all(seconds >= 0 for seconds in summary["phases"].values())


def test_build_table_shows_seconds_per_phase(tmp_path):
    out = twostage("build", "--config", str(ROOT / "configs" / "bm25.yaml"), "--corpus", str(SAMPLE_CORPUS),
                   "--output", str(tmp_path / "idx"), "--quiet")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"index      {tmp_path / 'idx'}" and lines[1] == "documents  24"
    at = lines.index(next(line for line in lines if line.startswith("seconds ")))
    assert [line.split()[0] for line in lines[at + 1:at + 4]] == ["read", "bm25", "manifest"]
    assert lines[at + 4].startswith("size ")


def test_search_without_config_runs_the_pipeline_the_index_was_built_with(built):
    idx, _, _ = built
    out = twostage("search", "--index", str(idx), "--top-k", "3", "--json", "--quiet", "recycling aluminium energy",
                   "sleep and memory")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [x["query"] for x in lines] == ["recycling aluminium energy", "sleep and memory"]
    first = lines[0]["results"][0]
    assert first["doc_id"] == "recycling-aluminium"
    assert set(first["stages"]) == {"bm25", "dense", "hybrid"}  # the stored pipeline, not a BM25-only default
    passage = first["passage"]
    assert passage["id"].startswith("recycling-aluminium#") and passage["start"] < passage["end"]
    assert first["text"][passage["start"]:passage["end"]] == passage["text"]  # offsets into the document text
    assert first["text_truncated"] is False and first["passages"] == []


def test_search_json_lists_passages_and_says_when_text_is_cut(built, tmp_path):
    idx, _, _ = built
    out = twostage("search", "--index", str(idx), "--top-k", "1", "--json", "--quiet", "--passages", "coffee")
    assert out.returncode == 0, out.stderr
    (hit,) = json.loads(out.stdout)["results"]
    assert hit["passages"][0] == hit["passage"] and len(hit["passages"]) > 1  # every matched passage, best first
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"_id": "long", "title": "", "text": "ocean tides " * 40}) + "\n")
    build_index(long, tmp_path / "idx", bm25_only(), show_progress=False)
    for flags, cut in (((), True), (("--full-text",), False)):
        out = twostage("search", "--index", str(tmp_path / "idx"), "--json", "--quiet", *flags, "ocean")
        assert out.returncode == 0, out.stderr
        (hit,) = json.loads(out.stdout)["results"]
        assert hit["text_truncated"] is cut and len(hit["text"]) == (300 if cut else 480)
        assert hit["passage"] is None  # an unchunked index


def test_search_table_marks_the_query_terms_in_a_snippet(built):
    idx, _, _ = built
    out = twostage("search", "--index", str(idx), "--top-k", "2", "--quiet", "recycling aluminium")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1] == "query: recycling aluminium" and lines[2].endswith("title | snippet")
    assert "[aluminium]" in lines[3] or "[Aluminium]" in lines[3], out.stdout  # not a terminal: brackets
    assert "\x1b" not in out.stdout


def test_eval_without_config_evaluates_the_pipeline_stored_in_the_index(built, tmp_path):
    idx, _, _ = built
    data = write_beir(tmp_path / "beir")
    out = twostage("eval", "--dataset", str(data), "--index", str(idx), "--json", "--quiet",
                   "--output", str(tmp_path / "report.json"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert list(report["stages"]) == ["bm25", "dense", "hybrid"] and report["config"] is None
    assert report["index"] == str(idx) and report["notes"] == []  # no reranker: nothing to note
    assert json.loads((tmp_path / "report.json").read_text()) == report


def test_search_reports_reranker_truncation_once_at_the_end(built, tiny_cross_encoder, tmp_path):
    idx, _, raw = built
    config = tmp_path / "rerank.yaml"
    config.write_text(yaml.safe_dump({**raw, "rerank": {"model": str(tiny_cross_encoder), "top_n": 5,
                                                        "max_length": 8}}))
    out = twostage("search", "--index", str(idx), "--config", str(config), "--json", "ocean tides", "coffee beans")
    assert out.returncode == 0, out.stderr
    assert [len(json.loads(line)["results"]) for line in out.stdout.splitlines()] == [10, 10]
    notes = [line for line in out.stderr.splitlines() if "reranker: " in line]
    assert len(notes) == 1 and notes[0].startswith("INFO retrieval.commands.search: reranker: "), out.stderr
    assert "were cut to it" in notes[0]
    quiet = twostage("search", "--index", str(idx), "--config", str(config), "--json", "--quiet", "ocean tides")
    assert quiet.returncode == 0 and "reranker: " not in quiet.stderr, quiet.stderr
    # --quiet and --debug work before the command too
    before = twostage("--quiet", "search", "--index", str(idx), "--config", str(config), "--json", "ocean tides")
    assert before.returncode == 0 and "reranker: " not in before.stderr, before.stderr
