"""Fixtures shared by the notebook tests (each executes a notebook with nbclient)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

KERNEL = "twostage-notebook-test"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec running this interpreter (the venv's), found first through JUPYTER_PATH: nothing installed."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "twostage test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def outputs_text(cell, html: bool = True) -> str:
    """Everything a cell printed or displayed as text (`html=False`: plain text only, no HTML tables)."""
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        for mime, value in out.get("data", {}).items():
            if mime == "text/plain" or (html and mime.startswith("text/")):
                parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def execute(notebook: Path, kernel: str) -> list:
    """Runs the notebook in its own folder and returns its code cells, each having run without an error."""
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(notebook.parent)}}
                   ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    return code
