"""Bad configs are refused with a message naming the key (and the closest valid key for a typo); models that are not
available offline fail at once, without touching the network, naming the bundled alternative."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index.builder import build_index
from index.dense import Encoder
from index.manifest import IndexDirError
from index.runtime.models import ModelNotAvailableError
from rerank.cross_encoder import CrossEncoderReranker
from retrieval import SearchPipeline
from retrieval.config import ConfigError, load_config
from tests.conftest import SAMPLE_CORPUS, pipeline_config
from tests.reliability import bm25_only, bm25_pipeline_config

FS = "first_stage"

# (case, raw config, message): each is one distinct bad config.
REFUSED = [
    # unknown keys: the closest valid key is suggested and the valid keys listed
    ("typo-top-level", {"outptu": {}}, r"outptu: unknown key \(did you mean 'output'\?\); valid keys here: "
                                       r"first_stage, index, output, rerank"),
    ("typo-index", {"index": {"paht": "x"}}, r"index.paht: unknown key \(did you mean 'path'\?\)"),
    ("typo-bm25", {FS: {"bm25": {"topk": 5}}}, r"first_stage.bm25.topk: unknown key \(did you mean 'top_k'\?\)"),
    ("typo-faiss", {FS: {"dense": {"faiss": {"nprobes": 3}}}},
     r"first_stage.dense.faiss.nprobes: unknown key \(did you mean 'nprobe'\?\)"),
    ("typo-rerank", {"rerank": {"model": "m", "top_m": 3}}, r"rerank.top_m: unknown key \(did you mean 'top_n'\?\)"),
    ("typo-output", {"output": {"max_query_char": 5}},
     r"output.max_query_char: unknown key \(did you mean 'max_query_chars'\?\)"),
    ("unknown-key-no-match", {FS: {"bm25": {"zzzz": 1}}},
     r"first_stage.bm25.zzzz: unknown key; valid keys here: analyzer, b, backend, delta, enabled, epsilon, k1"),
    # wrong types
    ("top-k-string", {"output": {"top_k": "ten"}}, r"output.top_k: Input should be a valid integer"),
    ("top-k-fraction", {"output": {"top_k": 2.5}}, r"output.top_k: .*fractional part \(got 2.5\)"),
    ("top-k-boolean", {"output": {"top_k": True}}, r"output.top_k: .*expected a number, not the boolean true"),
    ("k1-boolean", {FS: {"bm25": {"k1": False}}}, r"first_stage.bm25.k1: .*not the boolean false"),
    ("enabled-not-bool", {FS: {"bm25": {"enabled": "maybe"}}}, r"first_stage.bm25.enabled: Input should be a valid "
                                                               r"boolean"),
    ("weights-not-a-mapping", {FS: {"fusion": {"weights": "half"}}},
     r"first_stage.fusion.weights: Input should be a valid dictionary"),
    ("stopwords-number", {FS: {"bm25": {"analyzer": {"stopwords": 5}}}}, r"first_stage.bm25.analyzer.stopwords"),
    ("batch-size-list", {FS: {"dense": {"batch_size": [32]}}}, r"first_stage.dense.batch_size: Input should be a "
                                                               r"valid integer"),
    ("section-not-a-mapping", {"index": "indexes/x"}, r"index: Input should be a valid dictionary"),
    ("variant-unknown", {FS: {"bm25": {"variant": "bm26"}}},
     r"first_stage.bm25.variant: Input should be 'okapi', 'bm25l', 'bm25plus' or 'lucene'"),
    # zero or negative sizes
    ("bm25-top-k-zero", {FS: {"bm25": {"top_k": 0}}}, r"first_stage.bm25.top_k: Input should be greater than or "
                                                      r"equal to 1 \(got 0\)"),
    ("dense-top-k-negative", {FS: {"dense": {"top_k": -1}}}, r"first_stage.dense.top_k: .*greater than or equal to 1"),
    ("fusion-top-k-zero", {FS: {"fusion": {"top_k": 0}}}, r"first_stage.fusion.top_k: .*greater than or equal to 1"),
    ("output-top-k-negative", {"output": {"top_k": -3}}, r"output.top_k: .*greater than or equal to 1 \(got -3\)"),
    ("rerank-top-n-zero", {"rerank": {"model": "m", "top_n": 0}}, r"rerank.top_n: .*greater than or equal to 1"),
    ("max-query-chars-zero", {"output": {"max_query_chars": 0}}, r"output.max_query_chars: .*greater than or equal"),
    ("rrf-k-zero", {FS: {"fusion": {"k": 0}}}, r"first_stage.fusion.k: .*greater than or equal to 1"),
    # fusion weights that do not make sense
    ("weight-negative", {FS: {"fusion": {"weights": {"bm25": -0.5, "dense": 1}}}}, r"fusion weights must be >= 0"),
    ("weights-all-zero", {FS: {"fusion": {"weights": {"bm25": 0, "dense": 0}}}}, r"must not all be zero"),
    ("weight-nan", {FS: {"fusion": {"weights": {"bm25": float("nan"), "dense": 1}}}}, r"must be finite numbers"),
    ("weight-infinite", {FS: {"fusion": {"weights": {"bm25": float("inf"), "dense": 1}}}}, r"must be finite numbers"),
    ("weight-unknown-retriever", {FS: {"fusion": {"weights": {"sparse": 1}}}},
     r"first_stage.fusion.weights.sparse: Input should be 'bm25' or 'dense'"),
    ("fusion-method-unknown", {FS: {"fusion": {"method": "borda"}}}, r"first_stage.fusion.method: Input should be "
                                                                     r"'rrf' or 'weighted'"),
    ("interpolation-above-one", {"rerank": {"model": "m", "interpolation": 1.5}}, r"rerank.interpolation: .*less "
                                                                                 r"than or equal to 1"),
    ("both-retrievers-off", {FS: {"bm25": {"enabled": False}, "dense": {"enabled": False}}},
     r"bm25 and dense are both disabled; enable at least one"),
    ("chunk-overlap-too-big", {"index": {"chunking": {"max_words": 50, "overlap": 60}}},
     r"chunking.overlap \(60\) must be smaller than chunking.max_words \(50\)"),
    ("rerank-without-model", {"rerank": {"top_n": 10}}, r"rerank.model: Field required"),
]


@pytest.mark.parametrize(("case", "raw", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_the_key_named(case, raw, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(raw)
    assert str(err.value).startswith("invalid config (dict):\n  ")


def test_every_error_of_a_config_is_listed_at_once(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: {topk: 5}\nfirst_stage:\n  bm25: {top_k: 0}\n  fusion: {weights: {bm25: -1}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"invalid config {path}:"
    assert len(lines) == 4 and all(line.startswith("  ") for line in lines[1:])


@pytest.mark.parametrize("yaml_text", ["output: {top_k: yes}\n", "output: {top_k: on}\n"])
def test_yaml_booleans_are_not_numbers(tmp_path, yaml_text):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=r"output.top_k: .*not the boolean true"):
        load_config(path)


# -- models that are not available offline -----------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: offline failures must not wait on network retries."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network connection attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_hub_bi_encoder_offline_names_the_bundled_model(no_network):
    with pytest.raises(ModelNotAvailableError, match=r"cannot load bi-encoder model 'sentence-transformers/does-not-"
                                                     r"exist': it is not a local directory and could not be fetched "
                                                     r"from the Hugging Face hub .*'bundled:all-MiniLM-L6-v2'"):
        Encoder("sentence-transformers/does-not-exist")


def test_hub_cross_encoder_offline_names_the_alternative(no_network, sample_index, tiny_bi_encoder):
    config = pipeline_config(sample_index, tiny_bi_encoder)
    config["rerank"] = {"model": "cross-encoder/does-not-exist"}
    with pytest.raises(ModelNotAvailableError, match=r"cannot load cross-encoder model 'cross-encoder/does-not-exist'"
                                                     r".*without internet, use (the offline model 'bundled:|a local "
                                                     r"model directory)"):
        SearchPipeline.from_config(config)


@pytest.mark.parametrize(("name", "message"), [
    ("bundled:no-such-model", r"no bundled model named 'no-such-model'; bundled models are: .*bundled:all-MiniLM-L6"),
    ("./no-such-dir", r"model directory ./no-such-dir does not exist"),
    ("EMPTY_DIR", r"exists but holds no model \(no config.json\)"),
])
def test_local_and_bundled_names_that_do_not_resolve(no_network, tmp_path, name, message):
    if name == "EMPTY_DIR":
        name = str(tmp_path)
    with pytest.raises(ModelNotAvailableError, match=message):
        Encoder(name)


def test_cuda_device_without_cuda(monkeypatch, tiny_bi_encoder):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from index.config import DenseConfig

    with pytest.raises(ModelNotAvailableError, match=r"device 'cuda' requested but CUDA is not available; use auto"):
        Encoder(str(tiny_bi_encoder), DenseConfig(model=str(tiny_bi_encoder), device="cuda"))
    with pytest.raises(ModelNotAvailableError, match=r"device 'cuda:1' requested"):
        CrossEncoderReranker(str(tiny_bi_encoder), device="cuda:1")


# -- settings that only fail against an index or at build time ---------------------------------------------------


def test_index_path_that_does_not_exist(tmp_path):
    with pytest.raises(IndexDirError, match=rf"index directory {tmp_path / 'nope'} does not exist; build one with "
                                            r"scripts/build_index.py"):
        SearchPipeline.from_config(bm25_pipeline_config(tmp_path / "nope"))


def test_index_path_not_set():
    with pytest.raises(ConfigError, match=r"index.path is not set; set it in the config or pass index="):
        SearchPipeline.from_config({"first_stage": {"dense": {"enabled": False}}})


def test_unknown_analyzer_lists_are_named_at_build(tmp_path):
    with pytest.raises(ValueError, match=r"unknown stopword list 'klingon'; choose one of \["):
        build_index(SAMPLE_CORPUS, tmp_path / "i", bm25_only(bm25={"analyzer": {"stopwords": "klingon"}}),
                    show_progress=False)
    with pytest.raises(ValueError, match=r"unknown stemmer 'elvish'; choose one of"):
        build_index(SAMPLE_CORPUS, tmp_path / "i", bm25_only(bm25={"analyzer": {"stemmer": "elvish"}}),
                    show_progress=False)
    assert not (tmp_path / "i").exists()


def test_reference_backend_without_the_variant(tmp_path):
    build_index(SAMPLE_CORPUS, tmp_path / "i", bm25_only(), show_progress=False)
    config = bm25_pipeline_config(tmp_path / "i")
    config["first_stage"]["bm25"] = {"backend": "rank_bm25", "variant": "lucene"}
    with pytest.raises(ValueError, match=r"backend rank_bm25 has no 'lucene' variant; use backend: sparse"):
        SearchPipeline.from_config(config)


# -- hostile YAML: alias bombs and huge values -------------------------------------------------------------------

BOMB_KEYS = ["output.top_k", "first_stage.bm25.analyzer.stopwords", "index.path"]


def _alias_bomb(dotted: str, levels: int = 9, width: int = 9) -> str:
    """~520 bytes of YAML whose value at `dotted` aliases expand to width**levels strings ("billion laughs")."""
    *parents, leaf = dotted.split(".")
    lines = [f"{'  ' * depth}{key}:" for depth, key in enumerate([*parents, leaf])]
    indent = "  " * (len(parents) + 1)
    lines.append(f"{indent}- &l0 [{', '.join(['lol'] * width)}]")
    lines += [f"{indent}- &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# Runs in a child process so that a regression (exponential expansion) fails on the timeout instead of hanging
# the suite; the dict bombs share one list object at every level, as aliases do.
_CHILD = """
import json, sys
from retrieval.config import ConfigError, load_config

def outcome(source):
    try:
        load_config(source)
    except ConfigError as exc:
        return str(exc)
    return "accepted"

def dict_bomb(dotted, levels=9, width=9):
    value = ["lol"] * width
    for _ in range(levels - 1):
        value = [value] * width
    raw = node = {}
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return raw

keys = sys.argv[1].split(",")
print(json.dumps({"yaml": [outcome(p) for p in sys.argv[2:]], "dict": [outcome(dict_bomb(k)) for k in keys]}))
"""


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def test_alias_bombs_are_refused_at_once(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    paths = []
    for i, key in enumerate(BOMB_KEYS):
        paths.append(tmp_path / f"bomb{i}.yaml")
        paths[-1].write_text(_alias_bomb(key))
        assert len(paths[-1].read_bytes()) < 600
    proc = subprocess.run([sys.executable, "-c", _CHILD, ",".join(BOMB_KEYS), *map(str, paths)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout)
    for path, message in zip(paths, found["yaml"]):
        assert message.startswith(f"{path}: its YAML aliases expand it by more than 10,000 values"), message
        assert len(message) < 300 and "\n" not in message
    for key, message in zip(BOMB_KEYS, found["dict"]):
        lines = message.splitlines()
        assert lines[0] == "invalid config (dict):" and lines[1].startswith(f"  {key}"), message[:500]
        assert len(message) < 3000 and max(map(len, lines)) < 400, message[:500]


def test_aliases_within_the_bound_still_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("first_stage:\n  bm25: {top_k: &depth 7, analyzer: {stopwords: &words [a, an, the]}}\n"
                    "  dense: {top_k: *depth}\n  fusion: {top_k: *depth}\n"
                    "output: {top_k: 3}\n")
    config = load_config(path)
    assert (config.first_stage.bm25.top_k, config.first_stage.dense.top_k) == (7, 7)
    assert config.first_stage.bm25.analyzer.stopwords == ["a", "an", "the"]
    # Long plain lists are not alias expansion: the bound is on what aliases add.
    words = [f"w{i}" for i in range(12_000)]
    path.write_text(f"first_stage: {{bm25: {{analyzer: {{stopwords: [{', '.join(words)}]}}}}}}\n")
    assert load_config(path).first_stage.bm25.analyzer.stopwords == words


def test_a_self_referencing_alias_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("first_stage: {bm25: {analyzer: {stopwords: &loop [a, *loop]}}}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: the YAML value at line 1, column 44 contains an alias of "
                                          r"itself; a config cannot contain itself$"):
        load_config(path)


def test_values_nested_thousands_deep_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: {top_k: " + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: values nested too deeply \(thousands of levels\)"):
        load_config(path)


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3000),
                        lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=300), inner,
                                                                                     max_size=8),
                        max_leaves=300)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([*BOMB_KEYS, "first_stage.fusion.weights", "first_stage.dense.faiss", "rerank", "index"]),
       _JSONISH)
def test_error_messages_are_bounded_whatever_the_value(key, value):
    """Every line of a config error stays short and the error lists a bounded number of lines."""
    raw: dict = {}
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    try:
        load_config(raw)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        assert len(lines) <= 22 and max(map(len, lines)) < 400, lines[:3]
