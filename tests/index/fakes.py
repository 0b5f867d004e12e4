"""A deterministic stand-in bi-encoder: each text's vector depends on the text alone (its hashed words), never on
the batch it is encoded in, so index mechanics (segments, merges, filters) can be compared exactly and fast."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import numpy as np


class HashEncoder:
    """Bag of hashed words projected to `dim` dimensions and normalized: texts sharing words are close."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.name = "hash-encoder"

    @functools.lru_cache(maxsize=1 << 16)  # noqa: B019 - a test helper, one per test module
    def _word(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim)

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float64)
        for word in text.lower().split():
            v += self._word(word)
        if not v.any():
            v[0] = 1.0
        return (v / np.linalg.norm(v)).astype(np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self.encode(texts)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.encode(queries)
