"""First-stage retrieval, fusion, the `SearchPipeline`, its config, and evaluation."""

from __future__ import annotations

from retrieval.config import ConfigError, PipelineConfig, load_config
from retrieval.pipeline import SearchPipeline, SearchResult, StageScore

__all__ = ["ConfigError", "PipelineConfig", "SearchPipeline", "SearchResult", "StageScore", "load_config"]
