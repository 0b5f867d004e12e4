from __future__ import annotations

import json

import numpy as np
import pytest

from index.runtime.models import bundled_models, resolve_model
from rerank.cross_encoder import CrossEncoderReranker
from tests.conftest import ROOT

NAME = "bundled:minilm-l6-scifact"
BUNDLED = ROOT / "index" / "runtime" / "bundled"


def test_bundled_reranker_is_listed_and_small():
    assert NAME in bundled_models()
    path = resolve_model(NAME)
    size = sum(f.stat().st_size for f in (BUNDLED / "minilm-l6-scifact").iterdir())
    assert path.endswith("minilm-l6-scifact") and size < 50 * 2**20
    card = (BUNDLED / "minilm-l6-scifact" / "README.md").read_text()
    assert "SciFact" in card and "train" in card


@pytest.mark.slow
def test_bundled_reranker_loads_offline_and_ranks_the_relevant_passage_first(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rr = CrossEncoderReranker(NAME)
    assert next(rr.model.parameters()).dtype.is_floating_point
    docs = ["Vitamin D supplementation did not reduce the incidence of invasive cancer in older women.",
            "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
            "Sourdough bread is leavened by wild yeast and lactic acid bacteria."]
    ranked = rr.rank("Vitamin D lowers cancer risk.", docs)
    assert ranked[0]["corpus_id"] == 0
    scores = rr.predict([("Vitamin D lowers cancer risk.", d) for d in docs])
    assert np.isfinite(scores).all()


@pytest.mark.slow
def test_default_config_end_to_end_with_bundled_models(tmp_path):
    from index.builder import build_index
    from retrieval import SearchPipeline
    from retrieval.config import load_config
    from tests.conftest import SAMPLE_CORPUS

    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert cfg.rerank is not None and cfg.rerank.model == NAME
    cfg.index.path = tmp_path / "idx"
    build_index(SAMPLE_CORPUS, cfg.index.path, cfg.build_config(), show_progress=False)
    pipe = SearchPipeline(cfg)
    assert pipe.stages == ["bm25", "dense", "hybrid", "rerank"]
    results = pipe.query("bacteria that survive antibiotic treatment", top_k=3)
    assert results[0].doc_id == "antibiotics"
    assert {"bm25", "dense", "hybrid", "rerank"} <= set(results[0].stages)
    assert json.loads(json.dumps(results[0].to_dict()))["stages"]["rerank"]["rank"] == 1


def test_package_data_ships_the_model_files_but_no_cached_exports(tmp_path):
    """pyproject's package-data globs, applied to a model folder holding ONNX/OpenVINO exports beside its files."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # every package of the three (index.runtime, retrieval.commands, ...) ships, not only the listed top levels
    from setuptools import find_packages

    found = set(find_packages(str(ROOT), include=setuptools["packages"]["find"]["include"]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for top in ("index", "retrieval", "rerank")
               for p in (ROOT / top).rglob("__init__.py")}
    assert "index.runtime" in found and found == on_disk
    patterns = setuptools["package-data"]["index.runtime"]
    model = tmp_path / "bundled" / "m"
    shipped = ["config.json", "model.safetensors", "README.md", "tokenizer.json", "modules.json"]
    cached = ["onnx/model_qint8_avx512_vnni.onnx", "onnx/export.json", "openvino/model.xml", "openvino/model.bin",
              "openvino/export.json"]
    for name in shipped + cached:
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_text("x")
    matched = {p.relative_to(model).as_posix() for pattern in patterns for p in tmp_path.glob(pattern)}
    assert matched == set(shipped)
    real = BUNDLED / "minilm-l6-scifact"
    files = {p.name for p in real.iterdir() if p.is_file()}
    assert files == {p.name for pattern in patterns for p in BUNDLED.parent.glob(pattern) if p.parent == real}
