"""The `openvino` backend: a cross-encoder (or a bi-encoder's transformer) converted once to OpenVINO IR, run by
OpenVINO's CPU plugin.

Why: on a CPU with AVX-512 BF16 (or AMX) OpenVINO runs the whole graph in bf16 with fused attention and
layer-norm kernels, which is faster than torch's bf16 autocast at the same ranking (see the README's Performance
section); on other CPUs it runs fp32, still with fused kernels.

The IR (`model.xml` + `model.bin`, fp32 weights) is cached like the ONNX export (`index/runtime/export_cache.py`):
`<model dir>/openvino/` when the model is a writable local directory, else the user cache; a fingerprint of the
weights and recipe decides whether a cached IR is current. Precision is chosen when the IR is compiled, not
baked into it, so one IR serves `fp32` and `bf16`.

Example:
    >>> from rerank.cross_encoder import CrossEncoderReranker
    >>> rr = CrossEncoderReranker("path/to/cross-encoder", backend="openvino")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index.runtime import export_cache

logger = logging.getLogger(__name__)

# Bump when the conversion changes: cached IRs from an older recipe are then converted again.
RECIPE_VERSION = 1
SUBDIR = "openvino"
FILENAME = "model.xml"
WEIGHTS = "model.bin"
# Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT, and the CPU capability each needs.
_HINTS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16")}


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_capabilities() -> set[str]:
    """OpenVINO's view of the CPU: e.g. {"FP32", "BF16", "INT8", ...}."""
    import openvino as ov

    return set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def resolve_precision(precision: str) -> str:
    """Our precision for the CPU plugin: `auto` is bf16 where the CPU computes bf16 natively (OpenVINO's own
    default there), else fp32; an explicit half precision the CPU lacks is an error, not a silent fallback."""
    caps = cpu_capabilities()
    if precision == "auto":
        return "bf16" if "BF16" in caps else "fp32"
    if precision not in _HINTS:
        raise ValueError(f"unknown precision {precision!r} for the openvino backend; use auto, fp32, bf16 or fp16")
    if _HINTS[precision][1] not in caps:
        raise ValueError(f"precision {precision}: this CPU has no native {precision} support "
                         f"(OpenVINO reports {sorted(caps)}); set rerank.precision to fp32 or auto")
    return precision


def _convert(model: torch.nn.Module, sample: Mapping[str, torch.Tensor], directory: Path, output: str) -> None:
    """Write model.xml/model.bin into `directory` via a temporary folder beside them: the .bin is moved first
    and the manifest written last, so a crash leaves either the old files or files that are not yet current."""
    import openvino as ov

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    example = {n: sample[n].cpu() for n in names}
    with tempfile.TemporaryDirectory(dir=directory, prefix=".convert-") as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings, one per data-dependent branch
            converted = ov.convert_model(export_cache.SingleOutput(model, output).eval(), example_input=example)
        for port, name in zip(converted.inputs, names):
            port.get_tensor().set_names({name})
        # fp32 weights in the file: the precision is chosen at compile time (compress_to_fp16 would round them).
        ov.save_model(converted, str(Path(tmp) / FILENAME), compress_to_fp16=False)
        os.replace(Path(tmp) / WEIGHTS, directory / WEIGHTS)
        os.replace(Path(tmp) / FILENAME, directory / FILENAME)


def ensure_converted(model: torch.nn.Module, source: str, sample: Mapping[str, torch.Tensor],
                     output: str = "logits") -> Path:
    """The cached IR for `model` (converted now only if no current one exists); `output` names the model output
    the IR returns (`logits` for a cross-encoder, `last_hidden_state` for a bi-encoder's transformer)."""
    digest = export_cache.fingerprint(model, {"backend": "openvino", "recipe": RECIPE_VERSION, "output": output})

    def write(directory: Path) -> None:
        logger.info("converting %s to OpenVINO IR, once; cached at %s", source, directory)
        _convert(model, sample, directory, output)

    return export_cache.ensure(source, digest, SUBDIR, FILENAME, write, RECIPE_VERSION, companions=(WEIGHTS,),
                               what="an OpenVINO model")


class OpenVinoModel:
    """A compiled OpenVINO model: tokenizer features in, its one output (float32) out.

    Not thread-safe on its own (one infer request); `CrossEncoderReranker` serializes calls.
    """

    def __init__(self, path: Path, precision: str, num_threads: int | None = None) -> None:
        import openvino as ov

        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _HINTS[precision][0], "PERFORMANCE_HINT": "LATENCY"}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        self.path = path
        self.precision = precision
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]

    def __call__(self, features: Mapping[str, Any]) -> np.ndarray:
        out = self.request.infer(export_cache.int64_feed(features, self.input_names))
        return np.asarray(out[self.compiled.outputs[0]], dtype=np.float32).copy()
