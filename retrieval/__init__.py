"""First-stage retrieval, fusion, the `SearchPipeline`, its config, and evaluation.

Names are imported on first use (PEP 562): importing a light module of this package (its config, for one)
never loads torch, faiss or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from index.lazy import lazy_exports

_HOMES = {
    "ConfigError": "retrieval.config",
    "PipelineConfig": "retrieval.config",
    "load_config": "retrieval.config",
    "SearchPipeline": "retrieval.pipeline",
    "SearchResult": "retrieval.pipeline",
    "StageScore": "retrieval.pipeline",
}
__all__ = ["ConfigError", "PipelineConfig", "SearchPipeline", "SearchResult", "StageScore", "load_config"]

if TYPE_CHECKING:
    from retrieval.config import ConfigError, PipelineConfig, load_config
    from retrieval.pipeline import SearchPipeline, SearchResult, StageScore

__getattr__ = lazy_exports(__name__, _HOMES)
