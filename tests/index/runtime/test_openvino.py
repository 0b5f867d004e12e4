"""The bi-encoder's openvino backend and the export cache rules shared with the reranker's exported backends.

Tolerances (tiny random 2-layer BERT, mean pooling, normalized): OpenVINO fp32 embeddings are within 1e-5 of
torch's; bf16 ones keep cosine >= 0.999 with them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import index.runtime.openvino as ov_runtime
from index.config import DenseConfig
from index.dense import Encoder
from index.runtime import export_cache

TEXTS = ["the moon pulls the ocean", "tides", "bees dance to tell where flowers are " * 5, "plate tectonics",
         "coffee is brewed from roasted beans and water at ninety degrees", "a", "gravity of the sun and moon"]


@pytest.fixture()
def encoder_dir(tiny_bi_encoder, tmp_path) -> Path:
    target = tmp_path / "tiny-bi"
    shutil.copytree(tiny_bi_encoder, target)
    return target


def test_fp32_embeddings_match_torch_and_the_ir_is_cached_beside_the_model(encoder_dir, monkeypatch):
    ref = Encoder(str(encoder_dir), DenseConfig(model=str(encoder_dir), precision="fp32")).encode(TEXTS)
    ov = Encoder(str(encoder_dir), DenseConfig(model=str(encoder_dir), backend="openvino", precision="fp32"))
    assert ov._ov.path == encoder_dir / "openvino" / "model.xml"
    got = ov.encode(TEXTS)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    monkeypatch.setattr(ov_runtime, "_convert", lambda *a, **k: pytest.fail("converted again"))
    again = Encoder(str(encoder_dir), DenseConfig(model=str(encoder_dir), backend="openvino", precision="fp32"))
    np.testing.assert_allclose(again.encode(TEXTS), ref, rtol=0, atol=1e-5)


@pytest.mark.skipif("BF16" not in ov_runtime.cpu_capabilities(), reason="this CPU has no native bf16")
def test_bf16_embeddings_point_the_same_way(encoder_dir):
    ref = Encoder(str(encoder_dir), DenseConfig(model=str(encoder_dir), precision="fp32")).encode(TEXTS)
    got = Encoder(str(encoder_dir), DenseConfig(model=str(encoder_dir), backend="openvino",
                                                precision="bf16")).encode(TEXTS)
    assert (got * ref).sum(axis=1).min() >= 0.999


def test_batches_of_any_size_keep_the_input_order(encoder_dir):
    ref = Encoder(str(encoder_dir), DenseConfig(model=str(encoder_dir), precision="fp32")).encode(TEXTS)
    ov = Encoder(str(encoder_dir), DenseConfig(model=str(encoder_dir), backend="openvino", precision="fp32",
                                               batch_size=2))
    np.testing.assert_allclose(ov.encode(TEXTS), ref, rtol=0, atol=1e-5)
    assert ov.encode([]).shape == (0, ov.dim)


def test_exports_never_go_inside_an_installed_package(tmp_path, monkeypatch):
    monkeypatch.setenv("TWOSTAGE_CACHE_DIR", str(tmp_path / "cache"))
    installed = tmp_path / "venv" / "lib" / "site-packages" / "some_model"
    installed.mkdir(parents=True)
    local = tmp_path / "my-model"
    local.mkdir()
    assert export_cache.candidate_dirs(str(installed), "ab" * 32, "openvino") == [
        tmp_path / "cache" / "openvino" / ("ab" * 12)]
    assert export_cache.candidate_dirs(str(local), "ab" * 32, "onnx")[0] == local / "onnx"


def test_a_pipeline_with_the_openvino_bi_encoder_answers_like_torch(sample_index, tiny_bi_encoder):
    from retrieval import SearchPipeline
    from retrieval.config import load_config
    from tests.conftest import pipeline_config

    results = {}
    for backend in ("torch", "openvino"):
        cfg = load_config(pipeline_config(sample_index, tiny_bi_encoder,
                                          dense={"backend": backend, "precision": "fp32"}))
        pipe = SearchPipeline(cfg)
        results[backend] = [[d for d, _ in hits] for hits in
                            pipe.retrieve(["moon and tides", "honey bees"], stage="dense")]
    assert results["openvino"] == results["torch"]
