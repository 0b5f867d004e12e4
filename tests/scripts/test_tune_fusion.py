from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import yaml

from tests.beir_data import write_beir
from tests.conftest import ROOT, pipeline_config


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/tune_fusion.py", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


def test_tune_fusion_on_train_split_and_refuses_test(tmp_path, tiny_bi_encoder):
    data = write_beir(tmp_path / "beir")
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "train.tsv")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(tmp_path / "unused", tiny_bi_encoder)))
    common = ["--dataset", str(data), "--config", str(config), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    proc = run(*common, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["split"] == "train" and out["num_queries"] == 6
    scores = out["ndcg@10"]
    assert "rrf k=60" in scores and "weighted zscore bm25=0.5 dense=0.5" in scores
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    proc = run(*common, "--split", "test")
    assert proc.returncode == 2 and "leaks it into the defaults" in proc.stderr
