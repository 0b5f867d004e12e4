"""The `onnx` reranker backend: export once, fuse, quantize to int8, run with ONNX Runtime.

sentence-transformers' own `backend="onnx"` needs optimum, which does not install beside sentence-transformers 6.x,
so the export is done here: `torch.onnx.export` of the Hugging Face classifier with eager attention (the SDPA graph
cannot be fused), ONNX Runtime's transformer optimizer (fused Attention, SkipLayerNorm, BiasGelu), then dynamic
int8 quantization with per-channel weights and unsigned activations (VNNI-friendly). The result is cached:

- `<model dir>/onnx/model_qint8_avx512_vnni.onnx` (or `model_fused_fp32.onnx`) when the model is a writable local
  directory,
- otherwise `$TWOSTAGE_CACHE_DIR` (default `~/.cache/twostage`) `/onnx/<fingerprint>/`.

An `export.json` beside it records a fingerprint of the weights, config and recipe (see
`index/runtime/export_cache.py`): a stale file is exported again, never silently reused.

Example:
    >>> from rerank.cross_encoder import CrossEncoderReranker
    >>> rr = CrossEncoderReranker("path/to/cross-encoder", backend="onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index.runtime import export_cache

logger = logging.getLogger(__name__)

# Bump when the export/optimize/quantize steps change: cached files from an older recipe are then re-exported.
RECIPE_VERSION = 3
ONNX_SUBDIR = "onnx"
FILENAMES = {"int8": "model_qint8_avx512_vnni.onnx", "int8_partial": "model_qint8_partial_avx512_vnni.onnx",
             "none": "model_fused_fp32.onnx"}
OPSET = 17
_HEAD = re.compile(r"pooler|classifier|score|out_proj", re.IGNORECASE)
# Each layer's feed-forward output projection (BERT/RoBERTa/ELECTRA/DeBERTa names, DistilBERT's lin2): its input,
# the GELU output, has outlier channels that per-tensor dynamic activation quantization handles worst.
_FFN_OUTPUT = re.compile(r"layers?\.\d+/output/dense|ffn/lin2")


def fingerprint(model: torch.nn.Module, quantization: str) -> str:
    return export_cache.fingerprint(model, {"recipe": RECIPE_VERSION, "quantization": quantization, "opset": OPSET})


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter warns per traced branch and the quantizer logs per tensor on the root logger: hush both."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _export(model: torch.nn.Module, sample: Mapping[str, torch.Tensor], quantization: str,
            target: Path) -> dict[str, int]:
    """Write `target` (the final .onnx file) via a temporary folder beside it, then an atomic rename; returns
    the counts of fused operators."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    config = model.config
    previous = getattr(config, "_attn_implementation", None)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        raw, fused = Path(tmp) / "model.onnx", Path(tmp) / "fused.onnx"
        try:
            if previous not in (None, "eager"):
                model.set_attn_implementation("eager")  # SDPA exports to a graph ORT cannot fuse
            wrapper = export_cache.SingleOutput(model, "logits").eval()
            with torch.no_grad():
                torch.onnx.export(
                    wrapper, tuple(sample[n].cpu() for n in names), str(raw), dynamo=False, input_names=names,
                    output_names=["logits"], opset_version=OPSET, do_constant_folding=True,
                    dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
                )
        finally:
            if previous not in (None, "eager"):
                model.set_attn_implementation(previous)
        # Heads and width from the config: detecting them from the graph fails for transformers 5's masks.
        optimized = optimize_model(str(raw), model_type="bert",
                                   num_heads=int(getattr(config, "num_attention_heads", 0)),
                                   hidden_size=int(getattr(config, "hidden_size", 0)))
        stats = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(fused))
        if quantization != "none":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = Path(tmp) / "quantized.onnx"
            graph = onnx.load(str(fused), load_external_data=False)
            # The head (pooler, classifier) stays fp32: one vector per pair, no time to win, only accuracy to lose.
            keep = _head_nodes(graph)
            if quantization == "int8_partial":
                ffn = [n.name for n in graph.graph.node if n.op_type == "MatMul" and _FFN_OUTPUT.search(n.name)]
                stats["fp32 FFN output projections"] = len(ffn)
                keep += ffn
            # Per-channel int8 weights, uint8 activations, full 8-bit range (VNNI has no overflow problem);
            # a fused graph carries contrib ops whose output types the quantizer must be told (DefaultTensorType).
            quantize_dynamic(str(fused), str(quantized), op_types_to_quantize=["MatMul", "Attention"],
                             nodes_to_exclude=keep, per_channel=True, reduce_range=False,
                             weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            fused = quantized
        os.replace(fused, target)
    return stats


def _head_nodes(graph_model: Any) -> list[str]:
    """Names of the matrix products after the encoder: pooler/classifier layers and whatever makes the output."""
    outputs = {o.name for o in graph_model.graph.output}
    names = [n.name for n in graph_model.graph.node
             if n.op_type in ("MatMul", "Gemm") and (_HEAD.search(n.name) or outputs.intersection(n.output))]
    return names + [f"{n}_MatMul" for n in names]  # the quantizer first rewrites Gemm X as MatMul "X_MatMul"


def ensure_exported(model: torch.nn.Module, source: str, sample: Mapping[str, torch.Tensor],
                    quantization: str = "int8") -> Path:
    """The cached ONNX file for `model` (exported now only if no current one exists)."""
    if quantization not in FILENAMES:
        raise ValueError(f"unknown quantization {quantization!r}; choose one of {sorted(FILENAMES)}")
    filename = FILENAMES[quantization]
    digest = fingerprint(model, quantization)

    def write(directory: Path) -> None:
        target = directory / filename
        logger.info("exporting %s to ONNX (%s), once; cached at %s", source, quantization, target)
        with _quiet():
            stats = _export(model, sample, quantization, target)
        logger.info("fused operators: %s", stats)
        if not stats.get("Attention"):
            logger.warning("attention was not fused for this architecture; the ONNX model will be slower")
        if quantization == "int8_partial" and not stats.get("fp32 FFN output projections"):
            logger.warning("no feed-forward output projection found by name: int8_partial is the same as int8 here")

    return export_cache.ensure(source, digest, ONNX_SUBDIR, filename, write, RECIPE_VERSION, what="an ONNX export")


class OnnxClassifier:
    """An ONNX Runtime session over an exported classifier: features in, float32 logits out."""

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = num_threads
        # Idle worker threads would otherwise spin and steal the CPU from torch (the bi-encoder) between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, features: Mapping[str, Any]) -> np.ndarray:
        feed = export_cache.int64_feed(features, self.input_names)
        return self.session.run(None, feed)[0].astype(np.float32, copy=False)
