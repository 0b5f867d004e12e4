"""A feature whose optional dependency is missing says, in one line, which extra to install."""

from __future__ import annotations

import sys

import pytest

from index.extras import MissingExtraError, require
from retrieval import cli


def _block(monkeypatch, *modules: str) -> None:
    # None in sys.modules makes `import name` raise ImportError, as if the package were not installed.
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_feature_and_the_extra(monkeypatch):
    _block(monkeypatch, "onnxruntime")
    with pytest.raises(MissingExtraError) as info:
        require("onnxruntime", "onnx", "rerank.backend: onnx")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("rerank.backend: onnx needs onnxruntime, which is not installed")
    assert "pip install 'twostage[onnx]'" in message
    assert require("json", "dev", "anything").dumps([]) == "[]"


def test_onnx_backend_without_onnxruntime(monkeypatch, tiny_cross_encoder):
    from rerank.cross_encoder import CrossEncoderReranker

    _block(monkeypatch, "onnxruntime")
    with pytest.raises(MissingExtraError, match=r"twostage\[onnx\]"):
        CrossEncoderReranker(str(tiny_cross_encoder), backend="onnx")


def test_training_without_datasets(monkeypatch, tmp_path):
    from rerank.training import Example, train_cross_encoder

    _block(monkeypatch, "datasets")
    with pytest.raises(MissingExtraError, match=r"training a reranker needs datasets.*twostage\[train\]"):
        train_cross_encoder([Example("q", "p", ["n"])], "unused-base", tmp_path / "out")


def test_the_cli_prints_it_as_one_error_line(monkeypatch, capsys):
    _block(monkeypatch, "datasets")
    args = cli.parser("test").parse_args([])
    with pytest.raises(SystemExit) as code:
        cli.run(lambda _: require("datasets", "train", "training a reranker") and 0, args)
    assert code.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: training a reranker needs datasets") and "\n" not in err
