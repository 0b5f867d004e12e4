"""Every script: exit 0 on success; on bad input exit 2 with `error: ...` on stderr and no traceback (config errors: a
headline plus one indented line per bad key); `--debug` lets the exception and its traceback through.

Most cases run the script file in-process (runpy, as `__main__`) to stay fast; a few run it as a real process."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from index.builder import build_index
from index.documents import CorpusError
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
    ("search/missing-index", "search.py", ["--index", "{tmp}/nope", "ocean"], "does not exist; build one"),
    ("search/not-an-index", "search.py", ["--index", "{not_an_index}", "ocean"], "is not an index (no manifest"),
    ("search/damaged-index", "search.py", ["--index", "{damaged}", "ocean"], "sha256 does not match the manifest"),
    ("search/config-needs-dense", "search.py", ["--index", "{index}", "--config", str(ROOT / "configs" /
                                                                                     "default.yaml"), "ocean"],
     "the config enables dense but"),
    ("search/top-k-zero", "search.py", ["--index", "{index}", "--config", "{bm25_config}", "--top-k", "0", "ocean"],
     "top_k must be a positive integer, got 0"),
    ("search/config-typo", "search.py", ["--index", "{index}", "--config", "{typo_config}", "ocean"],
     "did you mean 'top_k'"),
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
        "error: the following arguments are required" in err)


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
