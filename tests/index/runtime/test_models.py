"""Local model folders that ship Python code are refused unless the config trusts them; the code is never run.
Bundled models are found inside `index.runtime` itself."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from index.config import DenseConfig
from index.dense import Encoder
from index.runtime.models import ModelNotAvailableError, load_model
from rerank.config import RerankConfig
from rerank.cross_encoder import CrossEncoderReranker
from tests.conftest import ROOT

# Any of these makes a folder "ship its own code"; each is refused alone (with a model_type transformers knows, so
# transformers itself would load the folder without a word).
SHIPS_CODE = {
    "auto_map": ("config.json", "config.json has an auto_map"),
    "tokenizer-auto_map": ("tokenizer_config.json", "tokenizer_config.json has an auto_map"),
    "py-file": ("modeling_custom.py", "it holds modeling_custom.py"),
    "py-in-subfolder": ("1_Pooling/custom_pooling.py", "it holds 1_Pooling/custom_pooling.py"),
}


def _with_code(model: Path, target: Path, case: str, marker: Path) -> Path:
    """A copy of `model` shipping code (the `case` way) whose every .py file would create `marker` if run."""
    folder = shutil.copytree(model, target)
    name, _ = SHIPS_CODE[case]
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
    if name.endswith(".json"):
        config = json.loads((folder / name).read_text())
        assert case != "auto_map" or config["model_type"] == "bert"  # a known type: transformers would not ask
        config["auto_map"] = {"AutoConfig": "custom.Config", "AutoModel": "custom.Model",
                              "AutoTokenizer": ["custom.Tokenizer", None]}
        (folder / name).write_text(json.dumps(config))
        (folder / "custom.py").write_text(code)
    else:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(code)
    return folder


@pytest.mark.parametrize("case", list(SHIPS_CODE))
def test_a_bi_encoder_folder_with_code_is_refused(tmp_path, tiny_bi_encoder, case):
    marker = tmp_path / "code-was-run"
    folder = _with_code(tiny_bi_encoder, tmp_path / "model", case, marker)
    _, reason = SHIPS_CODE[case]
    with pytest.raises(ModelNotAvailableError, match=rf"^bi-encoder model '{folder}' ships its own Python code, "
                                                     r"which is not run unless the config sets trust_remote_code: "
                                                     rf"true \(.*\); found: {reason}(, |$)"):
        Encoder(str(folder))
    assert not marker.exists()


@pytest.mark.parametrize("case", ["auto_map", "py-file"])
def test_a_cross_encoder_folder_with_code_is_refused(tmp_path, tiny_cross_encoder, case):
    marker = tmp_path / "code-was-run"
    folder = _with_code(tiny_cross_encoder, tmp_path / "model", case, marker)
    with pytest.raises(ModelNotAvailableError, match=rf"^cross-encoder model '{folder}' ships its own Python code"):
        CrossEncoderReranker(config=RerankConfig(model=str(folder)))
    assert not marker.exists()


def test_trust_remote_code_lets_the_folder_load(tmp_path, tiny_bi_encoder):
    """With trust_remote_code the gate opens; this folder's code is a file nothing imports, so it still does not run."""
    marker = tmp_path / "code-was-run"
    folder = _with_code(tiny_bi_encoder, tmp_path / "model", "py-file", marker)
    encoder = Encoder(str(folder), DenseConfig(model=str(folder), trust_remote_code=True))
    assert encoder.encode(["tides"]).shape == (1, encoder.dim)
    assert not marker.exists()


def test_plain_and_bundled_models_ship_no_code(tiny_bi_encoder, tiny_cross_encoder):
    from index.runtime.models import bundled_models, model_code, resolve_model

    for name in [str(tiny_bi_encoder), str(tiny_cross_encoder), *bundled_models()]:
        assert model_code(Path(resolve_model(name))) is None, name


def test_the_check_runs_before_the_loader(tmp_path, tiny_bi_encoder):
    folder = _with_code(tiny_bi_encoder, tmp_path / "model", "py-file", tmp_path / "marker")
    called = []
    with pytest.raises(ModelNotAvailableError, match=r"ships its own Python code"):
        load_model(str(folder), "bi-encoder", lambda *a, **k: called.append(a), trust_remote_code=False)
    assert called == []


def test_the_bundled_reranker_is_found_without_importing_another_stage():
    """The bundled rerankers are package data of `index.runtime`: resolving one imports no `rerank`, no torch."""
    code = ("import json, sys\nfrom index.runtime.models import resolve_model\n"
            "path = resolve_model('bundled:minilm-l6-scifact')\n"
            "print(json.dumps([path, sorted(m for m in ('rerank', 'retrieval', 'torch') if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    path, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(path) == ROOT / "index" / "runtime" / "bundled" / "minilm-l6-scifact"
    assert loaded == []


def test_the_runtime_package_names_resolve_to_their_home_modules():
    import index.runtime

    for name in index.runtime.__all__:
        home = importlib.import_module(index.runtime._HOMES[name])
        assert getattr(index.runtime, name) is getattr(home, name)
