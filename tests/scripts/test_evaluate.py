from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys

import pytest
import yaml

from tests.beir_data import QUERIES, write_beir
from tests.conftest import ROOT, pipeline_config

SCRIPT = ROOT / "scripts" / "evaluate.py"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_bi_encoder):
    """A tiny BEIR folder and a config (BM25 + tiny bi-encoder) written to disk."""
    root = tmp_path_factory.mktemp("evaluate")
    data = write_beir(root / "tiny")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(root / "unused", tiny_bi_encoder)))
    return root, data, config


def run_script(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the script in this process (same code path as the command line, without a new interpreter)."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_builds_caches_and_reports(tiny, tmp_path):
    root, data, config = tiny
    cache, out = tmp_path / "cache", tmp_path / "report.json"
    cmd = [sys.executable, str(SCRIPT), "--config", str(config), "--dataset", str(data), "--cache-dir", str(cache),
           "--output", str(out), "--run-dir", str(tmp_path / "runs"), "--json", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    assert (report["dataset"], report["split"], report["num_queries"]) == ("tiny", "test", len(QUERIES))
    assert list(report["stages"]) == ["bm25", "dense", "hybrid"]
    for metrics in report["stages"].values():
        assert set(metrics) == {"ndcg@10", "mrr@10", "map@100", "p@10"}  # top_k 20 < 24 docs: no deep recall
        assert all(0 <= v <= 1 for v in metrics.values())
    assert {"load", "index", "bm25", "dense", "hybrid"} <= set(report["seconds"])
    assert report["issues"]["unjudged_queries"] == 1
    assert set(report["significance"]) == {"dense", "hybrid"}
    assert report["significance"]["hybrid"]["baseline"] == "bm25"
    assert 0 <= report["significance"]["hybrid"]["p_value"] <= 1
    (index,) = cache.iterdir()
    assert report["index"] == str(index)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"tiny-test-{s}.trec"
                                                                     for s in ("bm25", "dense", "hybrid")]


def test_table_and_index_reuse(tiny, sample_index, monkeypatch, capsys):
    root, data, config = tiny
    code, out, err = run_script(monkeypatch, capsys, "--config", str(config), "--dataset", str(data),
                                "--index", str(sample_index), "--stages", "bm25,hybrid", "--max-queries", "3",
                                "--quiet")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("tiny / test: 3 queries")
    assert lines[1].split() == ["ndcg@10", "mrr@10", "map@100", "p@10", "seconds"]
    assert [ln.split()[0] for ln in lines[3:5]] == ["bm25", "hybrid"]
    assert lines[5].startswith("hybrid vs bm25 on ndcg@10: ") and "(t-test, n=3)" in lines[5]


def test_unknown_qrels_ids_are_reported_not_fatal(tiny, sample_index, tmp_path, monkeypatch, capsys, caplog):
    root, _, config = tiny
    data = write_beir(tmp_path / "odd", extra_qrels="ghost\ttides\t1\nq1\tno-such-doc\t1\n")
    code, out, err = run_script(monkeypatch, capsys, "--config", str(config), "--dataset", str(data),
                                "--index", str(sample_index), "--stages", "bm25", "--json")
    assert code == 0, err
    issues = json.loads(out)["issues"]
    assert (issues["unknown_query_rows"], issues["unknown_document_rows"]) == (1, 1)
    assert "not in queries.jsonl" in caplog.text and "not in the corpus" in caplog.text


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-split", "error: .*no qrels/dev.tsv for split 'dev'; splits available: test"),
        ("not-beir", "error: .*is not a BEIR dataset folder: no corpus.jsonl"),
        ("empty-split", "error: .*the 'test' split has no judgments"),
        ("rerank", "error: stage 'rerank' is not available in this pipeline .*available: bm25, dense, hybrid"),
    ],
)
def test_bad_input_is_one_line_exit_2(case, message, tiny, sample_index, tmp_path, monkeypatch, capsys):
    root, data, config = tiny
    args = ["--config", str(config), "--dataset", str(data), "--index", str(sample_index), "--quiet"]
    if case == "no-split":
        args += ["--split", "dev"]
    elif case == "not-beir":
        (tmp_path / "notes.txt").write_text("hello")
        args[3] = str(tmp_path)
    elif case == "empty-split":
        args[3] = str(write_beir(tmp_path / "empty", queries={}))
    elif case == "rerank":
        args += ["--stages", "bm25,rerank"]
    code, out, err = run_script(monkeypatch, capsys, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.match(message, err.strip()), err


@pytest.mark.parametrize("corpus", ["another", "a-part"])
def test_an_index_of_another_corpus_is_refused(corpus, tiny, sample_index, tmp_path, monkeypatch, capsys):
    """Scores against an index of other documents mean nothing: one line naming both sides and the fix."""
    root, _, config = tiny
    if corpus == "another":
        docs = [{"_id": f"d{i}", "title": "", "text": f"ocean tides and the moon, note {i}"} for i in range(5)]
        data = write_beir(tmp_path / "other", queries={"q1": ("ocean tides", {"d1": 1})})
        missing, extra = r"5 of its 5 documents are not in the index \(e.g. 'd0', 'd1', 'd2'\)", r"24 of the index's"
    else:  # the index holds more than the dataset: it was built from another (larger) corpus
        data = write_beir(tmp_path / "part")
        docs = [json.loads(line) for line in (data / "corpus.jsonl").read_text().splitlines()][:20]
        missing, extra = r"0 of its 20 documents are not in the index", r"4 of the index's 24 documents are not"
    (data / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    code, out, err = run_script(monkeypatch, capsys, "--config", str(config), "--dataset", str(data),
                                "--index", str(sample_index), "--stages", "bm25", "--quiet")
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1, err
    assert re.match(rf"error: the index {re.escape(str(sample_index))} does not hold the corpus of "
                    rf"{re.escape(str(data))}: {missing}.* and {extra}.*; evaluate with an index built from "
                    rf"{re.escape(str(data / 'corpus.jsonl'))} \(scripts/evaluate.py builds one when --index is "
                    r"left out\)$", err.strip()), err
