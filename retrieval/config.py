"""The pipeline config: one YAML file, validated by pydantic; unknown keys are errors that list the valid keys.

Example:
    >>> from retrieval.config import load_config
    >>> cfg = load_config("configs/hybrid.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import math
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator

from index.config import (
    RETRIEVERS,
    BM25Config,
    BuildConfig,
    ChunkingConfig,
    CorpusConfig,
    DenseConfig,
    RetrieverConfig,
    SpladeConfig,
    StrictModel,
    enabled_retrievers,
    retriever_name,
    setting_differences,
)
from rerank.config import RerankConfig


class ConfigError(ValueError):
    """The config is invalid; the message names each bad key and how to fix it."""


# What aliases may add to a YAML config, in values: a real config is a few hundred values, and a "billion laughs"
# file of 500 bytes expands to 10**9 (every later step, pydantic and the error message included, would walk them).
MAX_ALIAS_EXPANSION = 10_000
# An error message quotes at most this much of a bad value, and lists at most this many bad keys.
_MAX_GOT_CHARS = 120
_MAX_MSG_CHARS = 240
_MAX_KEY_CHARS = 60
_MAX_ERRORS = 20


def _bounded_repr() -> reprlib.Repr:
    # reprlib stops after a few items per level and a few levels, so the work is bounded even for a value that
    # shares one list at every level (what YAML aliases build).
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlong = 3, 60, 60, 40
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = short.maxdeque = 4
    return short


_REPR = _bounded_repr()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a document whose aliases expand it by more than `MAX_ALIAS_EXPANSION`
    values, or that refers to itself, before anything is built from it."""

    def compose_document(self) -> yaml.Node | None:
        # The composed graph shares one node per anchor, so it stays as small as the file; sizes are counted
        # on it, each node once, never by expanding it.
        node = super().compose_document()
        if node is not None:
            distinct, expanded = _node_counts(node)
            if expanded - distinct > MAX_ALIAS_EXPANSION:
                raise ConfigError(f"its YAML aliases expand it by more than {MAX_ALIAS_EXPANSION:,} values "
                                  f"({expanded:,} from {distinct:,}); a config needs far fewer: write the values "
                                  "out, or alias fewer of them")
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _node_counts(root: yaml.Node) -> tuple[int, int]:
    """(distinct nodes, nodes once every alias is expanded): one post-order walk, each node sized once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
        elif key in open_nodes:  # reached again from inside itself: an alias of one of its own ancestors
            mark = node.start_mark
            raise ConfigError(f"the YAML value at line {mark.line + 1}, column {mark.column + 1} contains an alias "
                              "of itself; a config cannot contain itself")
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return len(sizes), sizes[id(root)]


class IndexSection(StrictModel):
    path: Path | None = None
    verify: bool = True
    # Before each query, one stat of the manifest: a commit by a writer is then seen by the next query.
    auto_refresh: bool = True
    # A sharded index (`twostage build --ray ... --shards N`) searched by one Ray actor per shard: "local", "auto"
    # or a cluster address; unset, its shards are searched in this process.
    ray: str | None = None
    chunking: ChunkingConfig | None = None
    corpus: CorpusConfig = CorpusConfig()


class FusionConfig(StrictModel):
    method: Literal["rrf", "weighted"] = "rrf"
    k: int = Field(60, ge=1, description="RRF constant")
    normalization: Literal["minmax", "zscore"] = "minmax"
    weights: dict[Annotated[str, AfterValidator(retriever_name)], float] = Field(
        default_factory=dict, description="per retriever; empty: equal weights (rrf: plain 1/(k+rank)); a "
        "retriever left out gets 0",
    )
    top_k: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _weights_make_sense(self) -> FusionConfig:
        if not self.weights:
            return self
        if not all(math.isfinite(w) for w in self.weights.values()):
            raise ValueError(f"fusion weights must be finite numbers, got {self.weights}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"fusion weights must be >= 0, got {self.weights}")
        if sum(self.weights.values()) <= 0:
            raise ValueError(f"fusion weights must not all be zero, got {self.weights}")
        return self


class FirstStageConfig(StrictModel):
    """The first-stage retrievers (each a `RetrieverConfig` field, as in `BuildConfig`) and how their lists fuse."""

    bm25: BM25Config = BM25Config()
    dense: DenseConfig = DenseConfig()
    splade: SpladeConfig | None = None
    fusion: FusionConfig = FusionConfig()

    def retrievers(self) -> dict[str, RetrieverConfig]:
        """The enabled retrievers, by name, in declaration order (the order their lists fuse in)."""
        return enabled_retrievers(self)

    @model_validator(mode="after")
    def _one_enabled(self) -> FirstStageConfig:
        if not self.retrievers():
            names = [n for n in RETRIEVERS if getattr(self, n, None) is not None]
            listed = " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + f" and {names[-1]}"
            raise ValueError(f"first_stage: {listed} are {'both' if len(names) == 2 else 'all'} disabled; "
                             "enable at least one")
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
        fs = self.first_stage
        return BuildConfig(corpus=self.index.corpus, chunking=self.index.chunking,
                           **{name: getattr(fs, name) for name in RETRIEVERS})

    def stored(self) -> dict[str, Any]:
        """The pipeline as an index stores it (`build_index(..., pipeline=...)`): every setting the config sets,
        query-time and reranker included (relative model paths already resolved), without `index.path` (the index
        is wherever it is opened). Keys it leaves out take the defaults of the version that loads it, as they would
        from the YAML file; the build-time settings are also stored whole, in the manifest's `config`."""
        out = self.model_dump(mode="json", exclude_unset=True)
        out.get("index", {}).pop("path", None)
        return out

    @classmethod
    def for_index(cls, built: BuildConfig) -> PipelineConfig:
        """A config that searches an index with the index's own build settings (no reranker)."""
        return cls(index=IndexSection(corpus=built.corpus, chunking=built.chunking),
                   first_stage=FirstStageConfig(**{name: getattr(built, name) for name in RETRIEVERS}))


# Where each part of a BuildConfig sits in a pipeline config (the inverse of `PipelineConfig.build_config`).
_BUILD_KEYS = {"corpus": "index.corpus", "chunking": "index.chunking",
               **{name: f"first_stage.{name}" for name in RETRIEVERS}}


def build_differences(config: PipelineConfig, built: BuildConfig) -> list[tuple[str, Any, Any]]:
    """`(key, the index's value, the config's value)` for each setting that decides what an index holds
    (`BuildConfig.index_settings`) and differs between `built` and `config`, keys as the pipeline config names
    them. A retriever the config does not enable is not compared: none of its settings are used."""
    have, want = built.index_settings(), config.build_config().index_settings()
    enabled = config.first_stage.retrievers()
    for name in RETRIEVERS:
        if name not in enabled:
            del have[name], want[name]
    out: list[tuple[str, Any, Any]] = []
    for part, key in _BUILD_KEYS.items():
        if part in have:
            setting_differences(key, have[part], want[part], out)
    return out


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
    """A headline and one line per bad key; values, keys and the number of lines are bounded, so a huge or
    self-sharing value cannot make the message huge (or slow)."""
    lines = [f"invalid config {source}:"]
    errors = exc.errors(include_url=False, include_context=False)
    for err in errors[:_MAX_ERRORS]:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.endswith("]")))
        dotted = ".".join(_clip(str(p), _MAX_KEY_CHARS) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            valid = sorted(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1])[:_MAX_KEY_CHARS], valid, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  {dotted}: unknown key{hint}; valid keys here: {', '.join(valid)}")
        else:
            got = _clip(_REPR.repr(err.get("input")), _MAX_GOT_CHARS)
            lines.append(f"  {dotted}: {_clip(err['msg'], _MAX_MSG_CHARS)} (got {got})")
    if len(errors) > _MAX_ERRORS:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS} more")
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
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}  # noqa: S506 - a SafeLoader
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except RecursionError:  # PyYAML composes nested values recursively
            raise ConfigError(f"{path}: values nested too deeply (thousands of levels); a config is a few levels "
                              "deep") from None
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
    for stage in (*config.first_stage.retrievers().values(), config.rerank):
        if stage is not None and getattr(stage, "model", "").startswith((".", "~")):
            stage.model = str((base / stage.model).expanduser().resolve())
    return config
