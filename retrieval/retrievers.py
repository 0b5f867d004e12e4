"""First-stage retrievers over a loaded index; both return passage rows and scores per query."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from index.analyzer import Analyzer
from index.bm25 import BM25Scorer, BM25Stats
from index.config import AnalyzerConfig, BM25Config, DenseConfig
from index.dense import Encoder, configure_search, search_faiss

Hits = tuple[np.ndarray, np.ndarray]  # passage rows, scores (best first)


class BM25Retriever:
    """Sparse BM25; `backend: rank_bm25` runs the rank-bm25 library itself (slow, the reference)."""

    def __init__(self, stats: BM25Stats, config: BM25Config, analyzer_config: AnalyzerConfig) -> None:
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

    def search(self, query: str, k: int) -> Hits:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int) -> list[Hits]:
        tokens = [self.analyzer.tokenize(q) for q in queries]
        if self._reference is not None:
            out = []
            for t in map(self.scorer.scored_tokens, tokens):  # the same terms the sparse backend scores
                if not t:
                    out.append((np.empty(0, dtype=np.int64), np.empty(0)))
                    continue
                scores = np.asarray(self._reference.get_scores(t))
                top = np.lexsort((np.arange(len(scores)), -scores))[:k]
                out.append((top, scores[top]))
            return out
        if len(tokens) == 1:
            return [self.scorer.search(tokens[0], k)]
        return self.scorer.search_batch(tokens, k)


class DenseRetriever:
    """Bi-encoder query embeddings searched in FAISS (batched encoding in `search_batch`)."""

    def __init__(self, encoder: Encoder, index, config: DenseConfig, embeddings: np.ndarray | None = None) -> None:
        self.encoder = encoder
        self.index = index
        self.config = config
        self.embeddings = embeddings
        configure_search(index, config.faiss)

    def search(self, query: str, k: int) -> Hits:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int) -> list[Hits]:
        if not queries:
            return []
        emb = self.encoder.encode_queries(queries)
        ids, scores = search_faiss(self.index, emb, k, self.config.faiss, self.embeddings)
        out = []
        for row_ids, row_scores in zip(ids, scores):
            valid = row_ids >= 0
            out.append((row_ids[valid].astype(np.int64), row_scores[valid].astype(np.float64)))
        return out
