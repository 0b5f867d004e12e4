"""The openvino reranker backend: converted once and cached, fp32 scores equal torch's, bf16 ranks like fp32.

Tolerances: on the tiny random 2-layer BERT (logits of order 0.1) OpenVINO fp32 is within 1e-4 of torch fp32 and
bf16 (8 bits of mantissa) within 0.02; the tiny model's scores are near-ties, so bf16 ranking is checked on the
bundled reranker's real weights (Spearman >= 0.98 against torch fp32).
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from scipy.stats import spearmanr

import index.runtime.openvino as ov_backend
from index.extras import MissingExtraError
from index.runtime import export_cache
from rerank.cross_encoder import CrossEncoderReranker
from tests.rerank.exported import QUERY, make_pairs, retrain_in_place

HAS_BF16 = "BF16" in ov_backend.cpu_capabilities()
export_cache_writable = export_cache.writable


def _pairs(n: int = 40) -> list[tuple[str, str]]:
    return make_pairs(n, seed=1)


@pytest.fixture(scope="module")
def shared(tiny_cross_encoder, tmp_path_factory):
    target = tmp_path_factory.mktemp("ov-shared") / "tiny-ce"
    shutil.copytree(tiny_cross_encoder, target)
    return target


def _torch_fp32(path) -> np.ndarray:
    return CrossEncoderReranker(str(path), precision="fp32", activation="identity").predict(_pairs())


def test_fp32_scores_match_torch(shared):
    rr = CrossEncoderReranker(str(shared), backend="openvino", precision="fp32", activation="identity")
    assert rr.precision == "fp32" and rr.device == "cpu"
    np.testing.assert_allclose(rr.predict(_pairs()), _torch_fp32(shared), rtol=0, atol=1e-4)


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no native bf16 (OpenVINO capability BF16)")
def test_bf16_scores_are_close_to_fp32(shared):
    rr = CrossEncoderReranker(str(shared), backend="openvino", precision="bf16", activation="identity")
    assert rr.precision == "bf16"
    np.testing.assert_allclose(rr.predict(_pairs()), _torch_fp32(shared), rtol=0, atol=0.02)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no native bf16 (OpenVINO capability BF16)")
def test_bf16_ranks_like_fp32_with_real_weights(tmp_path, monkeypatch):
    """The random tiny model's scores are near-ties; ranking is checked with the bundled reranker's weights."""
    from index.runtime.models import resolve_model

    monkeypatch.setenv("TWOSTAGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(export_cache, "writable", lambda d: d.is_relative_to(tmp_path) and export_cache_writable(d))
    model = resolve_model("bundled:minilm-l6-scifact")
    passages = ["Tides are caused by the gravitational pull of the moon on the oceans.",
                "The sun's gravity also raises tides, about half as strong as the moon's.",
                "Coffee is brewed from roasted beans.", "Honey bees communicate with a waggle dance.",
                "Plate tectonics explains earthquakes.", "Spring tides occur when sun and moon align.",
                "Ocean water is salty because of dissolved minerals.", "The moon orbits the earth every 27 days."]
    pairs = [(QUERY, p) for p in passages] + [("what causes earthquakes", p) for p in passages]
    fp32 = CrossEncoderReranker(model, precision="fp32", activation="identity").predict(pairs)
    bf16 = CrossEncoderReranker(model, backend="openvino", precision="bf16", activation="identity").predict(pairs)
    assert spearmanr(bf16, fp32)[0] >= 0.98
    np.testing.assert_allclose(bf16, fp32, rtol=0, atol=0.1 * (fp32.max() - fp32.min()))


def test_auto_precision_follows_the_cpu(shared, monkeypatch):
    monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda: {"FP32", "INT8"})
    assert ov_backend.resolve_precision("auto") == "fp32"
    with pytest.raises(ValueError, match="no native bf16"):
        ov_backend.resolve_precision("bf16")
    monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda: {"FP32", "BF16"})
    assert ov_backend.resolve_precision("auto") == "bf16"


def test_conversion_is_cached_next_to_the_model_and_reused(model_dir, monkeypatch):
    CrossEncoderReranker(str(model_dir), backend="openvino", precision="fp32")
    xml, weights = model_dir / "openvino" / "model.xml", model_dir / "openvino" / "model.bin"
    assert xml.is_file() and weights.is_file() and (model_dir / "openvino" / "export.json").is_file()
    mtime = weights.stat().st_mtime_ns

    def no_convert(*args, **kwargs):
        raise AssertionError("converted again although a current IR exists")

    monkeypatch.setattr(ov_backend, "_convert", no_convert)
    again = CrossEncoderReranker(str(model_dir), backend="openvino", precision="fp32")
    assert again._onnx.path == xml and weights.stat().st_mtime_ns == mtime
    assert again.predict(_pairs(3)).shape == (3,)


def test_a_missing_weights_file_is_converted_again(model_dir):
    CrossEncoderReranker(str(model_dir), backend="openvino", precision="fp32")
    (model_dir / "openvino" / "model.bin").unlink()
    rr = CrossEncoderReranker(str(model_dir), backend="openvino", precision="fp32", activation="identity")
    assert (model_dir / "openvino" / "model.bin").is_file()
    np.testing.assert_allclose(rr.predict(_pairs()), _torch_fp32(model_dir), rtol=0, atol=1e-4)


def test_changed_weights_are_converted_again(model_dir):
    first = CrossEncoderReranker(str(model_dir), backend="openvino", precision="fp32", activation="identity")
    before = first.predict(_pairs())
    retrain_in_place(model_dir)
    second = CrossEncoderReranker(str(model_dir), backend="openvino", precision="fp32", activation="identity")
    expected = _torch_fp32(model_dir)
    np.testing.assert_allclose(second.predict(_pairs()), expected, rtol=0, atol=1e-4)
    assert not np.allclose(before, expected, atol=1e-4)


def test_unwritable_model_dir_falls_back_to_the_user_cache(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TWOSTAGE_CACHE_DIR", str(tmp_path / "cache"))
    real = export_cache.writable
    monkeypatch.setattr(export_cache, "writable", lambda d: d.parent != model_dir and real(d))
    rr = CrossEncoderReranker(str(model_dir), backend="openvino", precision="fp32")
    assert rr._onnx.path.is_relative_to(tmp_path / "cache")
    assert not (model_dir / "openvino").exists()


def test_labels_and_rank_through_openvino(tiny_nli_cross_encoder, tmp_path):
    target = tmp_path / "nli"
    shutil.copytree(tiny_nli_cross_encoder, target)
    pairs = _pairs(6)
    ov = CrossEncoderReranker(str(target), backend="openvino", precision="fp32", label="entailment",
                              activation="identity")
    ref = CrossEncoderReranker(str(target), label="entailment", activation="identity")
    np.testing.assert_allclose(ov.predict(pairs), ref.predict(pairs), rtol=0, atol=1e-4)
    docs = [p for _, p in pairs]
    assert [r["corpus_id"] for r in ov.rank(QUERY, docs)] == [r["corpus_id"] for r in ref.rank(QUERY, docs)]


def test_int8_partial_is_refused_with_openvino(tiny_cross_encoder):
    with pytest.raises(ValueError, match="int8_partial is for the onnx backend"):
        CrossEncoderReranker(str(tiny_cross_encoder), backend="openvino", quantization="int8_partial")


def test_backend_auto_is_torch_on_a_gpu_and_openvino_on_the_cpu(monkeypatch):
    rr = CrossEncoderReranker.__new__(CrossEncoderReranker)
    rr.device = "cuda"
    assert rr._pick_backend("auto") == "torch"
    rr.device = "cpu"
    assert rr._pick_backend("auto") == "openvino"
    monkeypatch.setattr(ov_backend, "available", lambda: False)
    assert rr._pick_backend("auto") == "torch"
    assert rr._pick_backend("onnx") == "onnx"


# int8 (NNCF post-training quantization). The random tiny model's logits span ~0.1 with near-ties, so int8 is held to
# a rank correlation against fp32 that a broken quantization (wrong scales, a graph of noise) cannot reach, not to
# closeness of values; that it is int8 at all is read from the IR (FakeQuantize nodes NNCF inserts).
# Measured: 0.78 on 200 pairs (AMD EPYC, AVX2); fp32 plus noise of int8's own error size gives ~0.1.
INT8_MIN_SPEARMAN = 0.6


@pytest.fixture
def small_calibration(monkeypatch):
    """Caching is what these tests check, not quality: 32 calibration pairs instead of 300 keep them quick."""
    pairs = ov_backend.calibration_pairs()[:32]
    monkeypatch.setattr(ov_backend, "calibration_pairs", lambda: pairs)


def _int8(path, **kwargs) -> CrossEncoderReranker:
    return CrossEncoderReranker(str(path), backend="openvino", precision="fp32", quantization="int8",
                                activation="identity", **kwargs)


def test_int8_runs_and_ranks_like_fp32(model_dir):
    rr = _int8(model_dir)
    assert rr.quantization == "int8" and rr._onnx.path == model_dir / "openvino" / "model_int8.xml"
    assert "FakeQuantize" in rr._onnx.path.read_text(encoding="utf-8")
    pairs = make_pairs(200, seed=1)
    scores = rr.predict(pairs)
    fp32 = CrossEncoderReranker(str(model_dir), precision="fp32", activation="identity").predict(pairs)
    assert scores.shape == fp32.shape and np.isfinite(scores).all()
    assert spearmanr(scores, fp32)[0] >= INT8_MIN_SPEARMAN
    assert not np.allclose(scores, fp32, rtol=0, atol=1e-6)  # it is not the fp32 graph under another name


def test_int8_is_cached_beside_fp32_and_reused(model_dir, monkeypatch, small_calibration):
    first = _int8(model_dir).predict(_pairs())
    folder = model_dir / "openvino"
    files = json.loads((folder / "export.json").read_text(encoding="utf-8"))["files"]
    assert set(files) == {"model.xml", "model_int8.xml"} and files["model.xml"] != files["model_int8.xml"]
    mtime = (folder / "model_int8.bin").stat().st_mtime_ns

    def never(*args, **kwargs):
        raise AssertionError("made again although a current IR exists")

    monkeypatch.setattr(ov_backend, "_quantize", never)
    monkeypatch.setattr(ov_backend, "_convert", never)
    monkeypatch.setitem(sys.modules, "nncf", None)  # a cached int8 IR runs without NNCF
    again = _int8(model_dir)
    assert again._onnx.path == folder / "model_int8.xml" and (folder / "model_int8.bin").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.predict(_pairs()), first)
    fp32 = CrossEncoderReranker(str(model_dir), backend="openvino", precision="fp32", activation="identity")
    assert fp32._onnx.path == folder / "model.xml"  # the fp32 IR is still current beside the int8 one


def test_changed_weights_are_quantized_again(model_dir, small_calibration):
    before = _int8(model_dir).predict(_pairs())
    digest = json.loads((model_dir / "openvino" / "export.json").read_text(encoding="utf-8"))["files"]
    retrain_in_place(model_dir)
    after = _int8(model_dir).predict(_pairs())
    again = json.loads((model_dir / "openvino" / "export.json").read_text(encoding="utf-8"))["files"]
    assert again["model_int8.xml"] != digest["model_int8.xml"]
    assert not np.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("explicit", [False, True])
def test_fp32_path_is_unchanged_when_quantization_is_not_int8(model_dir, monkeypatch, explicit):
    """Unset, the field's default (int8) is the onnx backend's; `none` said outright is fp32 too."""

    def never(*args, **kwargs):
        raise AssertionError("quantized although quantization was not set to int8")

    monkeypatch.setattr(ov_backend, "ensure_quantized", never)
    kwargs = {"quantization": "none"} if explicit else {}
    rr = CrossEncoderReranker(str(model_dir), backend="openvino", precision="fp32", activation="identity", **kwargs)
    assert rr.quantization == "none" and rr._onnx.path == model_dir / "openvino" / "model.xml"
    assert not (model_dir / "openvino" / "model_int8.xml").exists()
    np.testing.assert_allclose(rr.predict(_pairs()), _torch_fp32(model_dir), rtol=0, atol=1e-4)


def test_missing_nncf_is_a_clear_error(model_dir, monkeypatch, small_calibration):
    monkeypatch.setitem(sys.modules, "nncf", None)  # what `import nncf` meets when it is not installed
    with pytest.raises(MissingExtraError, match=r"needs nncf.*twostage\[openvino-int8\]"):
        _int8(model_dir)
    assert not (model_dir / "openvino" / "model_int8.xml").exists()


def test_calibration_pairs_are_fixed_and_mostly_mismatched():
    pairs = ov_backend.calibration_pairs()
    assert len(pairs) == ov_backend.CALIBRATION_SIZE == len(set(pairs))
    assert pairs == ov_backend.calibration_pairs()  # part of the int8 IR's fingerprint: must not drift
    docs = [json.loads(line) for line in ov_backend.SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines()]
    own = {(d["title"], d["text"]) for d in docs}
    assert own <= set(pairs) and len(own) < len(pairs) / 2
