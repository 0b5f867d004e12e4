from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import yaml
from sentence_transformers import CrossEncoder

from tests.beir_data import write_beir
from tests.conftest import ROOT, pipeline_config


def test_train_reranker_script_writes_model_card_and_dev_metrics(tmp_path, tiny_bi_encoder, tiny_cross_encoder):
    data = write_beir(tmp_path / "beir")
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "train.tsv")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(tmp_path / "unused", tiny_bi_encoder)))
    out = tmp_path / "model"
    proc = subprocess.run(
        [sys.executable, "scripts/train_reranker.py", "--dataset", str(data), "--split", "train",
         "--base", str(tiny_cross_encoder), "--output", str(out), "--max-steps", "2", "--batch-size", "2",
         "--negatives", "2", "--negatives-from", "bm25", "--pseudo-queries", "4", "--max-length", "64",
         "--dev-fraction", "0.34", "--config", str(config), "--cache-dir", str(tmp_path / "cache"), "--json",
         "--quiet", "--seed", "7"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # stdout holds the summary only (the trainer's logs go to stderr)
    assert summary["steps"] == 2
    assert summary["dev"]["dev_queries"] == 2
    info = json.loads((out / "training_info.json").read_text())
    assert info["base_model"] == str(tiny_cross_encoder) and info["steps"] == 2 and info["loss"] == "mnrl"
    assert "split 'train'" in info["training_data"] and "pseudo-queries" in info["training_data"]
    settings = json.loads((out / "twostage.json").read_text())
    assert 0.0 <= settings["interpolation"] <= 1.0 and settings["first_stage"] == "bm25"
    card = (out / "README.md").read_text()
    assert "Dev-split metrics" in card and "a cross-encoder, trained further" in card  # the base had a head
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not left owner-only
    # The dev split follows --dev-seed (default 13), not the training --seed: every stage holds out the same queries.
    from rerank.training import split_dev
    from retrieval.evaluation import load_beir

    split = json.loads((out / "dev_split.json").read_text())
    assert split["dev_seed"] == 13
    assert split["query_ids"] == split_dev(load_beir(data, "train").queries, 0.34, 13)[1]
    assert CrossEncoder(str(out), device="cpu").predict([("a", "b")]).shape == (1,)


def test_train_reranker_without_a_train_split_is_a_clean_error(tmp_path, tiny_cross_encoder):
    data = write_beir(tmp_path / "beir")
    proc = subprocess.run(
        [sys.executable, "scripts/train_reranker.py", "--dataset", str(data), "--split", "train",
         "--base", str(tiny_cross_encoder), "--output", str(tmp_path / "m"), "--quiet"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "train.tsv" in proc.stderr


def test_no_train_scores_an_existing_model_on_dev(tmp_path, tiny_bi_encoder, tiny_cross_encoder):
    data = write_beir(tmp_path / "beir")
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "train.tsv")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(tmp_path / "unused", tiny_bi_encoder)))
    proc = subprocess.run(
        [sys.executable, "scripts/train_reranker.py", "--dataset", str(data), "--base", str(tiny_cross_encoder),
         "--output", str(tmp_path / "choice"), "--no-train", "--dev-fraction", "0.5", "--negatives-from", "hybrid",
         "--config", str(config), "--cache-dir", str(tmp_path / "cache"), "--json", "--quiet"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dev = json.loads((tmp_path / "choice" / "dev_metrics.json").read_text())
    assert dev["dev_queries"] == 3 and 0 <= dev["best interpolation (weight of the first-stage score)"] <= 1
    assert not list((tmp_path / "choice").glob("*.safetensors"))  # nothing trained, nothing written
