from __future__ import annotations

import json

from index.cache import cached_index, index_settings
from retrieval.config import PipelineConfig, load_config
from tests.beir_data import write_beir
from tests.conftest import pipeline_config


def test_cached_index_reuses_matching_builds(tmp_path, tiny_bi_encoder):
    data = write_beir(tmp_path / "tiny")
    config = load_config(pipeline_config(tmp_path / "unused", tiny_bi_encoder))
    first = cached_index(data, config.build_config(), tmp_path / "cache", show_progress=False)
    manifest = (first / "manifest.json").read_text()
    assert first.parent == tmp_path / "cache" and first.name.startswith("tiny-")
    config.first_stage.bm25.top_k = 7  # query-time knobs do not change the index
    config.first_stage.dense.batch_size = 3
    assert cached_index(data, config.build_config(), tmp_path / "cache", show_progress=False) == first
    assert (first / "manifest.json").read_text() == manifest
    config.first_stage.bm25.analyzer.stemmer = None
    other = cached_index(data, config.build_config(), tmp_path / "cache", show_progress=False)
    assert other != first and (other / "manifest.json").is_file()


def test_index_settings_ignore_query_time_knobs():
    base = PipelineConfig().build_config().model_dump(mode="json")
    tuned = PipelineConfig.model_validate(
        {"first_stage": {"bm25": {"k1": 0.9, "top_k": 1000},
                         "dense": {"top_k": 5, "backend": "openvino", "faiss": {"nprobe": 3}}}})
    assert index_settings(tuned.build_config().model_dump(mode="json")) == index_settings(base)
    # A manifest written before a query-time key existed still matches (cached indexes survive an upgrade).
    older = json.loads(json.dumps(base))
    del older["dense"]["backend"]
    assert index_settings(older) == index_settings(base)
    chunked = PipelineConfig.model_validate({"index": {"chunking": {"max_words": 50, "overlap": 10}}})
    assert index_settings(chunked.build_config().model_dump(mode="json")) != index_settings(base)
