"""`scripts/rerank_options.py`: every second-stage option from one reranking pass, ranked as the pipeline ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from retrieval import SearchPipeline
from retrieval.config import load_config
from retrieval.evaluation import evaluate, load_beir
from retrieval.evaluation.options import Option, ScoredHeads, option_grid, option_run, option_table, score_heads
from retrieval.scores import Combination
from tests.beir_data import write_beir
from tests.conftest import ROOT, pipeline_config


@pytest.fixture
def setup(tmp_path, sample_index, tiny_bi_encoder, tiny_cross_encoder):
    data = write_beir(tmp_path / "beir")
    raw = pipeline_config(sample_index, tiny_bi_encoder)
    raw["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 8, "interpolation": 0.5, "max_length": 64}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    return data, config, raw


def _script(*args):
    return subprocess.run([sys.executable, "scripts/rerank_options.py", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)


def test_script_prints_every_option_per_split_and_reuses_its_scores(tmp_path, setup):
    data, config, _ = setup
    ids = tmp_path / "ids.txt"
    ids.write_text("q1\nq2\nq3\n")
    args = ["--config", config, "--dataset", data, "--dataset", f"{data}:test:{ids}", "--top-n", "10",
            "--max-lengths", "32,64", "--cache-dir", tmp_path / "cache", "--scores-dir", tmp_path / "scores",
            "--quiet"]
    proc = _script(*args, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert len(report["ndcg@10"]) == 2
    full, part = report["ndcg@10"].values()
    assert {"first stage alone", "reranker alone", "rrf k=60 w=0.5", "adaptive minmax w=0.3 full=0.5",
            "max_length=32", "max_length=64", "the config's own (top_n=8, max_length=64)"} <= set(full)
    assert set(full) == set(part) and all(0 <= v <= 1 for v in full.values())
    assert len(list((tmp_path / "scores").iterdir())) == 2
    proc = _script(*args)  # scores cached: a table, no reranking
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first stage alone" in proc.stdout and "worst change" in proc.stdout and "CPU:" in proc.stdout


def test_an_option_scores_what_the_pipeline_with_its_settings_scores(setup):
    data, _, raw = setup
    beir = load_beir(data, "test")
    pipe = SearchPipeline(load_config(raw))
    heads = score_heads(pipe, beir.queries, top_n=10, max_lengths=[64])
    for settings, option in [({"interpolation": 0.5}, Option("a", Combination(0.5), top_n=8, max_length=64)),
                             ({"combination": "rrf", "interpolation": 0.3, "rrf_k": 10, "top_n": 10},
                              Option("b", Combination(0.3, "rrf", rrf_k=10), top_n=10, max_length=64)),
                             ({"combination": "adaptive", "interpolation": 0.3, "normalization": "zscore"},
                              Option("c", Combination(0.3, "adaptive", "zscore"), top_n=8, max_length=64))]:
        cfg = {**raw, "rerank": {**raw["rerank"], **settings}}
        want = evaluate(SearchPipeline(load_config(cfg)), beir, ["rerank"]).per_query["rerank"]["ndcg@10"].mean()
        got = option_table(heads, beir.qrels, [option])[0]["ndcg@10"]
        assert got == pytest.approx(want, abs=1e-6), settings


def test_cached_scores_round_trip_and_only_missing_lengths_are_scored(setup, tmp_path):
    data, _, raw = setup
    beir = load_beir(data, "test")
    pipe = SearchPipeline(load_config(raw))
    heads = score_heads(pipe, beir.queries, top_n=5, max_lengths=[64])
    heads.save(tmp_path / "s.json")
    again = ScoredHeads.load(tmp_path / "s.json")
    assert again.first == heads.first and again.scores == heads.scores

    def refuse(_n):
        raise AssertionError("scored again")

    assert score_heads(pipe, beir.queries, 5, [64], reranker_for=refuse, heads=again) is again
    deep = Option("deep", Combination(0.5), top_n=10, max_length=64)
    with pytest.raises(ValueError, match="re-scores 10 candidates"):
        option_run(again, deep)
    assert option_table(again, beir.qrels, [deep, Option("other length", Combination(0.5), 5, 128)]) == []
    grid = option_grid(5, 64)[:3]
    assert {r["option"] for r in option_table(again, beir.qrels, grid)} == {o.name for o in grid}


def test_bad_inputs_get_one_line(tmp_path, setup):
    data, _, raw = setup
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k != "rerank"}))
    for args, message in [(["--config", plain, "--dataset", data], "has no rerank: block"),
                          (["--dataset", f"{data}:test:{tmp_path / 'none.txt'}"], "none.txt"),
                          (["--dataset", "a:b:c:d"], "give DIR, DIR:SPLIT or DIR:SPLIT:IDS_FILE")]:
        proc = _script(*args, "--cache-dir", tmp_path / "cache", "--scores-dir", tmp_path / "scores")
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
