"""The `openvino` backend: a cross-encoder (or a bi-encoder's transformer) converted once to OpenVINO IR, run by
OpenVINO's CPU plugin.

Why: on a CPU with AVX-512 BF16 (or AMX) OpenVINO runs the whole graph in bf16 with fused attention and
layer-norm kernels, which is faster than torch's bf16 autocast at the same ranking (see the README's Performance
section); on other CPUs it runs fp32, still with fused kernels.

The IR (`model.xml` + `model.bin`, fp32 weights) is cached like the ONNX export (`index/runtime/export_cache.py`):
`<model dir>/openvino/` when the model is a writable local directory, else the user cache; a fingerprint of the
weights and recipe decides whether a cached IR is current. Precision is chosen when the IR is compiled, not
baked into it, so one IR serves `fp32` and `bf16`.

`rerank.quantization: int8`, set explicitly with this backend, runs an int8 IR that NNCF (`nncf.quantize`,
post-training, model type TRANSFORMER) makes once from the fp32 IR, calibrated on a fixed set of pairs. It is cached
beside the fp32 IR under its own file names and fingerprint (`model_int8.xml`/`.bin`), so the two coexist. NNCF is
needed only to make it (the `openvino-int8` extra). Without an explicit `quantization` the backend runs fp32/bf16.

Example:
    >>> from rerank.cross_encoder import CrossEncoderReranker
    >>> rr = CrossEncoderReranker("path/to/cross-encoder", backend="openvino")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index.extras import require
from index.runtime import export_cache

logger = logging.getLogger(__name__)

# Bump when the conversion changes: cached IRs from an older recipe are then converted again.
RECIPE_VERSION = 1
SUBDIR = "openvino"
FILENAME = "model.xml"
WEIGHTS = "model.bin"
# Bump when the int8 step changes (NNCF settings, calibration set): cached int8 IRs are then made again.
INT8_RECIPE_VERSION = 1
# quantization -> the NNCF method and the IR's files, beside the fp32 IR's (one manifest records them all).
INT8_FILES = {"int8": ("model_int8.xml", "model_int8.bin")}
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


# The calibration set: the sample corpus shipped in the package (original CC0 text, no benchmark's test split),
# each title as a pseudo-query against its own paragraph and against others, as a reranker sees mostly non-matches.
SAMPLE_CORPUS = Path(__file__).resolve().parents[1] / "samples" / "sample_corpus.jsonl"
CALIBRATION_SIZE = 300
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def calibration_pairs(size: int = CALIBRATION_SIZE, seed: int = 0) -> list[tuple[str, str]]:
    """`size` (title, paragraph) pairs of the sample corpus: every title with its own paragraph, the rest a seeded
    sample of mismatched ones."""
    import json
    import random

    docs = [json.loads(line) for line in SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    matched = [(d["title"], d["text"]) for d in docs]
    others = [(q["title"], d["text"]) for q in docs for d in docs if q is not d]
    rest = random.Random(seed).sample(others, min(len(others), max(0, size - len(matched))))
    return (matched + rest)[:size]


def _features_digest(calibration: Sequence[Mapping[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for item in calibration:
        for name in sorted(item):
            array = np.ascontiguousarray(item[name], dtype=np.int64)
            h.update(f"{name}:{array.shape}".encode())
            h.update(array.tobytes())
    return h.hexdigest()


def _quantize(fp32_xml: Path, directory: Path, filenames: tuple[str, str],
              calibration: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Post-training int8 quantization of the fp32 IR with NNCF; written as `_convert` writes (weights first)."""
    nncf = require("nncf", "openvino-int8", "rerank.backend: openvino with rerank.quantization: int8")
    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # NNCF logs each step and statistic at INFO
    model = ov.Core().read_model(str(fp32_xml))
    # TRANSFORMER: NNCF's scheme for attention models (keeps softmax/layer-norm/GELU inputs out of int8, smooths
    # outlier channels), the one that keeps a BERT cross-encoder's ranking; the defaults quantize everything.
    quantized = nncf.quantize(model, nncf.Dataset(list(calibration)), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(calibration))
    xml, weights = filenames
    with tempfile.TemporaryDirectory(dir=directory, prefix=".quantize-") as tmp:
        ov.save_model(quantized, str(Path(tmp) / xml), compress_to_fp16=False)
        os.replace(Path(tmp) / weights, directory / weights)
        os.replace(Path(tmp) / xml, directory / xml)


def ensure_quantized(model: torch.nn.Module, source: str, sample: Mapping[str, torch.Tensor],
                     calibration: Sequence[Mapping[str, Any]], quantization: str = "int8",
                     output: str = "logits") -> Path:
    """The cached int8 IR of `model` (made now, from the fp32 IR of `ensure_converted`, only if no current one
    exists), calibrated on `calibration`.

    Parameters:
        model, source, sample, output: as for `ensure_converted`.
        calibration: the calibration inputs, tokenizer features of one pair each (`calibration_pairs`); they are
            part of the fingerprint (other inputs, another IR).
        quantization: a key of `INT8_FILES`.

    Example:
        >>> path = ensure_quantized(ce.model, "path/to/ce", sample, calibration)  # doctest: +SKIP
    """
    if quantization not in INT8_FILES:
        raise ValueError(f"unknown quantization {quantization!r} for the openvino backend; use "
                         f"{', '.join(INT8_FILES)} or none")
    if not calibration:
        raise ValueError("int8 quantization needs at least one calibration input")
    calibration = [export_cache.int64_feed(item, [n for n in INPUT_NAMES if n in item]) for item in calibration]
    fp32_xml = ensure_converted(model, source, sample, output)
    xml, weights = INT8_FILES[quantization]
    digest = export_cache.fingerprint(model, {"backend": "openvino", "recipe": RECIPE_VERSION, "output": output,
                                              "quantization": quantization, "int8_recipe": INT8_RECIPE_VERSION,
                                              "calibration": _features_digest(calibration)})

    def write(directory: Path) -> None:
        logger.info("quantizing %s to int8 with NNCF (%d calibration inputs), once; cached at %s", source,
                    len(calibration), directory)
        _quantize(fp32_xml, directory, (xml, weights), calibration)

    return export_cache.ensure(source, digest, SUBDIR, xml, write, RECIPE_VERSION, companions=(weights,),
                               what="an int8 OpenVINO model")


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
