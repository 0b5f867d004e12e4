"""The pipeline config: one YAML file, validated by pydantic; unknown keys are errors that list the valid keys.

Example:
    >>> from retrieval.config import load_config
    >>> cfg = load_config("configs/hybrid.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from index.config import BM25Config, BuildConfig, ChunkingConfig, CorpusConfig, DenseConfig, StrictModel
from rerank.config import RerankConfig


class ConfigError(ValueError):
    """The config is invalid; the message names each bad key and how to fix it."""


class IndexSection(StrictModel):
    path: Path | None = None
    verify: bool = True
    chunking: ChunkingConfig | None = None
    corpus: CorpusConfig = CorpusConfig()


class FusionConfig(StrictModel):
    method: Literal["rrf", "weighted"] = "rrf"
    k: int = Field(60, ge=1, description="RRF constant")
    normalization: Literal["minmax", "zscore"] = "minmax"
    weights: dict[Literal["bm25", "dense"], float] = {"bm25": 0.5, "dense": 0.5}
    top_k: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _weights_make_sense(self) -> FusionConfig:
        if not all(math.isfinite(w) for w in self.weights.values()):
            raise ValueError(f"fusion weights must be finite numbers, got {self.weights}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"fusion weights must be >= 0, got {self.weights}")
        if sum(self.weights.values()) <= 0:
            raise ValueError(f"fusion weights must not all be zero, got {self.weights}")
        return self


class FirstStageConfig(StrictModel):
    bm25: BM25Config = BM25Config()
    dense: DenseConfig = DenseConfig()
    fusion: FusionConfig = FusionConfig()

    @model_validator(mode="after")
    def _one_enabled(self) -> FirstStageConfig:
        if not self.bm25.enabled and not self.dense.enabled:
            raise ValueError("first_stage: bm25 and dense are both disabled; enable at least one")
        return self


class OutputConfig(StrictModel):
    top_k: int = Field(10, ge=1)
    max_query_chars: int = Field(10_000, ge=1, description="longer queries are truncated (and logged)")


class PipelineConfig(StrictModel):
    index: IndexSection = IndexSection()
    first_stage: FirstStageConfig = FirstStageConfig()
    rerank: RerankConfig | None = None
    output: OutputConfig = OutputConfig()

    def build_config(self) -> BuildConfig:
        return BuildConfig(corpus=self.index.corpus, chunking=self.index.chunking,
                           bm25=self.first_stage.bm25, dense=self.first_stage.dense)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = PipelineConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            return None
        field = model.model_fields.get(part)
        if field is None:
            return model
        model = next((a for a in _candidates(field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)),
                     None)
    return model


def _candidates(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    return list(args) if args else [annotation]


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.endswith("]")))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            valid = sorted(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  {dotted}: unknown key{hint}; valid keys here: {', '.join(valid)}")
        else:
            lines.append(f"  {dotted}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load_config(source: str | Path | dict[str, Any] | PipelineConfig, base_dir: Path | None = None) -> PipelineConfig:
    """Validate a YAML path or a dict; relative paths are resolved against the config file's folder."""
    if isinstance(source, PipelineConfig):
        return source
    if isinstance(source, dict):
        raw, name, base = source, "(dict)", base_dir or Path.cwd()
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: not valid YAML ({where}{reason})") from None
        name, base = str(path), path.resolve().parent
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: the config must be a mapping of sections (index, first_stage, rerank, output)")
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, name)) from None
    if config.index.path is not None and not config.index.path.is_absolute():
        config.index.path = (base / config.index.path).resolve()
    for stage in (config.first_stage.dense, config.rerank):
        if stage is not None and stage.model.startswith((".", "~")):
            stage.model = str((base / stage.model).expanduser().resolve())
    return config
