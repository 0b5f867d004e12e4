"""Executes notebooks/rerank_analysis.ipynb with nbclient on two tiny BEIR cuts and the tiny test models."""

from __future__ import annotations

import os
import re

import yaml

from retrieval.evaluation.options import option_grid
from tests.beir_data import QUERIES, write_beir
from tests.conftest import ROOT, pipeline_config
from tests.notebooks.conftest import execute
from tests.notebooks.conftest import outputs_text as _outputs_text

NOTEBOOK = ROOT / "notebooks" / "rerank_analysis.ipynb"
ROW = re.compile(r"^\s*(?:\S+\s+)?(\d+)\s+(-?[0-9.]+)\s+(-?[0-9.]+)\s*$")  # a depth row: [collection] top_n ndcg ms


def outputs_text(cell) -> str:
    return _outputs_text(cell, html=False)  # plain text: no HTML tables


def cell_with(code, marker: str) -> str:
    (text,) = [outputs_text(c) for c in code if marker in c.source]
    return text


def test_notebook_runs_on_two_tiny_cuts(tmp_path, kernel, monkeypatch, tiny_bi_encoder, tiny_cross_encoder):
    full = write_beir(tmp_path / "tiny")
    part = write_beir(tmp_path / "part", queries={q: QUERIES[q] for q in ("q1", "q2", "q3", "q5")})
    config = tmp_path / "config.yaml"
    raw = pipeline_config(tmp_path / "unused", tiny_bi_encoder)
    raw["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 5, "device": "cpu", "max_length": 64}
    config.write_text(yaml.safe_dump(raw))
    env = {"RERANK_DATASETS": f"{full},{os.path.relpath(part, ROOT)}:test",  # a bare folder and a relative one
           "RERANK_CONFIG": config, "RERANK_CACHE_DIR": tmp_path / "cache", "RERANK_TOP_N": 10,
           "RERANK_TOP_NS": "2,5", "RERANK_MAX_LENGTHS": "32,64"}
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("RERANK_MAX_QUERIES", raising=False)
    code = execute(NOTEBOOK, kernel)
    text = "\n".join(outputs_text(c) for c in code)
    for name, n in (("tiny", 6), ("part", 4)):
        assert f"{name}/test: {n} judged queries; stages: ['bm25', 'dense', 'hybrid', 'rerank']" in text

    stages = cell_with(code, "stages = pd.DataFrame")
    assert all(word in stages for word in ("tiny/test", "part/test", "bm25", "dense", "hybrid", "rerank"))

    depth = [ROW.match(line) for line in cell_with(code, "depth = pd.DataFrame").splitlines()]
    assert sorted(int(m.group(1)) for m in depth if m) == [2, 2, 5, 5]  # each depth, for each collection
    assert all(float(m.group(3)) > 0 for m in depth if m)  # reranking took measurable time

    wins = {line.split()[0]: [float(v) for v in line.split()[1:4]]
            for line in cell_with(code, "wins = pd.DataFrame").splitlines() if line.startswith(("tiny", "part"))}
    assert {name: sum(v) for name, v in wins.items()} == {"tiny/test": 6, "part/test": 4}  # each query once

    table = cell_with(code, "option_table(")
    expected = [o.name for o in option_grid(10, 64)] + ["max_length=32", "max_length=64", "config"]
    assert [name for name in expected if name not in table] == []
    assert "interpolate minmax w=0.5 top_n=5" in table  # a depth option below TOP_N is there

    # The options' "config" row ranks as the pipeline's rerank stage does, on both cuts.
    gaps = re.findall(r"options 'config' minus evaluated rerank = ([-+][0-9.]+)", text)
    assert len(gaps) == 2 and all(abs(float(g)) < 1e-4 for g in gaps)

    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # stages, depth/latency, wins/losses, options
