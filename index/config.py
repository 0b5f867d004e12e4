"""Settings for what gets built into an index (validated with pydantic, unknown keys rejected)."""

from __future__ import annotations

import types
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError


def _flat_types(annotation: Any) -> set[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return set().union(*(_flat_types(a) for a in get_args(annotation)))
    return {annotation}


class StrictModel(BaseModel):
    """Base for every config block: typos are errors, not silently ignored settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic would read true/false as 1/0; in YAML that is a slip (`top_k: yes`), not a number.
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            kinds = _flat_types(cls.model_fields[info.field_name].annotation)
            if bool not in kinds and kinds & {int, float}:
                raise ValueError(f"expected a number, not the boolean {str(value).lower()}")
        return value


class AnalyzerConfig(StrictModel):
    lowercase: bool = True
    stopwords: str | list[str] | None = "english"
    stemmer: str | None = "english"
    min_token_length: int = Field(1, ge=1)
    max_token_length: int = Field(64, ge=1)


class RetrieverConfig(StrictModel):
    """What every first-stage retriever's settings have. A subclass names the code that serves it, so the
    builder, the index loader and the pipeline find every retriever the same way (see docs/architecture.md)."""

    enabled: bool = True
    top_k: int = Field(100, ge=1)

    # "module:Class" of the index component it builds and loads (`index.components.Component`), and of the
    # retriever that searches it (`retrieval.retrievers.Retriever`).
    COMPONENT: ClassVar[str]
    RETRIEVER: ClassVar[str]
    # Settings read only at query time: an index built with other values of these is the same index.
    QUERY_TIME: ClassVar[tuple[str, ...]] = ("top_k",)

    def index_settings(self) -> dict[str, Any]:
        """The settings that decide what the index holds, as JSON (`{"enabled": false}` when disabled)."""
        if not self.enabled:
            return {"enabled": False}
        out = self.model_dump(mode="json")
        for key in self.QUERY_TIME:
            out.pop(key, None)
        return out


class BM25Config(RetrieverConfig):
    COMPONENT: ClassVar[str] = "index.components:BM25Component"
    RETRIEVER: ClassVar[str] = "retrieval.retrievers:BM25Retriever"
    # BM25 stores raw counts, so its formula is chosen at query time.
    QUERY_TIME: ClassVar[tuple[str, ...]] = ("variant", "backend", "k1", "b", "delta", "epsilon", "top_k")

    variant: Literal["okapi", "bm25l", "bm25plus", "lucene"] = "okapi"
    backend: Literal["sparse", "rank_bm25"] = "sparse"
    k1: float = Field(1.5, ge=0)
    b: float = Field(0.75, ge=0, le=1)
    delta: float | None = Field(None, ge=0, description="bm25l default 0.5, bm25plus default 1.0")
    epsilon: float = Field(0.25, ge=0, description="okapi: negative idf is floored to epsilon * mean idf")
    analyzer: AnalyzerConfig = AnalyzerConfig()

    def resolved_delta(self) -> float:
        if self.delta is not None:
            return self.delta
        return {"bm25l": 0.5, "bm25plus": 1.0}.get(self.variant, 0.0)


class FaissConfig(StrictModel):
    type: Literal["flat", "hnsw", "ivf", "sq8"] = "flat"
    hnsw_m: int = Field(32, ge=4)
    ef_construction: int = Field(200, ge=8)
    ef_search: int = Field(128, ge=1)
    nlist: int | None = Field(None, ge=1, description="ivf: default 4*sqrt(n)")
    nprobe: int = Field(16, ge=1)
    rescore: int = Field(0, ge=0, description="re-score this many candidates with exact fp32 vectors (sq8/ivf)")

    # The build parameters each index type reads; the others change nothing in what is built.
    BUILD_PARAMS: ClassVar[dict[str, tuple[str, ...]]] = {"flat": (), "hnsw": ("hnsw_m", "ef_construction"),
                                                          "ivf": ("nlist",), "sq8": ()}


class DenseConfig(RetrieverConfig):
    COMPONENT: ClassVar[str] = "index.components:DenseComponent"
    RETRIEVER: ClassVar[str] = "retrieval.retrievers:DenseRetriever"
    # Backend and precision run the same model, whose document vectors serve queries encoded either way.
    QUERY_TIME: ClassVar[tuple[str, ...]] = ("batch_size", "device", "backend", "precision", "query_prefix",
                                             "trust_remote_code", "top_k")

    model: str = "bundled:all-MiniLM-L6-v2"
    faiss: FaissConfig = FaissConfig()
    batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=8, description="tokens; default: the model's own limit")
    query_prefix: str = ""
    document_prefix: str = ""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="torch: auto = fp16 on CUDA, fp32 elsewhere; openvino: auto = bf16 on CPUs with native "
        "bf16, else fp32; backend auto on a CPU: auto = fp32",
    )
    device: str = "auto"
    backend: Literal["auto", "torch", "openvino"] = Field(
        "auto", description="auto: torch on a GPU; on a CPU OpenVINO in fp32 (measured: the same rankings as torch "
        "fp32 to 4 decimals on SciFact and Cranfield, encoding 1.2x faster), torch if the model cannot be converted; "
        "openvino: the transformer converted once to OpenVINO IR (cached beside the model or in the user cache) and "
        "run on the CPU; pooling and normalization stay sentence-transformers' own modules",
    )
    trust_remote_code: bool = False

    def index_settings(self) -> dict[str, Any]:
        # Of `faiss`, only the type and its BUILD_PARAMS decide what is built; ef_search, nprobe, rescore do not.
        out = super().index_settings()
        faiss = out.get("faiss")
        if faiss is not None:
            kept = {"type", *FaissConfig.BUILD_PARAMS[faiss["type"]]}
            out["faiss"] = {k: v for k, v in faiss.items() if k in kept}
        return out


class SpladeConfig(RetrieverConfig):
    """A sentence-transformers `SparseEncoder` (SPLADE): passages as vocabulary-term weights in an inverted index,
    scored by the dot product with the query's weights. Off unless configured."""

    COMPONENT: ClassVar[str] = "index.splade:SpladeComponent"
    RETRIEVER: ClassVar[str] = "retrieval.splade:SpladeRetriever"
    QUERY_TIME: ClassVar[tuple[str, ...]] = ("batch_size", "device", "precision", "trust_remote_code", "top_k")

    model: str = Field(description="a local SparseEncoder directory or a hub id, e.g. "
                       "naver/splade-cocondenser-ensembledistil")
    batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=8, description="tokens; default: the model's own limit")
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = fp16 on CUDA, fp32 elsewhere; bf16 = fp32 weights under bf16 autocast",
    )
    trust_remote_code: bool = False


class ChunkingConfig(StrictModel):
    max_words: int = Field(200, ge=8)
    overlap: int = Field(40, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingConfig:
        if self.overlap >= self.max_words:
            raise ValueError(
                f"chunking.overlap ({self.overlap}) must be smaller than chunking.max_words ({self.max_words})"
            )
        return self


class CorpusConfig(StrictModel):
    format: Literal["auto", "beir", "jsonl", "csv", "tsv", "folder"] = "auto"
    id_field: str = "_id"
    title_field: str = "title"
    text_field: str = "text"
    on_empty: Literal["skip", "error"] = "skip"
    quoting: Literal["auto", "csv", "none"] = Field(
        "auto", description='csv/tsv: auto = csv quotes fields with " (RFC 4180) and tsv has no quoting, a " is text '
        "(IANA text/tab-separated-values, as BEIR and MS MARCO write it); csv or none force one or the other",
    )
    multiline_fields: bool = Field(
        False, description="csv: allow a quoted field to span lines; off, a record over several lines is refused, "
        'since that is what a stray " looks like (it swallows the rows after it)',
    )
    folder_id_suffix: bool = Field(
        False, description="folder: ids keep the file suffix (notes.md, notes.txt), for folders where two files "
        "differ only by it; off, the id is the relative path without the suffix",
    )


class BuildConfig(StrictModel):
    """Everything that decides what an index directory holds (the query-time knobs live beside it)."""

    corpus: CorpusConfig = CorpusConfig()
    chunking: ChunkingConfig | None = None
    bm25: BM25Config = BM25Config()
    dense: DenseConfig = DenseConfig()
    splade: SpladeConfig | None = None

    def retrievers(self) -> dict[str, RetrieverConfig]:
        """The enabled first-stage retrievers, by name, in the order they are declared."""
        return enabled_retrievers(self)

    def index_settings(self) -> dict[str, Any]:
        """The settings that decide what the index holds, as JSON: no query-time keys (each retriever's
        `QUERY_TIME`), a disabled or absent retriever as `{"enabled": false}`."""
        out = self.model_dump(mode="json", exclude=set(RETRIEVERS))
        for name in RETRIEVERS:
            value = getattr(self, name)
            out[name] = value.index_settings() if value is not None else {"enabled": False}
        return out


def retriever_type(annotation: Any) -> type[RetrieverConfig] | None:
    return next((a for a in _flat_types(annotation) if isinstance(a, type) and issubclass(a, RetrieverConfig)), None)


# The first-stage retrievers, by config key, in declaration order: a new one is a new `RetrieverConfig` field of
# `BuildConfig` (and of the pipeline's `first_stage`), nothing else here.
RETRIEVERS: tuple[str, ...] = tuple(name for name, f in BuildConfig.model_fields.items()
                                    if retriever_type(f.annotation))


def enabled_retrievers(section: BaseModel) -> dict[str, RetrieverConfig]:
    """The enabled retrievers of a config section holding retriever fields (`BuildConfig`, `first_stage`)."""
    out = {}
    for name in RETRIEVERS:
        value = getattr(section, name, None)
        if value is not None and value.enabled:
            out[name] = value
    return out


def retriever_name(value: str) -> str:
    """A key that must name a first-stage retriever (fusion weights, index components)."""
    if value not in RETRIEVERS:
        raise PydanticCustomError("literal_error", "Input should be {expected}",
                                  {"expected": " or ".join(repr(n) for n in RETRIEVERS)})
    return value


def setting_differences(key: str, have: Any, want: Any, out: list[tuple[str, Any, Any]]) -> None:
    """Append `(key, have, want)` for each setting under `key` that differs between two `index_settings()` trees."""
    if isinstance(have, dict) and isinstance(want, dict):
        # A key only one side has is a parameter the other side's choice does not read (hnsw_m of a flat index):
        # the choice itself differs and is reported.
        for name in sorted(have.keys() & want.keys()):
            setting_differences(f"{key}.{name}", have[name], want[name], out)
    elif have != want:
        out.append((key, have, want))


def build_setting_differences(built: BuildConfig, config: BuildConfig) -> list[tuple[str, Any, Any]]:
    """`(key, the index's value, the config's value)` for each build-time setting that differs; a retriever
    disabled on both sides is not compared."""
    have, want = built.index_settings(), config.index_settings()
    out: list[tuple[str, Any, Any]] = []
    for part in have:
        setting_differences(part, have[part], want.get(part), out)
    return out
