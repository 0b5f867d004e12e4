"""The second stage: cross-encoder reranking and fine-tuning (the bundled reranker's files live with the model
runtime, in `index/runtime/bundled/`).

Names are imported on first use (PEP 562): importing a light module of this package (its config, for one)
never loads torch, faiss or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from index.lazy import lazy_exports

_HOMES = {
    "RerankConfig": "rerank.config",
    "CrossEncoderReranker": "rerank.cross_encoder",
}
__all__ = ["CrossEncoderReranker", "RerankConfig"]

if TYPE_CHECKING:
    from rerank.config import RerankConfig
    from rerank.cross_encoder import CrossEncoderReranker

__getattr__ = lazy_exports(__name__, _HOMES)
