"""Settings for what gets built into an index (validated with pydantic, unknown keys rejected)."""

from __future__ import annotations

import types
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


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


class BM25Config(StrictModel):
    enabled: bool = True
    variant: Literal["okapi", "bm25l", "bm25plus", "lucene"] = "okapi"
    backend: Literal["sparse", "rank_bm25"] = "sparse"
    k1: float = Field(1.5, ge=0)
    b: float = Field(0.75, ge=0, le=1)
    delta: float | None = Field(None, ge=0, description="bm25l default 0.5, bm25plus default 1.0")
    epsilon: float = Field(0.25, ge=0, description="okapi: negative idf is floored to epsilon * mean idf")
    analyzer: AnalyzerConfig = AnalyzerConfig()
    top_k: int = Field(100, ge=1)

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


class DenseConfig(StrictModel):
    enabled: bool = True
    model: str = "bundled:all-MiniLM-L6-v2"
    faiss: FaissConfig = FaissConfig()
    batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=8, description="tokens; default: the model's own limit")
    query_prefix: str = ""
    document_prefix: str = ""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="torch: auto = fp16 on CUDA, fp32 elsewhere; openvino: auto = bf16 on CPUs with native "
        "bf16, else fp32",
    )
    device: str = "auto"
    backend: Literal["torch", "openvino"] = Field(
        "torch", description="openvino: the transformer converted once to OpenVINO IR (cached beside the model or in "
        "the user cache) and run on the CPU; pooling and normalization stay sentence-transformers' own modules",
    )
    trust_remote_code: bool = False
    top_k: int = Field(100, ge=1)


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

    # The one list of settings read only at query time: an index built with other values of these is the same
    # index, so a pipeline may set them freely and the evaluation cache ignores them. Every other setting decides
    # what the index holds. (BM25 stores raw counts, so its formula is chosen at query time; dense backend and
    # precision run the same model, whose document vectors serve queries encoded either way.) Of `dense.faiss`,
    # only the type and its `FaissConfig.BUILD_PARAMS` decide what is built; ef_search, nprobe, rescore do not.
    QUERY_TIME: ClassVar[dict[str, tuple[str, ...]]] = {
        "bm25": ("variant", "backend", "k1", "b", "delta", "epsilon", "top_k"),
        "dense": ("batch_size", "device", "backend", "precision", "query_prefix", "trust_remote_code", "top_k"),
    }

    def index_settings(self) -> dict[str, Any]:
        """The settings that decide what the index holds, as JSON: no query-time keys, a disabled stage as
        `{"enabled": false}`, and only the FAISS build parameters its index type reads."""
        out = self.model_dump(mode="json")
        for stage in ("bm25", "dense"):
            if not out[stage]["enabled"]:
                out[stage] = {"enabled": False}
        for stage, keys in self.QUERY_TIME.items():
            for key in keys:
                out[stage].pop(key, None)
        faiss = out["dense"].get("faiss")
        if faiss is not None:
            kept = {"type", *FaissConfig.BUILD_PARAMS[faiss["type"]]}
            out["dense"]["faiss"] = {k: v for k, v in faiss.items() if k in kept}
        return out
