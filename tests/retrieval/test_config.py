from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.config import ConfigError, load_config
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.index.path is not None and cfg.index.path.is_absolute()


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "c.yaml"
    f.write_text("index: {path: ../idx}\nfirst_stage: {dense: {model: ./my-model}}\n")
    cfg = load_config(f)
    assert cfg.index.path == (tmp_path / "idx").resolve()
    assert Path(cfg.first_stage.dense.model) == (tmp_path / "sub" / "my-model").resolve()


def test_unknown_key_lists_valid_keys_and_suggests(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config({"first_stage": {"bm25": {"k3": 1.2}}})
    msg = str(err.value)
    assert "first_stage.bm25.k3: unknown key (did you mean 'k1'?)" in msg
    assert "valid keys here:" in msg and "variant" in msg


def test_unknown_top_level_section():
    with pytest.raises(ConfigError, match=r"rerankk: unknown key \(did you mean 'rerank'\?\)"):
        load_config({"rerankk": {}})


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"first_stage": {"bm25": {"k1": "high"}}}, "first_stage.bm25.k1"),
        ({"output": {"top_k": 0}}, "output.top_k"),
        ({"first_stage": {"bm25": {"top_k": -5}}}, "first_stage.bm25.top_k"),
        ({"first_stage": {"fusion": {"method": "borda"}}}, "first_stage.fusion.method"),
        ({"first_stage": {"fusion": {"weights": {"bm25": -1, "dense": 1}}}}, "first_stage.fusion"),
        ({"first_stage": {"fusion": {"weights": {"bm25": 0, "dense": 0}}}}, "first_stage.fusion"),
        ({"first_stage": {"bm25": {"enabled": False}, "dense": {"enabled": False}}}, "first_stage"),
        ({"index": {"chunking": {"max_words": 50, "overlap": 50}}}, "index.chunking"),
        ({"rerank": {"top_n": 10}}, "rerank.model"),
    ],
)
def test_bad_values_name_the_key(raw, where):
    with pytest.raises(ConfigError, match=rf"\n  {where}"):
        load_config(raw)


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("index: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad)
