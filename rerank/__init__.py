"""The second stage: cross-encoder reranking, fine-tuning, and the project's bundled reranker.

Names are imported on first use (PEP 562): importing a light module of this package (its config, for one)
never loads torch, faiss or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "RerankConfig": "rerank.config",
    "CrossEncoderReranker": "rerank.cross_encoder",
}
__all__ = ["CrossEncoderReranker", "RerankConfig"]

if TYPE_CHECKING:
    from rerank.config import RerankConfig
    from rerank.cross_encoder import CrossEncoderReranker


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
