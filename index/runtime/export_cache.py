"""Where exported reranker graphs (ONNX, OpenVINO IR) live, how a stale one is recognised, and how they are fed.

An export goes to `<model dir>/<subdir>/` when the model is a writable local directory, otherwise to
`$TWOSTAGE_CACHE_DIR` (default `~/.cache/twostage`) `/<subdir>/<fingerprint>/`. An `export.json` beside the files
records, per file, a fingerprint of the weights, the config and the export recipe: a file whose fingerprint does
not match (the model was retrained in place, or the recipe changed) is exported again, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

MANIFEST = "export.json"


def cache_root() -> Path:
    """Where exports go when the model directory is not writable (`$TWOSTAGE_CACHE_DIR` or ~/.cache/twostage)."""
    env = os.environ.get("TWOSTAGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "twostage"


def fingerprint(model: torch.nn.Module, recipe: Mapping[str, Any]) -> str:
    """sha256 over the recipe, the config and every parameter/buffer (name, shape, fp32 values)."""
    h = hashlib.sha256()
    h.update(json.dumps(dict(recipe), sort_keys=False).encode())
    h.update(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{t.shape}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def candidate_dirs(source: str, digest: str, subdir: str) -> list[Path]:
    """Next to the model first (if it is a local directory), then the user cache."""
    dirs = []
    local = Path(source)
    # Not inside an installed package (a pip-installed model, our wheel): pip would leave the export behind.
    if local.is_dir() and not {"site-packages", "dist-packages"}.intersection(local.resolve().parts):
        dirs.append(local / subdir)
    dirs.append(cache_root() / subdir / digest[:24])
    return dirs


def is_current(directory: Path, filename: str, digest: str, companions: tuple[str, ...] = ()) -> bool:
    """`filename` (and its companion files) exist and were written for exactly this fingerprint."""
    try:
        info = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = [filename, *companions]
    return all((directory / f).is_file() for f in files) and info.get("files", {}).get(filename) == digest


def writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            return True
    except OSError:
        return False


def record(directory: Path, filename: str, digest: str, source: str, recipe: int) -> None:
    """Note in the manifest (atomically) that `filename` is current for `digest`; done only after the file is."""
    manifest = directory / MANIFEST
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    info.setdefault("files", {})[filename] = digest
    info.update(source=source, recipe=recipe)
    tmp = manifest.with_name(f".{MANIFEST}.{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    os.replace(tmp, manifest)


def int64_feed(features: Mapping[str, Any], names: list[str]) -> dict[str, np.ndarray]:
    """The tokenizer's features (torch or numpy) as the int64 arrays an exported graph takes, by input name."""
    feed = {}
    for name in names:
        value = features[name]
        array = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        feed[name] = array.astype(np.int64, copy=False)
    return feed


def ensure(source: str, digest: str, subdir: str, filename: str, write: Callable[[Path], None], recipe: int,
           companions: tuple[str, ...] = (), what: str = "an export") -> Path:
    """`<dir>/filename`, current for `digest`: reused from the first candidate folder that has it, else written
    by `write(folder)` into the first writable one and only then recorded in its manifest."""
    candidates = candidate_dirs(source, digest, subdir)
    for directory in candidates:
        if is_current(directory, filename, digest, companions):
            logger.debug("reusing %s", directory / filename)
            return directory / filename
    directory = next((d for d in candidates if writable(d)), None)
    if directory is None:
        raise PermissionError(f"cannot write {what} to any of {[str(d) for d in candidates]}; "
                              "set TWOSTAGE_CACHE_DIR to a writable folder")
    write(directory)
    record(directory, filename, digest, source, recipe)
    return directory / filename


class SingleOutput(torch.nn.Module):
    """Inputs in (by keyword, or positionally in input_ids/attention_mask/token_type_ids order, which is what
    `torch.onnx.export` traces), one named model output out (`logits`, `last_hidden_state`), whatever the model's
    output class."""

    def __init__(self, model: torch.nn.Module, output: str) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return getattr(self.model(**kwargs), self.output)
