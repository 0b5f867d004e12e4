"""Smoke run of the benchmark's `ray` section at a tiny size on the local cluster: its rows and the equality
checks it reports, not its figures."""

from __future__ import annotations

import pytest

from tests.conftest import SCIFACT


@pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(), reason=f"the SciFact dataset is not at {SCIFACT}")
def test_ray_section_rows(tiny_bi_encoder, tmp_path, ray_cluster):
    from retrieval.benchmark import Settings
    from retrieval.benchmark.ray import section_ray
    from retrieval.config import load_config

    config = load_config({"first_stage": {"dense": {"model": str(tiny_bi_encoder), "backend": "torch"}}})
    settings = Settings(SCIFACT, sections=("ray",), ray_docs=60, ray_bm25_passages=1500, ray_queries=6,
                        ray_shards=2, quiet=True)
    section = section_ray(config, settings)
    assert ray_cluster.is_initialized()  # the session's cluster was the section's, and stays up
    build = section.report["build"]
    assert build["documents"] == 60 and build["bm25_arrays_equal"] and build["embeddings_max_abs_diff"] == 0.0
    assert build["ray_details"]["tasks"] == 1 and build["sharded_details"]["shards"] == 2
    bm25 = section.report["bm25_build"]
    assert bm25["ray_details"]["tasks"] == 3  # 1500 passages in blocks of 512
    assert bm25["components"] == ["bm25"]  # BM25 only: no encoder
    search = section.report["search"]
    assert set(search) == {"unsharded", "sharded in process", "sharded on Ray"}
    for stages in search.values():
        assert set(stages) == {"bm25", "hybrid"}
        assert all(f["same_top10"] == 6 and f["p50_ms"] > 0 for f in stages.values())
    assert section.report["fan_out"]["shards"] == 2 and section.report["fan_out"]["noop_p50_ms"] > 0
    assert [t.title.split(":")[0] for t in section.tables] == ["Ray build vs single process"] * 2 + \
        ["Sharded search (2 shards) vs unsharded, one query per call"]
