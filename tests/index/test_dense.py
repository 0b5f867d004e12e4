"""FAISS index building (`index.dense`): what the IVF quantizer is trained on."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

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


@pytest.mark.parametrize("faiss_type", ["flat", "hnsw", "sq8"])
def test_a_mapped_faiss_index_is_not_resident_at_open(tmp_path, faiss_type):
    """The vectors of a mapped index stay on disk until searches read them: opening a 40,000 x 384 index adds a
    fraction of its file to this process's RSS (the hnsw graph, ~8 MiB here, is read into memory)."""
    from index.manifest import FileReader
    from retrieval.benchmark.measure import current_rss_mib

    cfg = FaissConfig(type=faiss_type, ef_construction=16)
    directory = tmp_path / faiss_type
    directory.mkdir()
    built = dense.build_faiss(_unit(40_000, dim=384, seed=3), cfg)
    dense.save_faiss(built, directory)
    del built
    size_mib = (directory / dense.FAISS_FILE).stat().st_size / 2**20
    fd = os.open(directory / dense.FAISS_FILE, os.O_RDONLY)
    try:
        before = current_rss_mib()
        mapped = dense.load_faiss(FileReader(fd).read, mapped=Path(f"/proc/self/fd/{fd}"))
        grown = current_rss_mib() - before
        assert mapped.ntotal == 40_000
        assert grown < 0.25 * size_mib, f"{faiss_type}: RSS grew {grown:.1f} MiB at open for a {size_mib:.1f} MiB file"
    finally:
        os.close(fd)


def test_an_index_maps_its_faiss_index_and_answers_as_read(tmp_path, monkeypatch):
    """Opening maps the FAISS file read-only (faiss IO_FLAG_MMAP | IO_FLAG_MMAP_IFC) for every type built, through
    the path of the very file descriptor that was checked: the same answers as the index read into memory."""
    import faiss

    from index.manifest import FileReader

    calls = []
    real_read = faiss.read_index
    monkeypatch.setattr(faiss, "read_index", lambda *a: calls.append(a[1:]) or real_read(*a))
    vectors = _unit(3000, dim=32, seed=1)
    for faiss_type in ("flat", "hnsw", "ivf", "sq8"):
        cfg = FaissConfig(type=faiss_type, nprobe=8)
        directory = tmp_path / faiss_type
        directory.mkdir()
        dense.save_faiss(dense.build_faiss(vectors, cfg), directory)
        read = dense.load_faiss(directory)
        fd = os.open(directory / dense.FAISS_FILE, os.O_RDONLY)
        try:
            calls.clear()
            mapped = dense.load_faiss(FileReader(fd).read, mapped=Path(f"/proc/self/fd/{fd}"))
        finally:
            os.close(fd)
        ivf = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY  # inverted lists mapped
        ifc = ivf | faiss.IO_FLAG_MMAP_IFC  # flat codes (flat, hnsw, sq8) mapped
        assert calls == ([(ifc,), (ivf,)] if faiss_type == "ivf" else [(ifc,)]), faiss_type  # mapped, not read
        for index in (read, mapped):
            dense.configure_search(index, cfg)
        assert type(mapped) is type(read) and mapped.ntotal == 3000
        assert np.array_equal(mapped.search(vectors[:20], 10)[1], read.search(vectors[:20], 10)[1]), faiss_type
