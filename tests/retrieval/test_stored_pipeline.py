"""The index remembers its pipeline: searched without a config it runs the stored one (query-time settings and
reranker included); a given config may change only query-time settings; an older index still loads."""

from __future__ import annotations

import json
import logging

import pytest

from index.builder import build_index
from index.manifest import IndexDirError
from retrieval.config import load_config
from retrieval.pipeline import SearchPipeline
from tests.conftest import SAMPLE_CORPUS, pipeline_config


@pytest.fixture(scope="module")
def stored(tmp_path_factory, tiny_bi_encoder, tiny_cross_encoder):
    root = tmp_path_factory.mktemp("stored")
    raw = pipeline_config(root / "idx", tiny_bi_encoder, bm25={"k1": 1.2})
    raw["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 5}
    raw["output"] = {"top_k": 3}
    config = load_config(raw)
    build_index(SAMPLE_CORPUS, root / "idx", config.build_config(), show_progress=False, pipeline=config.stored())
    return root / "idx", raw


def test_without_a_config_the_stored_pipeline_runs(stored):
    path, raw = stored
    pipe = SearchPipeline.from_index(path)
    assert pipe.stages == ["bm25", "dense", "hybrid", "rerank"]
    assert pipe.config.first_stage.bm25.k1 == 1.2 and pipe.config.rerank.top_n == 5
    assert pipe.config.index.path == path.resolve()
    results = pipe.query("how do vaccines work")
    assert len(results) == 3 and all("final" in r.stages for r in results)
    assert results == SearchPipeline.from_config(raw).query("how do vaccines work")
    manifest = json.loads((path / "manifest.json").read_text())
    assert "path" not in manifest["pipeline"]["index"]  # the index is wherever it is opened


def test_a_given_config_changes_query_time_settings_only(stored, tiny_bi_encoder):
    path, raw = stored
    plain = pipeline_config(path, tiny_bi_encoder, bm25={"k1": 0.9, "top_k": 7})
    pipe = SearchPipeline.from_index(path, plain)
    assert pipe.stages == ["bm25", "dense", "hybrid"] and pipe.config.first_stage.bm25.k1 == 0.9
    chunked = {**plain, "index": {"chunking": {"max_words": 50, "overlap": 10}}}
    with pytest.raises(IndexDirError, match=r"was built with index.chunking: null but the config has "
                                            r'index.chunking: \{"max_words": 50, "overlap": 10\}'):
        SearchPipeline.from_index(path, chunked)
    stemmer = pipeline_config(path, tiny_bi_encoder, bm25={"analyzer": {"stemmer": None}})
    with pytest.raises(IndexDirError, match=r"first_stage.bm25.analyzer.stemmer"):
        SearchPipeline.from_index(path, stemmer)


def test_an_index_without_a_stored_pipeline_loads_with_a_note(sample_index, caplog):
    with caplog.at_level(logging.WARNING, logger="retrieval.pipeline"):
        pipe = SearchPipeline.from_index(sample_index)
    assert pipe.stages == ["bm25", "dense", "hybrid"]
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "stores no pipeline config" in notes[0] and "\n" not in notes[0]


def test_a_damaged_stored_pipeline_is_refused_in_one_line(stored, tmp_path):
    import shutil

    path = shutil.copytree(stored[0], tmp_path / "idx")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["pipeline"]["output"] = {"top_k": 0}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexDirError, match=r"the pipeline config stored in manifest.json is not valid \(.*top_k.*\); "
                                            r"pass a config, or rebuild the index") as err:
        SearchPipeline.from_index(path)
    assert "\n" not in str(err.value)


def test_the_stored_pipeline_is_the_config_as_written(stored, tiny_cross_encoder):
    # only what the config set: a default it left out (rerank.quantization) must not read as chosen on reload,
    # where an explicit quantization with the openvino backend is refused
    manifest = json.loads((stored[0] / "manifest.json").read_text())
    assert manifest["pipeline"]["rerank"] == {"model": str(tiny_cross_encoder), "top_n": 5}
    assert manifest["pipeline"]["first_stage"]["bm25"] == {"top_k": 20, "k1": 1.2}
    config = load_config(manifest["pipeline"])
    assert "quantization" not in config.rerank.model_fields_set and config.rerank.backend == "torch"
