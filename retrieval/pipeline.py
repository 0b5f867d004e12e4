"""`SearchPipeline`: first stage (BM25, dense, fused) then an optional cross-encoder, built from one YAML file.

Example:
    >>> from retrieval import SearchPipeline
    >>> pipe = SearchPipeline.from_yaml("configs/default.yaml")  # doctest: +SKIP
    >>> for r in pipe.query("what causes tides?", top_k=3):  # doctest: +SKIP
    ...     print(r.doc_id, round(r.score, 3), r.stages)
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.dense import Encoder
from index.directory import IndexDirectory
from index.manifest import IndexDirError
from retrieval.config import ConfigError, PipelineConfig, build_differences, load_config
from retrieval.fusion import normalize, rrf, weighted
from retrieval.retrievers import BM25Retriever, DenseRetriever

logger = logging.getLogger(__name__)

STAGES = ("bm25", "dense", "hybrid", "rerank")
# Control characters, and unpaired surrogates (not Unicode text; tokenizers reject them), become spaces.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# Passages fetched per wanted document when the index is chunked (several passages can share a document).
_CHUNK_FETCH_FACTOR = 3


@dataclass
class StageScore:
    score: float
    rank: int


@dataclass
class SearchResult:
    doc_id: str
    score: float
    rank: int
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, StageScore] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Candidates:
    """Per query: ranked (doc_id, score) lists per stage, and the passage rows seen for each document."""

    lists: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    rows: dict[str, list[int]] = field(default_factory=dict)


class SearchPipeline:
    """Thread-safe for queries: one instance can serve many threads (models are behind locks)."""

    def __init__(self, config: PipelineConfig, index: IndexDirectory | None = None,
                 encoder: Encoder | None = None, reranker: Any | None = None) -> None:
        self.config = config
        if index is None:
            if config.index.path is None:
                raise ConfigError("index.path is not set; set it in the config or pass index=")
            index = IndexDirectory.load(config.index.path, verify=config.index.verify)
        self.index = index
        self._check_matches_index()
        fs = config.first_stage
        analyzer = index.build_config.bm25.analyzer
        self.bm25 = BM25Retriever(index.bm25, fs.bm25, analyzer) if fs.bm25.enabled and index.bm25 else None
        self.dense: DenseRetriever | None = None
        if fs.dense.enabled and index.faiss_index is not None:
            encoder = encoder or Encoder(fs.dense.model, fs.dense)
            if encoder.dim != index.faiss_index.d:
                raise IndexDirError(f"the encoder {fs.dense.model!r} gives {encoder.dim}-dim vectors but the index "
                                    f"holds {index.faiss_index.d}-dim ones; rebuild the index with this model")
            self.dense = DenseRetriever(encoder, index.faiss_index, fs.dense, index.embeddings)
        self.reranker = reranker
        if self.reranker is None and config.rerank is not None:
            from rerank.cross_encoder import CrossEncoderReranker

            self.reranker = CrossEncoderReranker(config=config.rerank)
        self._chunked = index.build_config.chunking is not None
        self._lock = threading.Lock()

    def _check_matches_index(self) -> None:
        built, fs, path = self.index.build_config, self.config.first_stage, self.index.path
        components = self.index.manifest.get("components", [])
        if fs.bm25.enabled and "bm25" not in components:
            raise IndexDirError(f"the config enables bm25 but {path} was built without it; rebuild the index "
                                "or set first_stage.bm25.enabled: false")
        if fs.dense.enabled and "dense" not in components:
            raise IndexDirError(f"the config enables dense but {path} was built without it; rebuild the index "
                                "or set first_stage.dense.enabled: false")
        if fs.dense.enabled and self.index.dense_model != fs.dense.model:
            raise IndexDirError(f"{path} was built with the embedding model {self.index.dense_model!r} but the "
                                f"config asks for {fs.dense.model!r}; rebuild the index or change "
                                "first_stage.dense.model")
        differences = build_differences(self.config, built)
        if differences:
            raise IndexDirError(f"{path} was built with {_settings(differences, 1)} but the config has "
                                f"{_settings(differences, 2)}; rebuild the index with this config, or change the "
                                "config to the index's values")

    @classmethod
    def from_yaml(cls, path: str | Path, index_path: str | Path | None = None) -> SearchPipeline:
        config = load_config(path)
        if index_path is not None:
            config.index.path = Path(index_path).expanduser().resolve()
        return cls(config)

    @classmethod
    def from_config(cls, config: dict[str, Any] | PipelineConfig, base_dir: Path | None = None) -> SearchPipeline:
        return cls(load_config(config, base_dir=base_dir))

    @property
    def stages(self) -> list[str]:
        """The stages this pipeline can run, in order."""
        out = [s for s, on in (("bm25", self.bm25), ("dense", self.dense)) if on is not None]
        if self.bm25 is not None and self.dense is not None:
            out.append("hybrid")
        if self.reranker is not None:
            out.append("rerank")
        return out

    @property
    def final_stage(self) -> str:
        return self.stages[-1]

    # -- query validation -----------------------------------------------------------------------------------

    def _clean(self, text: Any, position: int | None = None) -> str:
        where = "query" if position is None else f"query #{position}"
        if not isinstance(text, str):
            raise TypeError(f"{where} must be a str, not {type(text).__name__}")
        text = _CONTROL.sub(" ", text)
        limit = self.config.output.max_query_chars
        if len(text) > limit:
            logger.warning("%s has %d characters; truncated to output.max_query_chars=%d", where, len(text), limit)
            text = text[:limit]
        return text.strip()

    @staticmethod
    def _check_top_k(top_k: Any) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")

    def _checked(self, texts: Any, top_k: Any, caller: str, single: bool = False) -> list[str]:
        """The cleaned queries of a batch call, after checking the batch and `top_k` (`None`: the caller's
        default), all before any work is done."""
        if isinstance(texts, (str, bytes)):
            # A string is iterable: unchecked, it would run as one query per character.
            fix = "use query() for a single string" if caller == "query_batch" else "wrap a single query in a list"
            raise TypeError(f"{caller} takes a list of strings; {fix}")
        if not isinstance(texts, Iterable):
            raise TypeError(f"{caller} takes a list of strings, not {type(texts).__name__}")
        if top_k is not None:
            self._check_top_k(top_k)
        return [self._clean(t, None if single else i) for i, t in enumerate(texts)]

    # -- stages ---------------------------------------------------------------------------------------------

    def _to_docs(self, hits: tuple[np.ndarray, np.ndarray], k: int, cand: _Candidates) -> list[tuple[str, float]]:
        """Passage hits to documents (a document scores as its best passage)."""
        rows, scores = hits
        best: dict[str, float] = {}
        row_doc = self.index.store.row_doc_ids
        for row, score in zip(rows.tolist(), scores.tolist()):
            doc_id = row_doc[row]
            if doc_id not in best:
                best[doc_id] = score
            seen = cand.rows.setdefault(doc_id, [])
            if row not in seen:
                seen.append(row)
        return list(best.items())[:k]

    def _first_stage(self, texts: list[str], stage: str) -> list[_Candidates]:
        fs = self.config.first_stage
        out = [_Candidates() for _ in texts]
        active = [i for i, t in enumerate(texts) if t]
        todo = [texts[i] for i in active]
        factor = _CHUNK_FETCH_FACTOR if self._chunked else 1
        if self.bm25 is not None and stage in ("bm25", "hybrid", "rerank"):
            for i, hits in zip(active, self.bm25.search_batch(todo, fs.bm25.top_k * factor)):
                out[i].lists["bm25"] = self._to_docs(hits, fs.bm25.top_k, out[i])
        if self.dense is not None and stage in ("dense", "hybrid", "rerank"):
            for i, hits in zip(active, self.dense.search_batch(todo, fs.dense.top_k * factor)):
                out[i].lists["dense"] = self._to_docs(hits, fs.dense.top_k, out[i])
        for cand in out:
            parts = {k: v for k, v in cand.lists.items() if k in ("bm25", "dense")}
            if len(parts) == 2:
                fusion = fs.fusion
                if fusion.method == "rrf":
                    # weights only when the config sets them, so plain RRF scores stay the textbook 1/(k+rank)
                    fused = rrf(parts, fusion.k, fusion.weights if "weights" in fusion.model_fields_set else None)
                else:
                    fused = weighted(parts, fusion.weights, fusion.normalization)
                cand.lists["hybrid"] = fused[: fusion.top_k]
        return out

    def _first_stage_name(self, cand: _Candidates) -> str:
        for name in ("hybrid", "dense", "bm25"):
            if name in cand.lists:
                return name
        return "bm25"

    def _rerank(self, query: str, cand: _Candidates) -> None:
        cfg = self.config.rerank
        first = cand.lists.get(self._first_stage_name(cand), [])
        top_n = cfg.top_n if cfg is not None else 50
        head, tail = first[:top_n], first[top_n:]
        if not head:
            cand.lists["rerank"] = []
            return
        rows = {d: cand.rows.get(d, [])[: (4 if self._chunked else 1)] for d, _ in head}
        texts = self.index.store.passage_texts([r for rs in rows.values() for r in rs])
        docs = self.index.store.get(d for d, _ in head)
        passages = [[_pair_text(docs[d]["title"], texts[r]) for r in rows[d]] for d, _ in head]
        scores = self.reranker.score_documents(query, passages).astype(np.float64)
        alpha = cfg.interpolation if cfg is not None else 0.0
        if alpha > 0:
            first_scores = np.array([s for _, s in head], dtype=np.float64)
            scores = (1 - alpha) * normalize(scores, "minmax") + alpha * normalize(first_scores, "minmax")
        order = np.argsort(-scores, kind="stable")
        reranked = [(head[i][0], float(scores[i])) for i in order]
        # Candidates beyond top_n keep their first-stage order, below every re-scored one.
        low = float(scores.min()) if len(scores) else 0.0
        cand.lists["rerank"] = reranked + [(d, low - 1 - i) for i, (d, _) in enumerate(tail)]

    def _run(self, texts: list[str], stage: str) -> list[_Candidates]:
        if stage not in self.stages:
            raise ValueError(f"stage {stage!r} is not available in this pipeline; available: {self.stages}")
        cands = self._first_stage(texts, stage)
        if stage == "rerank":
            for text, cand in zip(texts, cands):
                if text:
                    self._rerank(text, cand)
        return cands

    # -- public API -----------------------------------------------------------------------------------------

    def retrieve(self, queries: Sequence[str], stage: str | None = None,
                 top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """Ranked `(doc_id, score)` lists of one stage for many queries (what evaluation needs): the stage's whole
        ranking, or its first `top_k`. Queries and `top_k` are checked as `query_batch` checks them."""
        texts = self._checked(queries, top_k, "retrieve")
        stage = stage or self.final_stage
        cands = self._run(texts, stage)
        return [c.lists.get(stage, [])[:top_k] for c in cands]

    def query(self, text: str, top_k: int | None = None) -> list[SearchResult]:
        """Ranked results for one query; an empty or whitespace-only query returns []."""
        return self.query_batch([text], top_k=top_k, _single=True)[0]

    def query_batch(self, texts: Sequence[str], top_k: int | None = None,
                    _single: bool = False) -> list[list[SearchResult]]:
        """Results for many queries (batched encoding). A non-string anywhere raises TypeError naming its
        position before any work is done; empty queries get []."""
        top_k = self.config.output.top_k if top_k is None else top_k
        clean = self._checked(texts, top_k, "query_batch", _single)
        stage = self.final_stage
        cands = self._run(clean, stage)
        wanted: list[list[str]] = [[d for d, _ in c.lists.get(stage, [])[:top_k]] for c in cands]
        docs = self.index.store.get(d for ids in wanted for d in ids)
        return [self._results(c, ids, docs, stage) for c, ids in zip(cands, wanted)]

    def _results(self, cand: _Candidates, ids: list[str], docs: dict[str, dict], stage: str) -> list[SearchResult]:
        stage_maps = {name: {d: (s, r) for r, (d, s) in enumerate(lst, start=1)} for name, lst in cand.lists.items()}
        final = stage_maps.get(stage, {})
        out = []
        for doc_id in ids:
            doc = docs[doc_id]
            stages = {name: StageScore(float(m[doc_id][0]), m[doc_id][1])
                      for name, m in stage_maps.items() if doc_id in m}
            score, rank = final[doc_id]
            out.append(SearchResult(doc_id, float(score), rank, doc["title"], doc["text"], doc["metadata"], stages))
        return out


def _settings(differences: list[tuple[str, Any, Any]], side: int) -> str:
    # JSON values read as YAML: the index's side can be pasted into the config as it is.
    return ", ".join(f"{d[0]}: {json.dumps(d[side])}" for d in differences)


def _pair_text(title: str, text: str) -> str:
    return f"{title} {text}".strip() if title else text
