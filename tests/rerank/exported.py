"""Shared inputs of the exported-graph backend tests (onnx, openvino)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

QUERY = "how do tides work"
WORDS = ["moon", "tide", "ocean", "gravity", "coffee", "bees", "earthquake", "plate", "water", "sun", "orbit", "pull"]


def make_pairs(n: int = 40, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(QUERY, " ".join(rng.choice(WORDS, size=int(rng.integers(3, 40))))) for _ in range(n)]


def retrain_in_place(model_dir: Path) -> None:
    """Same directory, different classifier weights: what a cached export must notice."""
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        hf.classifier.weight.mul_(-1)
    hf.save_pretrained(model_dir)
