"""Where a model runs and at what precision, shared by every encoder: device and dtype choice, the fp16 cast,
bf16 autocast, and the per-model character cap applied before tokenizing.

Rules: device `auto` prefers cuda, then mps, then cpu; precision `auto` is fp16 on CUDA and fp32 elsewhere.
fp16 halves the weights on an accelerator; bf16 keeps fp32 weights and computes under `torch.autocast`. An
exported graph (onnx, openvino) runs on the CPU, so the torch model it is made from loads there in fp32.

Example:
    >>> from index.runtime.device import autocast, char_cap, placement
    >>> device, dtype = placement("auto", "auto")  # doctest: +SKIP
    >>> with autocast(device, dtype):  # doctest: +SKIP
    ...     model(batch)
    >>> char_cap(256)
    3072
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from index.runtime.models import ModelNotAvailableError

logger = logging.getLogger(__name__)

# Text is cut to this many characters per allowed token before tokenizing: the model truncates at its token limit
# anyway, and the cut keeps a 20 MB document from being tokenized whole.
CHARS_PER_TOKEN_CAP = 12
# Backends that run an exported graph on the CPU instead of the torch model.
EXPORTED_BACKENDS = ("onnx", "openvino")


def pick_device(device: str = "auto") -> str:
    """`auto` prefers cuda, then mps, then cpu."""
    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelNotAvailableError(f"device {device!r} requested but CUDA is not available; use auto or cpu")
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(precision: str, device: str) -> torch.dtype:
    """`auto` is fp16 on CUDA and fp32 elsewhere."""
    if precision == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def placement(device: str, precision: str, backend: str = "torch") -> tuple[str, torch.dtype]:
    """The device and torch dtype a model is loaded with: `pick_device` and `pick_dtype` for the torch backend;
    for an exported one, the CPU in fp32 (the graph is made from those weights; its own precision is chosen when
    it is compiled)."""
    device = pick_device(device)
    if backend not in EXPORTED_BACKENDS:
        return device, pick_dtype(precision, device)
    if device != "cpu":
        logger.info("the %s backend runs on the CPU (device %s is not used)", backend, device)
    return "cpu", torch.float32


def apply_precision(model: Any, device: str, dtype: torch.dtype) -> Any:
    """Halve the weights in place for fp16 on an accelerator; other precisions keep the loaded fp32 weights."""
    if dtype == torch.float16 and device != "cpu":
        model.half()
    return model


def autocast(device: str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """`torch.autocast` for bf16 (fp32 weights, bf16 compute), nothing otherwise."""
    if dtype == torch.bfloat16:
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def char_cap(max_tokens: int | None) -> int:
    """Characters kept of a text (or of each side of a pair) for a model reading `max_tokens` tokens (None: 512)."""
    return (max_tokens or 512) * CHARS_PER_TOKEN_CAP
