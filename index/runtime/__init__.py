"""Model runtimes shared by every stage (the bi-encoder, the sparse encoder, the cross-encoder): which model
(`models`: local folder, `bundled:` name or hub id; the bundled rerankers in `bundled/`), where and how precisely it
runs (`device`), and the exported backends (`onnx`, `openvino`) with the cache their exports live in
(`export_cache`). The encoder classes of `index.dense` and `rerank.cross_encoder` are thin wrappers over these.

Names are imported on first use (PEP 562): `index.runtime.models` imports no torch, and nothing here imports the
`retrieval` or `rerank` packages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from index.lazy import lazy_exports

_HOMES = {
    "BUNDLED_BI_ENCODER": "index.runtime.models",
    "BUNDLED_PREFIX": "index.runtime.models",
    "ModelNotAvailableError": "index.runtime.models",
    "bundled_models": "index.runtime.models",
    "load_model": "index.runtime.models",
    "resolve_model": "index.runtime.models",
    "CHARS_PER_TOKEN_CAP": "index.runtime.device",
    "apply_precision": "index.runtime.device",
    "autocast": "index.runtime.device",
    "char_cap": "index.runtime.device",
    "pick_device": "index.runtime.device",
    "pick_dtype": "index.runtime.device",
    "placement": "index.runtime.device",
}
__all__ = [
    "BUNDLED_BI_ENCODER", "BUNDLED_PREFIX", "CHARS_PER_TOKEN_CAP", "ModelNotAvailableError", "apply_precision",
    "autocast", "bundled_models", "char_cap", "load_model", "pick_device", "pick_dtype", "placement", "resolve_model",
]

if TYPE_CHECKING:
    from index.runtime.device import (
        CHARS_PER_TOKEN_CAP,
        apply_precision,
        autocast,
        char_cap,
        pick_device,
        pick_dtype,
        placement,
    )
    from index.runtime.models import (
        BUNDLED_BI_ENCODER,
        BUNDLED_PREFIX,
        ModelNotAvailableError,
        bundled_models,
        load_model,
        resolve_model,
    )

__getattr__ = lazy_exports(__name__, _HOMES)
