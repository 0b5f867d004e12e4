"""Local model folders that ship Python code are refused unless the config trusts them; the code is never run.
Bundled models are found inside `index.runtime` itself. A hub id fails in seconds when the hub does not answer
(a model in the Hugging Face cache still loads), and third-party noise at load is hushed narrowly."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from index.config import DenseConfig
from index.dense import Encoder
from index.runtime import models
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


_LOAD = """
import json, sys, time
import sentence_transformers  # the heavy imports first: the time measured is the load's alone
from index.dense import Encoder
from index.runtime.models import ModelNotAvailableError
start = time.monotonic()
try:
    encoder = Encoder(sys.argv[1])
    outcome = {"loaded": list(encoder.encode(["tides"]).shape)}
except ModelNotAvailableError as exc:
    outcome = {"error": str(exc)}
print(json.dumps({**outcome, "seconds": time.monotonic() - start}))
"""


def _online_env(tmp_path: Path, endpoint: str | None) -> dict[str, str]:
    """The environment of a user who never heard of HF_HUB_OFFLINE, with an empty (or given) hub cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env.setdefault("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
        env["NO_PROXY"] = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1"]))  # local: never via a proxy
    return env


def _load_in_subprocess(name: str, env: dict[str, str]) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", _LOAD, name], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@contextlib.contextmanager
def _silent_server() -> Iterator[str]:
    """An endpoint that takes connections and never answers: the probe must give up on its own timeout."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # the kernel completes the handshakes; nothing ever reads or replies
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def _connects(host: str, port: int) -> bool:
    """A plain connection, not models' probe: under the tests' HF_HUB_OFFLINE=1 that never asks the network."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def _refused_endpoint() -> str:
    """A local port nothing listens on (bound once to find a free one): every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("endpoint", ["huggingface.co", "silent"])
def test_an_unreachable_hub_fails_in_seconds_without_hf_hub_offline(tmp_path, endpoint):
    """Without HF_HUB_OFFLINE, a hub id on a machine without internet (this one: the real endpoint) or behind an
    endpoint that never answers fails with the clear error in seconds, not after a minute of "Retrying" lines."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_silent_server()) if endpoint == "silent" else None
        if url is None and _connects("huggingface.co", 443):
            pytest.skip("this machine reaches the Hugging Face hub: the offline case cannot happen here")
        outcome, stderr = _load_in_subprocess("sentence-transformers/all-MiniLM-L6-v2", _online_env(tmp_path, url))
    shown = url or "https://huggingface.co"
    assert outcome.get("error", "").startswith(
        f"cannot load bi-encoder model 'sentence-transformers/all-MiniLM-L6-v2': it is not a local directory and "
        f"could not be fetched from the Hugging Face hub ({shown} did not answer within 2 s and the model is not in "
        "the local Hugging Face cache); without internet, use the offline model 'bundled:all-MiniLM-L6-v2'"), outcome
    assert outcome["seconds"] < 10, outcome
    assert "Retrying" not in stderr


def test_a_model_in_the_hub_cache_loads_when_the_hub_is_unreachable(tmp_path, tiny_bi_encoder):
    """An unreachable hub is not a missing model: what the Hugging Face cache holds loads from it, offline."""
    repo = tmp_path / "hf-cache" / "models--twostage-test--tiny"
    revision = "0" * 40
    shutil.copytree(tiny_bi_encoder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    outcome, stderr = _load_in_subprocess("twostage-test/tiny", _online_env(tmp_path, _refused_endpoint()))
    assert outcome.get("loaded") == [1, 32], outcome
    assert outcome["seconds"] < 10, outcome
    assert "Retrying" not in stderr


@pytest.fixture
def probe_log(monkeypatch) -> Iterator[list[str]]:
    """The hub probe replaced by a recorder (answering "unreachable"), with huggingface_hub not offline, and the
    per-process answer forgotten before and after."""
    calls: list[str] = []

    def probe(endpoint: str, timeout: float) -> bool:
        calls.append(endpoint)
        return False

    monkeypatch.setattr(models, "_probe", probe)
    models.hub_reachable.cache_clear()
    yield calls
    models.hub_reachable.cache_clear()


def _online(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def _recording_loader(seen: list[dict]):
    def loader(name, **kwargs):
        seen.append(kwargs)
        raise OSError("not in the cache")

    return loader


def test_the_hub_is_probed_once_per_process_and_then_loaded_from_the_cache_only(monkeypatch, probe_log):
    _online(monkeypatch)
    seen: list[dict] = []
    for _ in range(3):
        with pytest.raises(ModelNotAvailableError, match=r"did not answer within 2 s and the model is not in the "
                                                         r"local Hugging Face cache\); without internet, use"):
            load_model("org/some-model", "bi-encoder", _recording_loader(seen), device="cpu")
    assert probe_log == [models.hub_endpoint()]
    assert seen == [{"device": "cpu", "local_files_only": True}] * 3


def test_a_reachable_hub_is_used_as_before(monkeypatch, probe_log):
    _online(monkeypatch)
    monkeypatch.setattr(models, "_probe", lambda endpoint, timeout: probe_log.append(endpoint) or True)
    seen: list[dict] = []
    with pytest.raises(ModelNotAvailableError, match=r"could not be fetched from the Hugging Face hub \(OSError\)"):
        load_model("org/some-model", "cross-encoder", _recording_loader(seen), device="cpu")
    assert seen == [{"device": "cpu"}]


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_hf_hub_offline_means_no_probe_at_all(monkeypatch, probe_log, flag):
    _online(monkeypatch)
    monkeypatch.setenv(flag, "1")
    seen: list[dict] = []
    with pytest.raises(ModelNotAvailableError, match=rf"could not be fetched from the Hugging Face hub \({flag} is set "
                                                     r"and the model is not in the local Hugging Face cache\)"):
        load_model("org/some-model", "bi-encoder", _recording_loader(seen))
    assert (probe_log, seen) == ([], [{"local_files_only": True}])


def test_local_and_bundled_models_never_probe(monkeypatch, probe_log, tiny_bi_encoder):
    _online(monkeypatch)
    for name in (str(tiny_bi_encoder), "bundled:minilm-l6-scifact"):
        assert load_model(name, "bi-encoder", lambda path, **kwargs: (path, kwargs)) == (
            models.resolve_model(name), {})
    assert probe_log == []


def test_a_probe_that_hangs_is_given_up_on_time(monkeypatch):
    """A resolver that never answers is not bounded by socket timeouts: the wait is bounded by the thread join."""
    monkeypatch.setattr(models, "_probe", lambda endpoint, timeout: time.sleep(30) or True)
    models.hub_reachable.cache_clear()
    try:
        start = time.monotonic()
        assert models.hub_reachable("http://hangs.invalid", timeout=0.5) is False
        assert time.monotonic() - start < 3
    finally:
        models.hub_reachable.cache_clear()


_NOISE = """
import logging, sys
from sentence_transformers import CrossEncoder
from index.runtime.models import load_model
model = load_model(sys.argv[1], "cross-encoder", CrossEncoder) if sys.argv[2] == "ours" else CrossEncoder(sys.argv[1])
model.model.base_model.loss_function  # what TorchScript tracing (the OpenVINO export) asks of every submodule
logging.getLogger("transformers.modeling_utils").warning("another warning from the same logger")
"""


def test_load_noise_is_hushed_narrowly(tiny_cross_encoder):
    """transformers' causal-LM loss warning (for an encoder that has no loss_type) and its "Loading weights" bar
    are gone from a model loaded through load_model; the same logger's other warnings still show."""
    def stderr(how: str) -> str:
        proc = subprocess.run([sys.executable, "-c", _NOISE, str(tiny_cross_encoder), how], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    ours = stderr("ours")
    assert "loss_type" not in ours and "Loading weights" not in ours
    assert "another warning from the same logger" in ours
    plain = stderr("plain")
    if "loss_type=None" not in plain:
        pytest.skip("this transformers no longer warns about loss_type: models._NOISE's filter can go")
    assert "Loading weights" in plain
