from __future__ import annotations

import shutil

import pytest


@pytest.fixture()
def model_dir(tiny_cross_encoder, tmp_path):
    """A private copy of the tiny cross-encoder (the export cache folders beside it are per test)."""
    target = tmp_path / "tiny-ce"
    shutil.copytree(tiny_cross_encoder, target)
    return target
