"""scripts/gpu_check.py: without CUDA, one error line and a nonzero exit, before anything is loaded; with CUDA mocked
(torch.cuda says one GPU; the models the check asks for on `cuda` are built on the CPU), the measurement runs end
to end on a tiny random cross-encoder and reports every precision x batch-size row with its Spearman check, and a
run that ranks differently fails it.

What this cannot test is fp16 arithmetic itself: on the CPU the reranker keeps fp32 weights for fp16 (it halves
only on an accelerator), and halving them by hand is no test either: a random model's scores differ by about 1e-5
from pair to pair, under fp16's rounding, so they rank at random. The real model on a real GPU is the script's job."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

from retrieval.benchmark import gpu
from retrieval.benchmark.measure import machine
from tests.beir_data import write_beir
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.py"
COLUMNS = ["device", "precision", "batch", "pairs/s", "x CPU fp32", "peak MiB", "Spearman", "max abs diff", "check"]
GPU_ROWS = [(p, b) for p in ("fp16", "fp32") for b in (32, 64, 128, 256)]


def test_without_cuda_it_says_so_in_one_line_and_exits_nonzero(tmp_path):
    # CUDA_VISIBLE_DEVICES hides any GPU, so this holds on a GPU machine too; the dataset does not exist, which
    # shows the GPU is looked for before anything is read.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, str(SCRIPT), "--dataset", str(tmp_path / "no-such-beir")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: no CUDA GPU visible (torch "), lines[0]
    assert lines[0].endswith("; run this on a machine with a GPU"), lines[0]


@pytest.fixture()
def tiny(tmp_path, tiny_cross_encoder):
    return write_beir(tmp_path / "beir"), tiny_cross_encoder


class Negated:
    """A reranker whose scores rank every pair backwards: what a broken GPU path would look like."""

    def __init__(self, inner):
        self.inner, self.device, self.precision, self.config = inner, inner.device, inner.precision, inner.config

    def predict(self, pairs, batch_size=None):
        return -self.inner.predict(pairs, batch_size=batch_size)


@pytest.fixture()
def mocked_cuda(monkeypatch):
    """torch.cuda reports one GPU; `gpu.load_reranker` builds what is asked for on cuda on the CPU instead. Returns
    the (device, precision) pairs asked for, and a set of precisions whose reranker is to rank backwards."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Mock GPU")
    real, asked, broken = gpu.load_reranker, [], set()

    def on_cpu(model, device, precision, max_length, activation="auto"):
        asked.append((device, precision))
        reranker = real(model, "cpu", precision, max_length, activation)
        return Negated(reranker) if precision in broken else reranker

    monkeypatch.setattr(gpu, "load_reranker", on_cpu)
    return asked, broken


def run_script(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    return exc.value.code, capsys.readouterr().out


def table_rows(printed: str) -> tuple[list[str], list[dict[str, str]]]:
    lines = [line for line in printed.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return header, [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def small(data, model) -> list[str]:
    return ["--dataset", str(data), "--model", str(model), "--pairs", "40", "--max-length", "64", "--repeats", "1",
            "--quiet"]


def test_with_cuda_mocked_every_row_is_measured_and_checked(tiny, mocked_cuda, monkeypatch, capsys):
    data, model = tiny
    asked, _ = mocked_cuda
    code, printed = run_script(monkeypatch, capsys, *small(data, model))
    assert code == 0, printed
    # one CPU fp32 reference, then one model per GPU precision (reused across batch sizes)
    assert asked == [("cpu", "fp32"), ("cuda", "fp16"), ("cuda", "fp32")]
    head = printed.splitlines()[0]
    assert head.startswith("# twostage GPU check: Mock GPU (cuda), torch ")
    assert f"CPU {machine()['cpu']}" in head
    assert "pairs: 40 from" in printed and "40 pairs (median" in printed
    header, rows = table_rows(printed)
    assert header == COLUMNS
    assert [(r["device"], r["precision"], r["batch"], r["check"]) for r in rows] == (
        [("cpu", "fp32", "32", "reference")] + [("cpu", p, str(b), "ok") for p, b in GPU_ROWS])
    for r in rows[1:]:
        assert float(r["pairs/s"].replace(",", "")) > 0
        assert gpu.MIN_SPEARMAN <= float(r["Spearman"]) <= 1
    # the same fp32 computation as the reference (see the module's docstring), so the same scores
    assert all(float(r["max abs diff"]) == 0 for r in rows[1:])
    assert "check passed: every GPU run ranks the pairs as CPU fp32 does" in printed


def test_json_report_and_a_run_that_ranks_differently_fails(tiny, mocked_cuda, monkeypatch, capsys):
    data, model = tiny
    _, broken = mocked_cuda
    broken.add("fp16")
    code, printed = run_script(monkeypatch, capsys, *small(data, model), "--batch-sizes", "8,16", "--json")
    assert code == 1
    report = json.loads(printed)
    assert report["gpu"] == "Mock GPU" and report["machine"]["cpu"] == machine()["cpu"]
    assert report["pairs"] == 40 and report["passed"] is False
    runs = report["runs"]
    assert set(runs) == {"fp16/8", "fp16/16", "fp32/8", "fp32/16"}
    for key, run in runs.items():
        assert run["pairs_per_s"] > 0 and len(run["seconds_per_call"]) == 1
        if key.startswith("fp16"):
            assert run["spearman_vs_cpu_fp32"] == pytest.approx(-1) and run["passed"] is False
        else:
            assert run["spearman_vs_cpu_fp32"] == pytest.approx(1) and run["passed"] is True
