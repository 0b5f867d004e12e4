"""Executes notebooks/evaluation.ipynb with nbclient on a tiny BEIR cut and the tiny test models."""

from __future__ import annotations

import json
import sys

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from tests.beir_data import write_beir
from tests.conftest import ROOT, pipeline_config

NOTEBOOK = ROOT / "notebooks" / "evaluation.ipynb"
KERNEL = "twostage-notebook-test"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec running this interpreter (the venv's), found first through JUPYTER_PATH: nothing installed."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "twostage test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/"):
                parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


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
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
                   ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    text = "\n".join(outputs_text(c) for c in code)
    assert "tiny/test: 5 judged queries; stages: ['bm25', 'dense', 'hybrid']" in text
    (table,) = [outputs_text(c) for c in code if "result.table()" in c.source]
    assert all(word in table for word in ("ndcg@10", "mrr@10", "p@10", "bm25", "dense", "hybrid"))
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2
    (sig,) = [outputs_text(c) for c in code if "significance(" in c.source]
    assert "p_value" in sig and "randomization" in sig
