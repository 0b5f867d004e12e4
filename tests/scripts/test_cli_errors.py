"""Every script: exit 0 on success; on bad input exit 2 with `error: ...` on stderr and no traceback (config errors: a
headline plus one indented line per bad key); `--debug` lets the exception and its traceback through.

Most cases run the script file in-process (runpy, as `__main__`) to stay fast; a few run it as a real process."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from index.builder import build_index
from index.documents import CorpusError
from retrieval import cli
from retrieval.evaluation import EvaluationResult
from retrieval.pipeline import SearchResult, StageScore
from tests.beir_data import write_beir
from tests.conftest import ROOT, SAMPLE_CORPUS
from tests.reliability import bm25_only

SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))


def run_script(name: str, *args: str, capsys) -> tuple[int, str, str]:
    """Run scripts/<name> as __main__ with these arguments; returns (exit code, stdout, stderr)."""
    argv = sys.argv
    sys.argv = [str(ROOT / "scripts" / name), *args]
    try:
        runpy.run_path(str(ROOT / "scripts" / name), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith(("WARNING ", "INFO "))]
    assert lines and lines[0].startswith("error: "), err
    assert len(lines) == 1 or all(line.startswith("  ") for line in lines[1:]), err
    assert message in err, err


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Configs, corpora and indexes, good and bad, shared by the cases below."""
    tmp = tmp_path_factory.mktemp("cli")
    f = {"tmp": tmp}
    f["bm25_config"] = tmp / "bm25.yaml"
    f["bm25_config"].write_text(yaml.safe_dump({"first_stage": {"dense": {"enabled": False}}}))
    f["typo_config"] = tmp / "typo.yaml"
    f["typo_config"].write_text("output: {topk: 3}\n")
    f["broken_yaml"] = tmp / "broken.yaml"
    f["broken_yaml"].write_text("first_stage: {bm25: [unclosed\n")
    f["hub_config"] = tmp / "hub.yaml"
    f["hub_config"].write_text(yaml.safe_dump({"first_stage": {"bm25": {"enabled": False},
                                                               "dense": {"model": "someone/does-not-exist"}}}))
    f["both_off"] = tmp / "off.yaml"
    f["both_off"].write_text("first_stage: {bm25: {enabled: false}, dense: {enabled: false}}\n")
    f["bad_json"] = tmp / "bad.jsonl"
    f["bad_json"].write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n')
    f["latin1"] = tmp / "latin1.jsonl"
    f["latin1"].write_bytes(b'{"_id": "a", "text": "caf\xe9"}\n')
    f["a_file"] = tmp / "a-file.txt"
    f["a_file"].write_text("not a directory")
    f["not_an_index"] = tmp / "not-an-index"
    f["not_an_index"].mkdir()
    (f["not_an_index"] / "notes.txt").write_text("keep me")
    f["index"] = tmp / "idx"
    build_index(SAMPLE_CORPUS, f["index"], bm25_only(), show_progress=False)
    f["damaged"] = tmp / "damaged"
    build_index(SAMPLE_CORPUS, f["damaged"], bm25_only(), show_progress=False)
    data = bytearray((f["damaged"] / "bm25.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (f["damaged"] / "bm25.npz").write_bytes(bytes(data))
    return f


# (case, script, arguments with {placeholders} from `files`, message expected on stderr)
BAD = [
    ("build/missing-corpus", "build_index.py", ["--config", "{bm25_config}", "--corpus", "{tmp}/nope.jsonl",
                                                "--output", "{tmp}/o1"], "nope.jsonl: no such file or folder"),
    ("build/invalid-json", "build_index.py", ["--config", "{bm25_config}", "--corpus", "{bad_json}", "--output",
                                              "{tmp}/o2"], "bad.jsonl:2: invalid JSON"),
    ("build/not-utf8", "build_index.py", ["--config", "{bm25_config}", "--corpus", "{latin1}", "--output",
                                          "{tmp}/o3"], "latin1.jsonl:1: not valid UTF-8"),
    ("build/missing-config", "build_index.py", ["--config", "{tmp}/nope.yaml", "--corpus", "{bad_json}"],
     "nope.yaml does not exist"),
    ("build/config-typo", "build_index.py", ["--config", "{typo_config}", "--corpus", "{bad_json}"],
     "output.topk: unknown key (did you mean 'top_k'?)"),
    ("build/broken-yaml", "build_index.py", ["--config", "{broken_yaml}", "--corpus", "{bad_json}"],
     "not valid YAML"),
    ("build/both-retrievers-off", "build_index.py", ["--config", "{both_off}", "--corpus", "{bad_json}"],
     "both disabled"),
    ("build/no-output", "build_index.py", ["--config", "{bm25_config}", "--corpus", "{bad_json}"],
     "no --output given and the config has no index.path"),
    ("build/output-is-a-file", "build_index.py", ["--config", "{bm25_config}", "--corpus", str(SAMPLE_CORPUS),
                                                  "--output", "{a_file}"], "exists and is a file"),
    ("build/output-under-a-file", "build_index.py", ["--config", "{bm25_config}", "--corpus", str(SAMPLE_CORPUS),
                                                     "--output", "{a_file}/idx"], "a-file.txt"),
    ("build/output-not-an-index", "build_index.py", ["--config", "{bm25_config}", "--corpus", str(SAMPLE_CORPUS),
                                                     "--output", "{not_an_index}"], "is not an index; refusing"),
    ("build/model-offline", "build_index.py", ["--config", "{hub_config}", "--corpus", str(SAMPLE_CORPUS),
                                               "--output", "{tmp}/o4"], "'bundled:all-MiniLM-L6-v2'"),
    ("serve/missing-index", "serve.py", ["--index", "{tmp}/nope"], "does not exist; build one"),
    ("serve/damaged-index", "serve.py", ["--index", "{damaged}"], "sha256 does not match the manifest"),
    ("load-test/missing-index", "load_test.py", ["--index", "{tmp}/nope"], "not an index (no manifest.json)"),
    ("load-test/no-queries-file", "load_test.py", ["--index", "{index}", "--queries", "{tmp}/nope"],
     "no queries.jsonl"),
    ("search/missing-index", "search.py", ["--index", "{tmp}/nope", "ocean"], "does not exist; build one"),
    ("search/not-an-index", "search.py", ["--index", "{not_an_index}", "ocean"], "is not an index (no manifest"),
    ("search/damaged-index", "search.py", ["--index", "{damaged}", "ocean"], "sha256 does not match the manifest"),
    ("search/config-needs-dense", "search.py", ["--index", "{index}", "--config", str(ROOT / "configs" /
                                                                                     "default.yaml"), "ocean"],
     "the config enables dense but"),
    ("search/config-typo", "search.py", ["--index", "{index}", "--config", "{typo_config}", "ocean"],
     "did you mean 'top_k'"),
    ("update/missing-index", "update_index.py", ["--index", "{tmp}/nope", "--merge"], "is not an index"),
    ("update/existing-id", "update_index.py", ["--index", "{index}", "--add", str(SAMPLE_CORPUS)],
     "already holds document"),
    ("update/missing-ids-file", "update_index.py", ["--index", "{index}", "--delete-ids", "{tmp}/nope.txt"],
     "--delete-ids"),
    ("search/bad-filter", "search.py", ["--index", "{index}", "--filter", '{{"yaer": 1}}', "ocean"],
     "no document has the field 'yaer'"),
    ("demo/config-typo", "demo.py", ["--config", "{typo_config}"], "did you mean 'top_k'"),
    ("demo/output-is-a-file", "demo.py", ["--config", "{bm25_config}", "--output", "{a_file}"],
     "exists and is a file"),
    ("evaluate/missing-dataset", "evaluate.py", ["--config", "{bm25_config}", "--dataset", "{tmp}/no-such-beir"],
     "no-such-beir"),
    ("evaluate/config-typo", "evaluate.py", ["--config", "{typo_config}", "--dataset", "{tmp}"],
     "did you mean 'top_k'"),
    ("train_reranker/missing-dataset", "train_reranker.py", ["--dataset", "{tmp}/no-such-beir", "--output",
                                                             "{tmp}/model"], "no-such-beir"),
    ("benchmark/missing-dataset", "benchmark.py", ["--config", "{bm25_config}", "--dataset", "{tmp}/no-such-beir"],
     "no-such-beir"),
    ("tune_fusion/missing-dataset", "tune_fusion.py", ["--config", "{bm25_config}", "--dataset",
                                                       "{tmp}/no-such-beir"], "no-such-beir"),
    ("gpu_check/not-a-cuda-device", "gpu_check.py", ["--device", "cpu"], "is not a CUDA device"),
    ("rerank_options/no-rerank-block", "rerank_options.py", ["--config", "{bm25_config}", "--dataset",
                                                             "{tmp}/no-such-beir"], "has no rerank: block"),
    ("distill_reranker/test-split", "distill_reranker.py", ["--index", "{tmp}", "--dataset", "{tmp}", "--layers", "2",
                                                            "--output", "{tmp}/student", "--split", "test"], "test"),
    ("rerank_options/missing-dataset", "rerank_options.py", ["--dataset", "{tmp}/no-such-beir"], "no-such-beir"),
]


def _fill(args: list[str], files: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in args]


@pytest.mark.parametrize(("case", "script", "args", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_gives_one_error_line(files, capsys, case, script, args, message):
    code, _, err = run_script(script, "--quiet", *_fill(args, files), capsys=capsys)  # no progress bars
    assert_one_error(code, err, message)


def test_every_script_has_bad_input_cases():
    assert {script for _, script, _, _ in BAD} == set(SCRIPTS)


def test_nothing_was_touched_by_the_failed_builds(files):
    assert (files["not_an_index"] / "notes.txt").read_text() == "keep me"
    assert files["a_file"].read_text() == "not a directory"
    assert not any((files["tmp"] / name).exists() for name in ("o1", "o2", "o3", "o4"))
    assert sorted(p.name for p in files["tmp"].iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_unknown_options(capsys, script):
    code, out, _ = run_script(script, "--help", capsys=capsys)
    assert code == 0 and out.startswith("usage: ")
    code, _, err = run_script(script, "--no-such-option", capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].endswith("error: unrecognized arguments: --no-such-option") or (
        "error: the following arguments are required" in err) or "error: one of the arguments" in err


def test_debug_lets_the_exception_through(files, capsys):
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: invalid JSON"):
        run_script("build_index.py", "--debug", "--config", str(files["bm25_config"]), "--corpus",
                   str(files["bad_json"]), "--output", str(files["tmp"] / "o5"), capsys=capsys)


def test_success_exits_zero_in_process(files, capsys):
    code, out, err = run_script("search.py", "--index", str(files["index"]), "--config", str(files["bm25_config"]),
                                "--quiet", "--top-k", "2", "ocean tides", capsys=capsys)
    assert code == 0, err
    assert "query: ocean tides" in out
    code, out, err = run_script("demo.py", "--config", str(files["bm25_config"]), "--output",
                                str(files["tmp"] / "demo"), "--quiet", "--top-k", "1", "ocean", capsys=capsys)
    assert code == 0, err
    assert "indexed 24 documents" in out


def _process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_real_processes(files):
    """Exit statuses as a shell sees them: 0 on success, 2 with one line on bad input, 1 and a traceback
    with --debug."""
    build = ["scripts/build_index.py", "--config", str(files["bm25_config"]), "--quiet"]
    procs = {
        "ok": _process(*build, "--corpus", str(SAMPLE_CORPUS), "--output", str(files["tmp"] / "p-ok")),
        "bad": _process(*build, "--corpus", str(files["bad_json"]), "--output", str(files["tmp"] / "p-bad")),
        "debug": _process(*build, "--debug", "--corpus", str(files["bad_json"]), "--output",
                          str(files["tmp"] / "p-debug")),
        "search-bad": _process("scripts/search.py", "--index", str(files["tmp"] / "nope"), "ocean"),
    }
    done = {name: (p.wait(timeout=300), *p.communicate()) for name, p in procs.items()}
    code, out, err = done["ok"]
    assert code == 0 and "documents  24" in out, err
    code, _, err = done["bad"]
    assert code == 2 and err.strip().count("\n") == 0 and "bad.jsonl:2: invalid JSON" in err, err
    code, _, err = done["debug"]
    assert code == 1 and "Traceback (most recent call last)" in err and "CorpusError" in err, err
    code, _, err = done["search-bad"]
    assert code == 2 and err.strip().startswith("error: index directory") and "\n" not in err.strip(), err


# -- numeric options (issue 10, case 9) -----------------------------------------------------------------------------

# (script, option, bad value, the bound the error states); every numeric option of every script. The required
# arguments point at a missing dataset, so before the option was checked each of these ran into other errors or,
# with a real dataset, divided by zero or printed tables of nothing.
BAD_VALUES = [
    *[("benchmark.py", option, "0", ">= 1") for option in (
        "--repeats", "--k", "--batch-size", "--e2e-queries", "--e2e-batches", "--bm25-queries", "--dense-passages",
        "--dense-queries", "--rerank-queries", "--rerank-depth", "--rerank-chunks", "--curve-queries")],
    ("benchmark.py", "--k", "1.5", "an integer >= 1"),
    ("benchmark.py", "--curve-depths", "10,0", "each an integer >= 1"),
    ("benchmark.py", "--curve-depths", "10,,20", "each an integer >= 1"),
    ("benchmark.py", "--dev-fraction", "0", "in (0, 1]"),
    ("benchmark.py", "--dev-fraction", "nan", "in (0, 1]"),
    ("benchmark.py", "--dev-seed", "-1", "in [0, 4294967295]"),
    ("tune_fusion.py", "--depth", "0", ">= 1"),
    ("train_reranker.py", "--epochs", "0", "> 0"),
    ("train_reranker.py", "--epochs", "inf", "> 0"),
    ("train_reranker.py", "--max-steps", "0", ">= 1 or -1"),
    ("train_reranker.py", "--negatives", "-1", ">= 0"),
    ("train_reranker.py", "--candidates", "0", ">= 1"),
    ("train_reranker.py", "--skip-top", "-1", ">= 0"),
    ("train_reranker.py", "--pseudo-queries", "-1", ">= 0"),
    ("train_reranker.py", "--in-batch-negatives", "-1", ">= 0"),
    ("train_reranker.py", "--batch-size", "0", ">= 1"),
    ("train_reranker.py", "--lr", "0", "> 0"),
    ("train_reranker.py", "--lr", "nan", "> 0"),
    ("train_reranker.py", "--warmup", "1.5", "in [0, 1)"),
    ("train_reranker.py", "--max-length", "4", ">= 8"),
    ("train_reranker.py", "--seed", "-1", "in [0, 4294967295]"),
    ("train_reranker.py", "--dev-fraction", "1.5", "in [0, 1)"),
    ("train_reranker.py", "--dev-fraction", "1", "in [0, 1)"),
    ("train_reranker.py", "--dev-seed", "-1", "in [0, 4294967295]"),
    ("train_reranker.py", "--eval-top-n", "0", ">= 1"),
    ("search.py", "--top-k", "0", ">= 1"),
    ("search.py", "--top-k", "-3", ">= 1"),
    ("evaluate.py", "--max-queries", "0", ">= 1"),
    ("evaluate.py", "--batch-size", "0", ">= 1"),
    ("demo.py", "--top-k", "0", ">= 1"),
]
REQUIRED = {"benchmark.py": ["--dataset", "{tmp}/no-such-beir", "--config", "{bm25_config}"],
            "tune_fusion.py": ["--dataset", "{tmp}/no-such-beir", "--config", "{bm25_config}"],
            "train_reranker.py": ["--dataset", "{tmp}/no-such-beir", "--output", "{tmp}/model"],
            "search.py": ["--index", "{index}", "--config", "{bm25_config}", "ocean"],
            "evaluate.py": ["--dataset", "{tmp}/no-such-beir", "--config", "{bm25_config}"],
            "demo.py": ["--config", "{bm25_config}", "--output", "{tmp}/demo-bad-value"]}


@pytest.mark.parametrize(("script", "option", "value", "bound"), BAD_VALUES,
                         ids=[f"{s}{o}={v}" for s, o, v, _ in BAD_VALUES])
def test_a_bad_numeric_value_is_a_usage_error_naming_the_option(files, capsys, script, option, value, bound):
    code, out, err = run_script(script, "--quiet", *_fill(REQUIRED[script], files), f"{option}={value}",
                                capsys=capsys)
    assert code == 2 and "Traceback" not in err and not out, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: argument {option}: must be ") and bound in last, err
    assert last.endswith(f"got {value!r}"), err


@given(st.integers(-(10**12), 10**12))
@settings(max_examples=200, deadline=None)
def test_integer_types_accept_exactly_their_range(value):
    text = str(value)
    for parse, inside in ((cli.positive_int, value >= 1), (cli.non_negative_int, value >= 0),
                          (cli.seed, 0 <= value < 2**32)):
        if inside:
            assert parse(text) == value
        else:
            with pytest.raises(argparse.ArgumentTypeError, match=f"got {text!r}$"):
                parse(text)


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=8)))
@settings(max_examples=200, deadline=None)
def test_float_types_accept_exactly_finite_numbers_in_their_range(text):
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    finite = math.isfinite(number)
    for parse, inside in ((cli.positive_float, finite and number > 0), (cli.fraction, finite and 0 <= number <= 1)):
        if inside:
            assert parse(text) == number
        else:
            with pytest.raises(argparse.ArgumentTypeError, match="^must be a number"):
                parse(text)


# -- output safety (issue 10, case 18) ------------------------------------------------------------------------------

HOSTILE = [
    {"_id": "esc", "title": "\x1b[2J\x1b[31mred alert\x1b[0m", "text": "ocean tides", "ratio": math.nan,
     "scale": math.inf, "nested": {"low": -math.inf, "ok": 1.5}},
    {"_id": "two\nlines", "title": "bidi \u202etxet\u202c and \u2066isolate\u2069", "text": "ocean waves"},
    {"_id": "tab\tand\rcr", "title": "", "text": "ocean\x07bell\x9bc1 text\u2028next"},
]
# What a terminal would act on or a table would break at: C0/C1 controls and DEL, line and paragraph separators,
# bidirectional overrides and isolates.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture(scope="module")
def hostile_index(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in HOSTILE), encoding="utf-8")  # NaN/Infinity: json's
    build_index(corpus, tmp / "idx", bm25_only(), show_progress=False)
    return tmp / "idx"


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json(files, hostile_index, capsys):
    code, out, err = run_script("search.py", "--quiet", "--index", str(hostile_index), "--config",
                                str(files["bm25_config"]), "--json", "ocean", capsys=capsys)
    assert code == 0, err
    results = {r["doc_id"]: r for r in _strict(out)["results"]}
    assert set(results) == {d["_id"] for d in HOSTILE}
    assert results["esc"]["metadata"] == {"ratio": None, "scale": None, "nested": {"low": None, "ok": 1.5}}
    assert results["two\nlines"]["title"] == HOSTILE[1]["title"]  # JSON escapes it; the data stays exact


def test_table_output_neutralises_control_characters(files, hostile_index, capsys):
    code, out, err = run_script("search.py", "--quiet", "--index", str(hostile_index), "--config",
                                str(files["bm25_config"]), "ocean \x1b]0;title\x07", "ocean", capsys=capsys)
    assert code == 0, err
    assert not UNSAFE.findall(out), out
    assert "\\x1b[31mred alert" in out and "two\\nlines" in out and "\\u202etxet" in out
    assert "query: ocean \\x1b]0;title\\x07" in out
    # Two queries: each is a blank line, the query, the header and one line per result.
    assert len(out.splitlines()) == 2 * (3 + len(HOSTILE)), out


@given(st.text(), st.text(), st.text())
@settings(max_examples=200, deadline=None)
def test_any_id_title_or_query_keeps_the_table_one_line_per_result(doc_id, title, query):
    hit = SearchResult(doc_id=doc_id, score=1.0, rank=1, title=title, text=title + " text",
                       stages={"bm25": StageScore(1.0, 1)})
    table = cli.format_results(query, [hit, hit], ["bm25"])
    assert not UNSAFE.findall(table)
    assert len(table.split("\n")) == 5  # blank, query, header, two results


def test_trec_run_files_refuse_ids_with_whitespace(files, tmp_path, capsys):
    beir = write_beir(tmp_path / "beir", queries={"q 1": ("ocean tides", {"tides": 2}),
                                                   "q2": ("coffee", {"coffee": 1})})
    runs = tmp_path / "runs"
    code, _, err = run_script("evaluate.py", "--quiet", "--config", str(files["bm25_config"]), "--dataset",
                              str(beir), "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(runs),
                              capsys=capsys)
    assert_one_error(code, err, "query id 'q 1' contains whitespace")
    assert not list(runs.glob("*.trec"))  # nothing half-written
    # The same for a document id, an empty id, or a tag, whatever whitespace it holds.
    direct = tmp_path / "direct"
    for runs, tag, named in (({"q1": [("ok", 2.0), ("doc\tone", 1.0)]}, None, "document id 'doc\\tone'"),
                             ({"": [("ok", 1.0)]}, None, "query id '' is empty"),
                             ({"q1": [("ok", 1.0)]}, "my\u00a0tag", "tag 'my\\xa0tag'")):
        result = EvaluationResult(dataset="d", split="test", per_query={}, runs={"bm25": runs}, qrels={})
        with pytest.raises(ValueError, match=re.escape(named)):
            result.write_runs(direct, tag=tag)
        assert not direct.exists()


def test_the_library_still_refuses_what_the_option_types_catch_first(tmp_path):
    # evaluate.py --max-queries 0 is now an argparse error; a caller of load_beir still gets one clear message.
    from retrieval.evaluation import EvaluationError, load_beir

    with pytest.raises(EvaluationError, match="max_queries must be a positive integer, got 0"):
        load_beir(write_beir(tmp_path / "beir"), max_queries=0)
