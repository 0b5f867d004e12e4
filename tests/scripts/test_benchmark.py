"""scripts/benchmark.py end to end on a tiny BEIR folder with tiny random models (correctness of the report only:
no timed assertions)."""

from __future__ import annotations

import json
import runpy
import shutil
import sys

import pytest
import yaml

from tests.beir_data import QUERIES, write_beir
from tests.conftest import ROOT, pipeline_config

SCRIPT = ROOT / "scripts" / "benchmark.py"
SMALL = ["--repeats", "1", "--e2e-queries", "3", "--e2e-batches", "1", "--batch-size", "4", "--dense-passages", "8",
         "--dense-queries", "6", "--rerank-chunks", "2", "--curve-queries", "3", "--curve-depths", "2,5",
         "--curve-split", "test", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_bi_encoder, tiny_cross_encoder):
    """A tiny BEIR folder, its index, and two configs: first stage only, and with an onnx reranker."""
    from index.builder import build_index
    from retrieval.config import load_config

    root = tmp_path_factory.mktemp("benchmark")
    data = write_beir(root / "tiny")
    plain = pipeline_config(root / "index", tiny_bi_encoder)
    build_index(data, root / "index", load_config(plain).build_config(), show_progress=False)
    first = root / "first.yaml"
    first.write_text(yaml.safe_dump(plain))
    reranker = root / "tiny-ce"
    shutil.copytree(tiny_cross_encoder, reranker)
    reranked = root / "rerank.yaml"
    reranked.write_text(yaml.safe_dump({**plain, "rerank": {"model": str(reranker), "top_n": 5, "backend": "onnx"}}))
    return root, data, first, reranked


def run_script(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    return exc.value.code, capsys.readouterr().out


def test_every_section_reports_on_the_same_inputs(tiny, tmp_path, monkeypatch, capsys):
    root, data, _, config = tiny
    out = tmp_path / "bench.json"
    code, printed = run_script(monkeypatch, capsys, "--dataset", str(data), "--config", str(config), "--index",
                               str(root / "index"), "--json", str(out), *SMALL,
                               "--rerank-models", str(root / "tiny-ce"))
    assert code == 0
    report = json.loads(out.read_text())
    assert {"cpu", "usable_cpus", "torch_threads", "load_average_at_end"} <= set(report["machine"])
    assert report["e2e"]["stages"] == ["bm25", "dense", "hybrid", "rerank"]
    assert {"query()", "bm25", "dense", "hybrid"} == set(report["e2e"]["single"])
    assert report["e2e"]["memory"]["after_queries"]["peak_rss_mib"] > 0
    bm25 = report["bm25"]
    assert bm25["identical_top_k_vs_rank_bm25"] + bm25["tie_order_only"] == bm25["queries"] == len(QUERIES)
    assert bm25["methods"]["rank_bm25 get_top_n"]["x_rank_bm25"] == 1
    assert set(report["bm25_index"]["methods"]) >= {"rank_bm25.BM25Okapi(...)", "bm25s.BM25().index(...)"}
    faiss = report["dense"]["faiss"]
    assert faiss["flat"]["recall_at_k_vs_flat"] == 1 and set(faiss) >= {"hnsw", "ivf", "sq8"}
    variants = report["rerank"]["variants"]
    assert len(variants) >= 3  # plain, as configured (onnx int8), torch bf16 (when the CPU has it)
    plain = variants["plain CrossEncoder.predict (fp32, batch 32)"]
    assert plain["ndcg_diff_vs_plain"] == 0 and plain["spearman_vs_plain"] == pytest.approx(1)
    assert 0 < report["rerank"]["pairs"] <= len(QUERIES) * 20
    other = next(v for k, v in variants.items() if k.startswith(str(root / "tiny-ce")))  # --rerank-models
    assert other["spearman_vs_plain"] > 0.9 and other["pairs_per_s"] > 0
    assert set(report["curve"]["depths"]) == {"2", "5"} and report["curve"]["configured_top_n"] == 5
    assert "BM25 queries" in printed and "x rank_bm25" in printed and "Rerank depth curve" in printed


def test_config_without_rerank_skips_it_and_says_so(tiny, monkeypatch, capsys):
    root, data, config, _ = tiny
    code, printed = run_script(monkeypatch, capsys, "--dataset", str(data), "--config", str(config), "--index",
                               str(root / "index"), "--sections", "rerank,curve", *SMALL)
    assert code == 0
    assert "Rerank: skipped" in printed and "has no rerank: block" in printed


def test_the_passages_section_sweeps_max_passages(tiny, tmp_path, monkeypatch, capsys):
    root, data, _, config = tiny
    out = tmp_path / "bench.json"
    code, printed = run_script(monkeypatch, capsys, "--dataset", str(data), "--config", str(config), "--index",
                               str(root / "index"), "--json", str(out), "--sections", "passages",
                               "--passage-words", "8", "--passage-depths", "1,3", "--cache-dir", str(tmp_path / "c"),
                               *SMALL)
    assert code == 0
    report = json.loads(out.read_text())["passages"]
    assert report["passage_words"] == 8 and report["queries"] == len(QUERIES)
    one, three = report["depths"]["1"], report["depths"]["3"]
    assert one["bm25_ndcg@10"] == three["bm25_ndcg@10"]  # the same first stage; only the reranker reads more
    assert three["pairs"] > one["pairs"] > 0
    assert "rerank.max_passages" in printed
