from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from tests.conftest import ROOT, SAMPLE_CORPUS, pipeline_config


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_build_then_search_json(tmp_path, tiny_bi_encoder):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(tmp_path / "unused", tiny_bi_encoder)))
    out = run("scripts/build_index.py", "--config", str(config), "--corpus", str(SAMPLE_CORPUS),
              "--output", str(tmp_path / "idx"), "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["documents"] == 24 and summary["passages"] == 24 and summary["bytes_on_disk"] > 0

    out = run("scripts/search.py", "--index", str(tmp_path / "idx"), "--config", str(config), "--top-k", "3",
              "--json", "--quiet", "recycling aluminium energy", "sleep and memory")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [x["query"] for x in lines] == ["recycling aluminium energy", "sleep and memory"]
    first = lines[0]["results"][0]
    assert first["doc_id"] == "recycling-aluminium"
    assert {"doc_id", "score", "rank", "title", "text", "metadata", "stages"} <= set(first)
    assert first["stages"]["bm25"]["rank"] == 1

    # without --config the index's own build settings are used; the table is human-readable
    out = run("scripts/search.py", "--index", str(tmp_path / "idx"), "--quiet", "coffee")
    assert out.returncode == 0, out.stderr
    assert "query: coffee" in out.stdout and "Brewing coffee" in out.stdout
