from __future__ import annotations

import json

import numpy as np
import pytest

from index.builder import build_index
from index.directory import IndexDirectory
from index.manifest import FORMAT_VERSION, MANIFEST_FILE, IndexDirError, sha256_file
from retrieval.config import load_config
from tests.conftest import SAMPLE_CORPUS, pipeline_config


def test_manifest_describes_the_index(sample_index, tiny_bi_encoder):
    manifest = json.loads((sample_index / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["counts"]["documents"] == 24 and manifest["counts"]["passages"] == 24
    assert manifest["models"]["dense"] == str(tiny_bi_encoder)
    assert manifest["embedding_dim"] == 32
    assert set(manifest["files"]) == {"documents.sqlite", "bm25.npz", "bm25_vocab.json", "embeddings.npy",
                                      "faiss.index"}
    for name, info in manifest["files"].items():
        assert sha256_file(sample_index / name) == info["sha256"]
    assert not any(p.name.endswith((".pkl", ".pickle")) for p in sample_index.iterdir())


def test_roundtrip_loads_everything(sample_index):
    idx = IndexDirectory.load(sample_index)
    assert len(idx.store) == 24 and idx.bm25.num_docs == 24 and idx.faiss_index.ntotal == 24
    doc = idx.store.get(["tides"])["tides"]
    assert doc["title"] == "Why the sea has tides"
    assert np.allclose(np.linalg.norm(idx.embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("faiss_type", ["hnsw", "ivf", "sq8"])
def test_faiss_types_build_and_find_exact_neighbour(tmp_path, tiny_bi_encoder, faiss_type):
    from index.config import FaissConfig
    from index.dense import search_faiss

    cfg = load_config(pipeline_config(tmp_path / "i", tiny_bi_encoder, dense={"faiss": {"type": faiss_type}}))
    build_index(SAMPLE_CORPUS, tmp_path / "i", cfg.build_config(), show_progress=False)
    idx = IndexDirectory.load(tmp_path / "i")
    ids, _ = search_faiss(idx.faiss_index, np.asarray(idx.embeddings[:5]), 1,
                          FaissConfig(type=faiss_type, nprobe=64))
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_chunked_build_stores_passages(tmp_path, tiny_bi_encoder):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"_id": "long", "text": " ".join(f"w{i}" for i in range(100))}) + "\n"
                      + json.dumps({"_id": "short", "text": "tiny"}) + "\n")
    cfg = load_config(pipeline_config(tmp_path / "i", tiny_bi_encoder) | {"index": {"chunking": {"max_words": 40,
                                                                                                 "overlap": 10}}})
    report = build_index(corpus, tmp_path / "i", cfg.build_config(), show_progress=False)
    assert (report.documents, report.passages) == (2, 4)
    idx = IndexDirectory.load(tmp_path / "i")
    assert idx.store.passage_ids == ["long#0", "long#1", "long#2", "short#0"]
    assert idx.store.passage_texts([1])[1].split()[0] == "w30"


def test_rebuild_replaces_and_refuses_foreign_directory(tmp_path, tiny_bi_encoder):
    cfg = load_config(pipeline_config(tmp_path / "i", tiny_bi_encoder, dense={"enabled": False}))
    build_index(SAMPLE_CORPUS, tmp_path / "i", cfg.build_config(), show_progress=False)
    build_index(SAMPLE_CORPUS, tmp_path / "i", cfg.build_config(), show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i"]  # no temp or old directories left
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(IndexDirError, match="not an index; refusing"):
        build_index(SAMPLE_CORPUS, tmp_path / "data", cfg.build_config(), show_progress=False)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
