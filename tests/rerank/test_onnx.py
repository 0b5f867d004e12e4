"""The onnx reranker backend: exported once and cached, scores close to torch, int8 ranks like fp32.

Tolerances (tiny random 2-layer BERT, logits of order 0.1): the fused fp32 ONNX graph is within 1e-4 of torch fp32;
int8 is checked on ranking only (Spearman >= 0.9 against fp32 over 40 pairs) since its absolute error is of the
order of the quantization step.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy.stats import spearmanr

import index.runtime.onnx as onnx_backend
from index.runtime import export_cache
from rerank.cross_encoder import CrossEncoderReranker
from tests.rerank.exported import QUERY, make_pairs, retrain_in_place


def _pairs(n: int = 40) -> list[tuple[str, str]]:
    return make_pairs(n, seed=0)


@pytest.fixture(scope="module")
def exported(tiny_cross_encoder, tmp_path_factory):
    """One export per quantization for the module's read-only tests."""
    target = tmp_path_factory.mktemp("onnx-shared") / "tiny-ce"
    shutil.copytree(tiny_cross_encoder, target)
    rerankers = {q: CrossEncoderReranker(str(target), backend="onnx", quantization=q, activation="identity")
                 for q in ("none", "int8", "int8_partial")}
    return target, rerankers


def test_fused_fp32_scores_match_torch(exported):
    target, rerankers = exported
    pairs = _pairs()
    torch_scores = CrossEncoderReranker(str(target), precision="fp32", activation="identity").predict(pairs)
    np.testing.assert_allclose(rerankers["none"].predict(pairs), torch_scores, rtol=0, atol=1e-4)


@pytest.mark.parametrize("level", ["int8", "int8_partial"])
def test_int8_ranks_like_fp32(exported, level):
    target, rerankers = exported
    pairs = _pairs()
    fp32 = CrossEncoderReranker(str(target), precision="fp32", activation="identity").predict(pairs)
    assert spearmanr(rerankers[level].predict(pairs), fp32)[0] >= 0.9  # 0.994 (int8) when written


def test_int8_partial_keeps_the_feed_forward_output_in_fp32(exported):
    import onnx

    _, rerankers = exported
    nodes = {q: onnx.load(str(rerankers[q]._onnx.path), load_external_data=False).graph.node
             for q in ("int8", "int8_partial")}
    fp32_ffn = {q: [n.name for n in ns if n.op_type == "MatMul" and "/output/dense/" in n.name]
                for q, ns in nodes.items()}
    assert fp32_ffn["int8"] == [] and len(fp32_ffn["int8_partial"]) == 2  # one per layer of the tiny model
    assert any(n.op_type == "QAttention" for n in nodes["int8_partial"])


def test_export_is_cached_next_to_the_model_and_reused(model_dir, monkeypatch):
    CrossEncoderReranker(str(model_dir), backend="onnx")
    cached = model_dir / "onnx" / "model_qint8_avx512_vnni.onnx"
    assert cached.is_file() and (model_dir / "onnx" / "export.json").is_file()
    mtime = cached.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although a current export exists")

    monkeypatch.setattr(onnx_backend, "_export", no_export)
    again = CrossEncoderReranker(str(model_dir), backend="onnx")
    assert again._onnx.path == cached and cached.stat().st_mtime_ns == mtime
    assert again.predict(_pairs(3)).shape == (3,)


def test_changed_weights_are_exported_again(model_dir):
    first = CrossEncoderReranker(str(model_dir), backend="onnx", quantization="none", activation="identity")
    pairs = _pairs(5)
    before = first.predict(pairs)
    # Retrain "in place": same directory, different classifier weights.
    retrain_in_place(model_dir)
    second = CrossEncoderReranker(str(model_dir), backend="onnx", quantization="none", activation="identity")
    torch_scores = CrossEncoderReranker(str(model_dir), activation="identity").predict(pairs)
    np.testing.assert_allclose(second.predict(pairs), torch_scores, rtol=0, atol=1e-4)
    assert not np.allclose(before, torch_scores, atol=1e-4)


def test_unwritable_model_dir_falls_back_to_the_user_cache(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TWOSTAGE_CACHE_DIR", str(tmp_path / "cache"))
    real = export_cache.writable
    monkeypatch.setattr(export_cache, "writable", lambda d: d.parent != model_dir and real(d))
    rr = CrossEncoderReranker(str(model_dir), backend="onnx")
    assert rr._onnx.path.is_relative_to(tmp_path / "cache")
    assert not (model_dir / "onnx" / "model_qint8_avx512_vnni.onnx").exists()


def test_rank_and_labels_through_the_onnx_backend(tiny_nli_cross_encoder, tmp_path):
    target = tmp_path / "nli"
    shutil.copytree(tiny_nli_cross_encoder, target)
    pairs = _pairs(6)
    onnx = CrossEncoderReranker(str(target), backend="onnx", quantization="none", label="entailment",
                                activation="identity")
    ref = CrossEncoderReranker(str(target), label="entailment", activation="identity")
    np.testing.assert_allclose(onnx.predict(pairs), ref.predict(pairs), rtol=0, atol=1e-4)
    docs = [p for _, p in pairs]
    assert [r["corpus_id"] for r in onnx.rank(QUERY, docs)] == [r["corpus_id"] for r in ref.rank(QUERY, docs)]


def test_half_precision_is_refused_with_onnx(tiny_cross_encoder):
    with pytest.raises(ValueError, match="onnx backend runs int8 or fp32"):
        CrossEncoderReranker(str(tiny_cross_encoder), backend="onnx", precision="bf16")
