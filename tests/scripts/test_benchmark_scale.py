"""Smoke run of the benchmark's `scale` section at a tiny size: the rows' shape and the exact parts, not figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import SCIFACT


def test_synthetic_corpus_is_streamed_and_the_same_every_time(tmp_path):
    from retrieval.benchmark.scale import BLOCK, write_synthetic_corpus

    n = BLOCK + 7  # two blocks
    first = write_synthetic_corpus(n, tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()
    second = write_synthetic_corpus(n, tmp_path / "b.jsonl").read_text(encoding="utf-8").splitlines()
    assert first == second and len(first) == n
    docs = [json.loads(line) for line in (first[0], first[-1])]
    assert [d["_id"] for d in docs] == ["p0000000", f"p{n - 1:07d}"]
    assert all(50 <= len(d["text"].split()) <= 250 and 0 <= d["bucket"] < 10_000 for d in docs)


def test_exact_top_is_the_brute_force_top():
    from retrieval.benchmark.scale import exact_top, synthetic_vectors

    vectors = synthetic_vectors(120_000)  # three blocks
    queries = synthetic_vectors(5, seed=99)
    assert np.allclose(np.linalg.norm(vectors[:100], axis=1), 1, atol=1e-5)
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    assert (np.sort(exact_top(vectors, queries, 10), axis=1) == np.sort(truth, axis=1)).all()


@pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(), reason=f"the SciFact dataset is not at {SCIFACT}")
def test_scale_section_rows(tiny_bi_encoder, tmp_path):
    from index.builder import build_index
    from retrieval.benchmark import Settings
    from retrieval.benchmark.scale import section_scale
    from retrieval.config import load_config
    from tests.conftest import SAMPLE_CORPUS

    config = load_config({"first_stage": {"dense": {"model": str(tiny_bi_encoder), "backend": "torch"}}})
    build_index(SAMPLE_CORPUS, tmp_path / "idx", config.build_config(), show_progress=False)
    config.index.path = tmp_path / "idx"  # its embeddings are the calibration's real vectors
    settings = Settings(SCIFACT, sections=("scale",), scale_passages=3000, scale_queries=20,
                        scale_faiss=("flat", "hnsw", "sq8"), quiet=True)
    section = section_scale(config, settings)
    bm25 = section.report["bm25"]
    assert bm25["passages"] == 3000 and bm25["queries"] == 20
    assert bm25["build_peak_rss_mib"] >= bm25["build_rss_start_mib"] > 0
    assert bm25["rss_open_mib"] > 0 and bm25["p50_ms"] > 0 and bm25["open_s"] > 0
    faiss = section.report["faiss"]
    assert set(faiss) == {"flat", "hnsw", "sq8"} and faiss["flat"]["recall_at_10"] == 1.0
    assert all(0 <= m["recall_at_10"] <= 1 and m["index_mib"] > 0 for m in faiss.values())
    calibration = section.report["faiss_calibration"]
    assert set(calibration["types"]) == {"hnsw", "sq8"}
    assert [t.title.split(":")[0] for t in section.tables] == ["Scale"] * 3


def test_cli_scale_options_reach_the_settings():
    import argparse

    from retrieval.commands import benchmark

    parser = argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    args = parser.parse_args(["--dataset", str(SCIFACT), "--sections", "scale", "--scale-passages", "5000",
                              "--scale-faiss", "hnsw,sq8", "--scale-ef-construction", "16"])
    args.quiet = True
    settings = benchmark.settings(args)
    assert settings.scale_passages == 5000 and settings.scale_faiss == ("hnsw", "sq8")
    assert settings.scale_ef_construction == 16


def test_scale_hybrid_rows(tiny_bi_encoder, tmp_path):
    from retrieval.benchmark import Settings
    from retrieval.benchmark.scale import section_scale
    from retrieval.config import load_config

    config = load_config({"first_stage": {"dense": {"model": str(tiny_bi_encoder), "backend": "torch"}}})
    config.index.path = tmp_path / "none"  # no index: no calibration
    settings = Settings(SCIFACT, sections=("scale",), scale_passages=2000, scale_queries=12, scale_faiss=(),
                        scale_hybrid="hnsw", quiet=True)
    section = section_scale(config, settings)
    hybrid = section.report["hybrid"]
    assert hybrid["passages"] == 2000 and hybrid["faiss"] == "hnsw" and hybrid["queries"] == 12
    assert all(hybrid[s]["p50_ms"] > 0 for s in ("bm25", "dense", "hybrid"))
    assert hybrid["rss_open_mib"] >= hybrid["rss_encoder_mib"] > 0
    assert section.tables[-1].title.startswith("Scale: BM25 + dense (hnsw) over 2,000 synthetic passages")


def test_scale_hybrid_type_is_checked():
    from retrieval.benchmark import Settings

    with pytest.raises(ValueError, match="FAISS type"):
        Settings(SCIFACT, sections=("scale",), scale_hybrid="annoy")
