"""FAISS index building (`index.dense`): what the IVF quantizer is trained on."""

from __future__ import annotations

import numpy as np

import index.dense as dense
from index.config import FaissConfig


def _unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ivf_trains_on_a_fixed_sample_of_a_large_corpus(monkeypatch):
    vectors = _unit(2000)
    assert dense.train_sample(vectors, nlist=40) is vectors  # 2000 <= 64 * 40: all of them
    monkeypatch.setattr(dense, "IVF_TRAIN_PER_LIST", 10)
    sample = dense.train_sample(vectors, nlist=40)
    assert sample.shape == (400, 16) and sample.flags["C_CONTIGUOUS"]
    assert (dense.train_sample(vectors, nlist=40) == sample).all()  # the same vectors train the same quantizer
    rows = {r.tobytes() for r in vectors}
    assert all(r.tobytes() in rows for r in sample)
    index = dense.build_faiss(vectors, FaissConfig(type="ivf", nlist=40, nprobe=40))
    dense.configure_search(index, FaissConfig(type="ivf", nlist=40, nprobe=40))
    assert index.ntotal == 2000
    scores, ids = index.search(vectors[:5], 1)  # every list probed: each vector finds itself
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
