"""Smoke run of the benchmark's `updates` and `filters` sections at a tiny size: the rows' shape, not figures."""

from __future__ import annotations

import argparse

import pytest

from tests.conftest import SCIFACT

pytestmark = pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(),
                                reason=f"the SciFact dataset is not at {SCIFACT}")


def tiny_settings(**extra):
    from retrieval.benchmark import Settings

    return Settings(SCIFACT, sections=("updates", "filters"), updates_docs=300, updates_held_out=20,
                    updates_rounds=1, synthetic_docs=2000, synthetic_queries=12, synthetic_segments=2,
                    synthetic_faiss=("flat", "hnsw"), quiet=True, **extra)


@pytest.fixture(scope="module")
def tiny_config(tiny_bi_encoder):
    from retrieval.config import load_config

    return load_config({"first_stage": {"dense": {"model": str(tiny_bi_encoder), "backend": "torch"}}})


def test_updates_section_rows(tiny_config):
    from retrieval.benchmark.updates import section_updates

    section = section_updates(tiny_config, tiny_settings())
    scifact, synthetic = section.report["scifact"], section.report["synthetic"]
    assert scifact["base_documents"] == 280 and scifact["held_out"] == 20
    assert len(scifact["add_runs"]) == 2 and len(scifact["encode_alone_runs_s"]) == 2
    assert len(scifact["delete_runs"]) == 1
    assert {"read", "bm25", "dense", "manifest"} <= set(scifact["add_runs"][0]["phases"])
    assert scifact["merge"]["documents"] == 280 and scifact["merge"]["segments"] == 1
    assert isinstance(scifact["claim_holds"], bool)
    assert set(synthetic["types"]) == {"flat", "hnsw"}
    flat, hnsw = synthetic["types"]["flat"], synthetic["types"]["hnsw"]
    assert flat["segments"] == 3 and len(flat["delta_commit_runs_s"]) == 2
    assert set(flat["stages"]) == {"bm25", "dense"} and set(hnsw["stages"]) == {"dense"}
    for stage in (flat["stages"]["bm25"], flat["stages"]["dense"], hnsw["stages"]["dense"]):
        assert stage["queries"] == 12 and stage["segmented_p50_ms"] > 0 and stage["ratio"] > 0
    # Exact searches: the segmented index answers as the merged one does.
    assert flat["stages"]["bm25"]["identical_top_k"] == 12 and flat["stages"]["dense"]["identical_top_k"] == 12
    assert flat["stages"]["dense"]["recall_at_k_vs_exact"] == {"segmented": 1.0, "merged": 1.0}
    assert set(hnsw["stages"]["dense"]["recall_at_k_vs_exact"]) == {"segmented", "merged"}
    assert flat["stages"]["bm25"]["postings_per_query_p50"] > 0
    titles = [t.title for t in section.tables]
    assert len(titles) == 3 and titles[0].startswith("Updates: SciFact")
    steps = [r["step"] for r in section.tables[0].rows]
    assert any(s.startswith("encode the 20 alone") for s in steps) and any(s.startswith("merge") for s in steps)
    assert len(section.tables[1].rows) == 3  # bm25, dense (flat), dense (hnsw)


def test_filters_section_rows(tiny_config):
    from retrieval.benchmark.filters import section_filters

    section = section_filters(tiny_config, tiny_settings())
    flat = section.report["types"]["flat"]
    assert flat["matching_documents"] == {"none": 2000, "50%": 1000, "1%": 20, "0.01%": 1}
    assert set(flat["stages"]) == {"bm25", "dense"} and set(section.report["types"]["hnsw"]["stages"]) == {"dense"}
    for types in section.report["types"].values():
        for by_filter in types["stages"].values():
            assert set(by_filter) == {"none", "50%", "1%", "0.01%"}
            for m in by_filter.values():
                assert m["queries"] == 12 and m["p50_ms"] > 0
                assert m["short_answers"] == m["long_answers"] == m["results_outside_filter"] == 0
    (table,) = section.tables
    assert len(table.rows) == 12  # (bm25, dense flat, dense hnsw) x 4 filters
    assert {"stage", "filter", "matching docs", "p50 ms", "x unfiltered", "short answers"} <= set(table.rows[0])


def test_cli_options_reach_the_settings():
    from retrieval.benchmark import Settings
    from retrieval.commands import benchmark

    parser = argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    args = parser.parse_args(["--dataset", str(SCIFACT), "--sections", "updates,filters", "--synthetic-faiss",
                              "flat", "--synthetic-docs", "5000", "--updates-docs", "300"])
    args.quiet = True
    settings = benchmark.settings(args)
    assert settings.sections == ("updates", "filters") and settings.synthetic_faiss == ("flat",)
    assert settings.synthetic_docs == 5000 and settings.updates_docs == 300
    with pytest.raises(ValueError, match="unknown FAISS type"):
        Settings(SCIFACT, synthetic_faiss=("hnsw", "annoy"))
