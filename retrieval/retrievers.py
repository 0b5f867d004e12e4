"""First-stage retrievers behind one protocol: each returns passage rows and scores per query, best first.

A retriever is named after its config key (`first_stage.<name>`), says which index components it reads, checks
them against the index's manifest before any query, and answers `search_batch(queries, k)`. The pipeline holds a
list of them and never names one; a retriever's config class says which class serves it
(`RetrieverConfig.RETRIEVER`). BM25 and dense live here; SPLADE in `retrieval/splade.py`.

Example:
    >>> from index.directory import IndexDirectory  # doctest: +SKIP
    >>> from retrieval.retrievers import open_retrievers  # doctest: +SKIP
    >>> idx = IndexDirectory.load("/tmp/scifact-index")  # doctest: +SKIP
    >>> bm25 = open_retrievers(idx, {"bm25": idx.build_config.bm25})[0]  # doctest: +SKIP
    >>> rows, scores = bm25.search_batch(["what causes tides?"], k=10)[0]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from index.analyzer import Analyzer
from index.bm25 import BM25Scorer, BM25Stats
from index.components import config_class, import_path
from index.config import AnalyzerConfig, BM25Config, DenseConfig, RetrieverConfig
from index.directory import IndexDirectory
from index.manifest import IndexDirError, rebuild_hint

Hits = tuple[np.ndarray, np.ndarray]  # passage rows, scores (best first)


class Retriever:
    """The protocol. A subclass sets `name` and `config`, sets `model_kind` when its component is built with a
    model, and implements `open` (load what it needs from a checked index) and `search_batch`."""

    name: str
    config: RetrieverConfig
    model_kind: ClassVar[str | None] = None  # e.g. "embedding model": the manifest then records which one

    @classmethod
    def open(cls, name: str, config: RetrieverConfig, index: IndexDirectory, model: Any | None = None) -> Retriever:
        """The retriever `first_stage.<name>` over `index` (already `check`ed); `model`: an already loaded model."""
        raise NotImplementedError

    @property
    def components(self) -> tuple[str, ...]:
        """The index components this retriever reads."""
        return (self.name,)

    @classmethod
    def check(cls, name: str, config: RetrieverConfig, index: IndexDirectory) -> None:
        """Refuse (`IndexDirError`, one line naming the setting and the fix) an index this retriever cannot
        search: its component missing, or built with another model."""
        path = index.path
        if name not in index.manifest.get("components", []):
            raise IndexDirError(f"the config enables {name} but {path} was built without it; rebuild the index or "
                                f"set first_stage.{name}.enabled: false ({rebuild_hint(path)})")
        if cls.model_kind is not None and index.model(name) != config.model:
            raise IndexDirError(f"{path} was built with the {cls.model_kind} {index.model(name)!r} but the config "
                                f"asks for {config.model!r}; rebuild the index or change first_stage.{name}.model")

    def search_batch(self, queries: Sequence[str], k: int, filter: np.ndarray | None = None) -> list[Hits]:
        """The top `k` passage rows and scores of each query. `filter`: a boolean mask over rows
        (`IndexDirectory.filter_mask`) applied before the top-k, so k rows come back whenever k allowed rows
        score; their scores are the unfiltered ones."""
        raise NotImplementedError

    def search(self, query: str, k: int, filter: np.ndarray | None = None) -> Hits:
        return self.search_batch([query], k, filter)[0]

    def loaded_model(self) -> Any | None:
        """The model this retriever holds, if any: reopening it over a newer state of the index reuses it."""
        return None


def retriever_class(name: str) -> type[Retriever]:
    """The class serving `first_stage.<name>` (its config's `RETRIEVER`)."""
    return import_path(config_class(name).RETRIEVER)


def check_retrievers(index: IndexDirectory, configs: Mapping[str, RetrieverConfig]) -> None:
    """Each enabled retriever's `check` against `index`, before anything is loaded."""
    for name, config in configs.items():
        retriever_class(name).check(name, config, index)


def open_retrievers(index: IndexDirectory, configs: Mapping[str, RetrieverConfig],
                    models: Mapping[str, Any] | None = None) -> list[Retriever]:
    """One retriever per enabled config (by name, in order), all checked against `index` before any is
    loaded; `models` passes already loaded models by retriever name."""
    check_retrievers(index, configs)
    models = models or {}
    if getattr(index, "sharded", False):  # retrieval.sharded.ShardedIndex: retrievers that fan out to its shards
        return index.open_retrievers(configs, models)
    return [retriever_class(name).open(name, config, index, models.get(name)) for name, config in configs.items()]


class BM25Retriever(Retriever):
    """Sparse BM25; `backend: rank_bm25` runs the rank-bm25 library itself (slow, the reference)."""

    def __init__(self, stats: BM25Stats, config: BM25Config, analyzer_config: AnalyzerConfig,
                 name: str = "bm25") -> None:
        self.name = name
        self.config = config
        self.analyzer = Analyzer(analyzer_config)
        self.scorer = BM25Scorer(stats, config)
        self._reference = None
        if config.backend == "rank_bm25":
            import rank_bm25

            classes = {"okapi": rank_bm25.BM25Okapi, "bm25l": rank_bm25.BM25L, "bm25plus": rank_bm25.BM25Plus}
            if config.variant not in classes:
                raise ValueError(f"backend rank_bm25 has no {config.variant!r} variant; use backend: sparse")
            kwargs = {"k1": config.k1, "b": config.b}
            if config.variant == "okapi":
                kwargs["epsilon"] = config.epsilon
            else:
                kwargs["delta"] = config.resolved_delta()
            self._reference = classes[config.variant](stats.doc_tokens(), **kwargs)

    @classmethod
    def open(cls, name: str, config: BM25Config, index: IndexDirectory, model: Any | None = None) -> BM25Retriever:
        return cls(index.parts[name], config, index.build_config.bm25.analyzer, name)

    def search_batch(self, queries: Sequence[str], k: int, filter: np.ndarray | None = None) -> list[Hits]:
        tokens = [self.analyzer.tokenize(q) for q in queries]
        if self._reference is not None:
            out = []
            for t in map(self.scorer.scored_tokens, tokens):  # the same terms the sparse backend scores
                if not t:
                    out.append((np.empty(0, dtype=np.int64), np.empty(0)))
                    continue
                scores = np.asarray(self._reference.get_scores(t))
                rows = np.arange(len(scores)) if filter is None else np.flatnonzero(filter)
                top = rows[np.lexsort((rows, -scores[rows]))[:k]]
                out.append((top, scores[top]))
            return out
        return self.scorer.search_batch(tokens, k, filter)


class DenseRetriever(Retriever):
    """Bi-encoder query embeddings searched in FAISS (batched encoding in `search_batch`)."""

    model_kind = "embedding model"

    def __init__(self, encoder: Any, parts: Any, config: DenseConfig, name: str = "dense") -> None:
        from index.dense import configure_search

        self.name = name
        self.encoder = encoder
        self.parts = parts  # `DenseParts`, or `SegmentedDense` for an updated approximate index
        self.config = config
        for index in getattr(parts, "parts", [parts]):
            configure_search(index.index, config.faiss)

    @property
    def index(self) -> Any:
        return self.parts.index

    @property
    def embeddings(self) -> np.ndarray:
        return self.parts.embeddings

    def loaded_model(self) -> Any:
        return self.encoder

    @classmethod
    def open(cls, name: str, config: DenseConfig, index: IndexDirectory, model: Any | None = None) -> DenseRetriever:
        from index.dense import Encoder

        parts = index.parts[name]
        encoder = model or Encoder(config.model, config)
        if encoder.dim != parts.dim:
            raise IndexDirError(f"the encoder {config.model!r} gives {encoder.dim}-dim vectors but the index "
                                f"holds {parts.dim}-dim ones; rebuild the index with this model")
        return cls(encoder, parts, config, name)

    def search_batch(self, queries: Sequence[str], k: int, filter: np.ndarray | None = None) -> list[Hits]:
        if not queries:
            return []
        if filter is not None and not filter.any():
            return [(np.empty(0, dtype=np.int64), np.empty(0)) for _ in queries]
        emb = self.encoder.encode_queries(queries)
        return self.parts.search(emb, k, self.config.faiss, filter)
