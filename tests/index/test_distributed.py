"""Building on a local Ray cluster: the same index as a single-process build, the sharded layout, and a worker that
dies mid-build (retried, or the build fails and the previous index stays)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index.builder import build_index
from index.cluster import ClusterError
from index.directory import IndexDirectory
from index.distributed import build_on_ray
from index.sharded import read_layout, shard_of
from retrieval.config import load_config
from tests.conftest import ROOT, SAMPLE_CORPUS, SCIFACT, pipeline_config
from tests.reliability import bm25_only


def _real_corpus(tmp_path: Path, n: int = 160) -> Path:
    """The first `n` SciFact abstracts (real text), with a metadata field to filter on."""
    out = tmp_path / "scifact-head.jsonl"
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i == n:
                break
            doc = json.loads(line)
            doc["parity"] = "even" if i % 2 == 0 else "odd"
            dst.write(json.dumps(doc) + "\n")
    return out


def _config(tmp_path: Path, model: Path, **first_stage):
    return load_config(pipeline_config(tmp_path / "unused", model, **first_stage)).build_config()


def _assert_same_index(a: Path, b: Path) -> None:
    x, y = IndexDirectory.load(a), IndexDirectory.load(b)
    sx, sy = x.parts["bm25"], y.parts["bm25"]
    assert sx.vocab == sy.vocab
    for name in ("indptr", "indices", "tf", "doc_len"):
        ax, ay = getattr(sx, name), getattr(sy, name)
        assert ax.dtype == ay.dtype and np.array_equal(ax, ay), name
    ex, ey = np.asarray(x.parts["dense"].embeddings), np.asarray(y.parts["dense"].embeddings)
    assert np.array_equal(ex, ey)  # the same blocks encoded (index.components.ENCODE_BLOCK): the same bits
    assert x.store.passage_ids == y.store.passage_ids and x.store.row_doc_ids == y.store.row_doc_ids
    assert x.store.get(x.store.row_doc_ids) == y.store.get(y.store.row_doc_ids)
    assert x.fields.num_rows == y.fields.num_rows


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 16 passages in single-process builds too (Ray builds here pass block_passages=16)."""
    monkeypatch.setattr("index.components.ENCODE_BLOCK", 16)


def test_a_ray_build_is_the_single_process_build(tmp_path, tiny_bi_encoder, ray_cluster, small_blocks):
    corpus = _real_corpus(tmp_path)
    config = _config(tmp_path, tiny_bi_encoder)
    build_index(corpus, tmp_path / "single", config, show_progress=False)
    report = build_on_ray(corpus, tmp_path / "ray", config, block_passages=16, show_progress=False)
    assert report.details["tasks"] == 10 and report.details["workers"] == 2
    _assert_same_index(tmp_path / "single", tmp_path / "ray")


def test_a_sharded_build_splits_by_id_and_keeps_the_corpus_statistics(tmp_path, tiny_bi_encoder, ray_cluster,
                                                                       small_blocks):
    corpus = _real_corpus(tmp_path)
    config = _config(tmp_path, tiny_bi_encoder)
    build_index(corpus, tmp_path / "single", config, show_progress=False)
    report = build_on_ray(corpus, tmp_path / "sharded", config, shards=3, block_passages=16, show_progress=False)
    layout = read_layout(tmp_path / "sharded")
    whole = IndexDirectory.load(tmp_path / "single")
    assert report.documents == len(whole.store) and report.passages == whole.num_rows
    positions = []
    for i in range(3):
        shard = IndexDirectory.load(layout.shard_path(i))
        assert all(shard_of(d, 3) == i for d in shard.store.row_doc_ids)
        rows = layout.rows[i]
        assert [whole.store.row_doc_ids[p] for p in rows.tolist()] == shard.store.row_doc_ids
        positions.extend(rows.tolist())
    assert sorted(positions) == list(range(whole.num_rows))
    stats = whole.parts["bm25"]
    assert layout.corpus.vocab == stats.vocab
    assert np.array_equal(layout.corpus.doc_freq, stats.doc_freq)
    assert layout.corpus.total_length == int(stats.doc_len.sum()) and layout.corpus.num_docs == stats.num_docs


def test_a_worker_killed_during_a_build_is_retried(tmp_path, tiny_bi_encoder, ray_cluster, monkeypatch,
                                                   small_blocks):
    corpus = _real_corpus(tmp_path, 96)
    config = _config(tmp_path, tiny_bi_encoder)
    build_index(corpus, tmp_path / "single", config, show_progress=False)
    marker = tmp_path / "killed"
    monkeypatch.setenv("TWOSTAGE_TEST_KILL_BLOCK", f"2:{marker}")
    build_on_ray(corpus, tmp_path / "ray", config, block_passages=16, retries=1, show_progress=False)
    assert marker.exists()  # a worker did die, on block 2
    _assert_same_index(tmp_path / "single", tmp_path / "ray")


def test_a_worker_killed_without_retries_fails_the_build_and_keeps_the_previous_index(
        tmp_path, tiny_bi_encoder, ray_cluster, monkeypatch):
    corpus = _real_corpus(tmp_path, 96)
    config = _config(tmp_path, tiny_bi_encoder)
    target = tmp_path / "idx"
    build_on_ray(SAMPLE_CORPUS, target, config, shards=2, show_progress=False)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    monkeypatch.setenv("TWOSTAGE_TEST_KILL_BLOCK", f"1:{tmp_path / 'killed'}")
    with pytest.raises(ClusterError) as err:
        build_on_ray(corpus, target, config, shards=2, block_passages=16, retries=0, show_progress=False)
    message = str(err.value)
    assert "\n" not in message and "worker died while encoding block 1" in message and "not changed" in message
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx.")]  # no temp folder left behind


def test_a_ray_build_refuses_what_it_cannot_build(tmp_path, tiny_bi_encoder, ray_cluster):
    config = _config(tmp_path, tiny_bi_encoder)
    with pytest.raises(ValueError, match="--shards must be at least 1"):
        build_on_ray(SAMPLE_CORPUS, tmp_path / "x", config, shards=0, show_progress=False)
    splade = type(config).model_validate({**config.model_dump(mode="json"), "splade": {"model": "naver/splade-v3"}})
    with pytest.raises(ValueError, match="first_stage.splade.enabled: false"):
        build_on_ray(SAMPLE_CORPUS, tmp_path / "x", splade, show_progress=False)


def test_without_ray_the_cli_names_the_extra(tmp_path, tiny_bi_encoder, ray_cluster, monkeypatch, capsys):
    from retrieval import cli

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps(pipeline_config(tmp_path / "idx", tiny_bi_encoder)))
    build_on_ray(SAMPLE_CORPUS, tmp_path / "sharded", bm25_only(), shards=2, show_progress=False)  # no model: fast
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)  # `import ray` fails as it does where the extra is not installed
        for argv in (["build", "--config", str(cfg), "--corpus", str(SAMPLE_CORPUS), "--output", str(tmp_path / "i"),
                      "--ray", "local"],
                     ["build", "--config", str(cfg), "--corpus", str(SAMPLE_CORPUS), "--output", str(tmp_path / "i"),
                      "--shards", "2"],
                     ["search", "--index", str(tmp_path / "sharded"), "--ray", "local", "tides"]):
            with pytest.raises(SystemExit) as exit_:
                cli.main(argv)
            err = capsys.readouterr().err
            assert exit_.value.code == 2, err
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert len(lines) == 1 and "pip install 'twostage[ray]'" in lines[0], err
            assert "Traceback" not in err and not (tmp_path / "i").exists()
    # Without --ray a sharded index is searched in this process, which needs no Ray at all: a fresh interpreter
    # where `import ray` fails.
    fake = tmp_path / "no-ray"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "search.py"), "--index", str(tmp_path / "sharded"),
                          "--json", "tides"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["results"][0]["doc_id"] == "tides"
