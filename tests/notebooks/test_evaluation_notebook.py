"""Executes notebooks/evaluation.ipynb with nbclient on a tiny BEIR cut and the tiny test models."""

from __future__ import annotations

import pytest
import yaml

from tests.beir_data import write_beir
from tests.conftest import ROOT, pipeline_config
from tests.notebooks.conftest import execute, outputs_text

NOTEBOOK = ROOT / "notebooks" / "evaluation.ipynb"


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-paths", "paths-relative-to-the-repo"])
def test_notebook_runs_on_a_tiny_cut(tmp_path, kernel, monkeypatch, sample_index, tiny_bi_encoder, relative):
    import os

    data = write_beir(tmp_path / "tiny")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(tmp_path / "unused", tiny_bi_encoder)))
    paths = {"EVAL_DATASET": data, "EVAL_CONFIG": config, "EVAL_INDEX": sample_index,
             "EVAL_CACHE_DIR": tmp_path / "cache"}
    if relative:  # as a user writes them from the repository root, while the kernel runs in notebooks/
        paths = {name: os.path.relpath(value, ROOT) for name, value in paths.items()}
    for name, value in {**paths, "EVAL_MAX_QUERIES": 5}.items():
        monkeypatch.setenv(name, str(value))
    code = execute(NOTEBOOK, kernel)
    text = "\n".join(outputs_text(c) for c in code)
    assert "tiny/test: 5 judged queries; stages: ['bm25', 'dense', 'hybrid']" in text
    (table,) = [outputs_text(c) for c in code if "result.table()" in c.source]
    assert all(word in table for word in ("ndcg@10", "mrr@10", "p@10", "bm25", "dense", "hybrid"))
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2
    (sig,) = [outputs_text(c) for c in code if "significance(" in c.source]
    assert "p_value" in sig and "randomization" in sig
