"""The SPLADE retriever: the query encoded by the index's SparseEncoder, scored over its own postings only.

A passage's score is the dot product of its stored term weights with the query's (`SparseEncoder.similarity`
with the dot product); passages sharing no term with the query are not returned.

Example:
    >>> from retrieval import SearchPipeline
    >>> pipe = SearchPipeline.from_yaml("configs/splade.yaml")  # doctest: +SKIP
    >>> pipe.retrieve(["what causes tides?"], stage="splade", top_k=3)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from index.config import SpladeConfig
from index.directory import IndexDirectory
from index.manifest import IndexDirError, rebuild_hint
from retrieval.retrievers import Hits, Retriever


class SpladeRetriever(Retriever):
    model_kind = "sparse encoder model"

    def __init__(self, encoder: Any, parts: Any, config: SpladeConfig, name: str = "splade") -> None:
        self.name = name
        self.config = config
        self.encoder = encoder
        self.postings = parts.postings

    @classmethod
    def open(cls, name: str, config: SpladeConfig, index: IndexDirectory,
             model: Any | None = None) -> SpladeRetriever:
        from index.splade import SparseEncoderModel

        parts = index.parts[name]
        encoder = model or SparseEncoderModel(config.model, config)
        built = index.manifest.get("vocabularies", {}).get(name)
        if built != encoder.vocabulary or parts.vocab_size != encoder.vocab_size:
            size = built.get("size") if isinstance(built, dict) else parts.vocab_size
            raise IndexDirError(
                f"the sparse encoder {config.model!r} has another vocabulary ({encoder.vocab_size} terms, sha256 "
                f"{encoder.vocabulary['sha256'][:12]}) than the one {index.path} was built with ({size} terms); "
                f"its term ids would score the wrong postings: {rebuild_hint(index.path)}, or set "
                f"first_stage.{name}.model to the model the index was built with")
        return cls(encoder, parts, config, name)

    def loaded_model(self) -> Any:
        return self.encoder

    def search_batch(self, queries: Sequence[str], k: int, filter: np.ndarray | None = None) -> list[Hits]:
        if not queries:
            return []
        weights = self.encoder.encode(list(queries), query=True)
        out = []
        for q in range(weights.shape[0]):
            s, e = weights.indptr[q], weights.indptr[q + 1]
            ids, mult = weights.indices[s:e].tolist(), weights.data[s:e].tolist()
            rows, scores = self.postings.search(ids, mult, k, allowed=filter)
            out.append((rows.astype(np.int64), scores.astype(np.float64)))
        return out
