"""The shared device/precision rules: placement per backend, the fp16 cast, bf16 autocast and the character cap.

(`pick_device`/`pick_dtype` with CUDA mocked are tested in tests/rerank/test_cross_encoder.py.)
"""

from __future__ import annotations

import pytest
import torch

from index.runtime.device import CHARS_PER_TOKEN_CAP, apply_precision, autocast, char_cap, placement


def test_the_character_cap_is_per_allowed_token_with_512_by_default():
    assert char_cap(256) == 256 * CHARS_PER_TOKEN_CAP
    assert char_cap(None) == char_cap(0) == 512 * CHARS_PER_TOKEN_CAP


def test_exported_backends_load_on_the_cpu_in_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert placement("auto", "auto") == ("cuda", torch.float16)
    assert placement("cuda:1", "bf16", "torch") == ("cuda:1", torch.bfloat16)
    for backend in ("onnx", "openvino"):
        assert placement("auto", "bf16", backend) == ("cpu", torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert placement("auto", "auto") == ("cpu", torch.float32)


@pytest.mark.parametrize(("device", "dtype", "halved"), [
    ("cuda", torch.float16, True), ("cpu", torch.float16, False), ("cuda", torch.bfloat16, False),
    ("cuda", torch.float32, False),
])
def test_only_fp16_on_an_accelerator_halves_the_weights(device, dtype, halved):
    layer = torch.nn.Linear(2, 2)
    assert apply_precision(layer, device, dtype) is layer
    assert layer.weight.dtype == (torch.float16 if halved else torch.float32)


def test_bf16_computes_under_autocast_and_other_precisions_do_not():
    layer = torch.nn.Linear(4, 4)
    x = torch.ones(1, 4)
    with autocast("cpu", torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
    for dtype in (torch.float32, torch.float16):
        with autocast("cpu", dtype):
            assert layer(x).dtype == torch.float32
