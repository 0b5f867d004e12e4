"""The second stage: cross-encoder reranking, fine-tuning, and the project's bundled reranker."""

from __future__ import annotations

from rerank.config import RerankConfig
from rerank.cross_encoder import CrossEncoderReranker

__all__ = ["CrossEncoderReranker", "RerankConfig"]
