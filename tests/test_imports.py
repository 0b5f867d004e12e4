"""Light modules import without the heavy stack: a config or a corpus reader never waits for torch or faiss."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "faiss", "transformers", "sentence_transformers", "openvino", "onnxruntime")
LIGHT = ("retrieval.config", "retrieval.fusion", "retrieval.scores", "rerank.config", "index.documents", "index.config",
         "index.postings", "index.components", "index.runtime.models", "retrieval.retrievers", "retrieval.splade",
         "index.splade")


def _loaded_after(statement: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_load_no_heavy_library(module):
    assert _loaded_after(f"import {module}") == []


def test_package_names_still_resolve_on_first_use():
    homes = ("retrieval.pipeline", "retrieval.config", "rerank.config", "index.manifest", "index.builder")
    loaded = _loaded_after("from retrieval import SearchPipeline, load_config\nfrom rerank import RerankConfig\n"
                           "from index import IndexDirError, build_index", homes)
    assert loaded == sorted(homes)  # each name really was imported from its home module
    # faiss and torch wait for the first index load or model: importing the pipeline and builder needs neither
    assert _loaded_after("from retrieval import SearchPipeline\nfrom index import build_index") == []


@pytest.mark.parametrize("package", ["index", "retrieval", "rerank"])
def test_an_unknown_package_name_is_an_attribute_error(package):
    module = __import__(package)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018
    for name in module.__all__:  # every exported name resolves to the object of its home module
        assert getattr(module, name) is getattr(__import__(module._HOMES[name], fromlist=[name]), name)
