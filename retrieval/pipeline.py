"""`SearchPipeline`: first stage (BM25, dense, fused) then an optional cross-encoder, built from one YAML file.

Example:
    >>> from retrieval import SearchPipeline
    >>> pipe = SearchPipeline.from_yaml("configs/default.yaml")  # doctest: +SKIP
    >>> for r in pipe.query("what causes tides?", top_k=3):  # doctest: +SKIP
    ...     print(r.doc_id, round(r.score, 3), r.stages)
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.chunking import passage_spans
from index.cluster import connect
from index.config import BuildConfig
from index.directory import IndexDirectory
from index.documents import model_text
from index.manifest import IndexDirError, manifest_identity
from index.sharded import is_sharded
from retrieval.config import ConfigError, PipelineConfig, build_differences, load_config
from retrieval.fusion import rrf, weighted
from retrieval.retrievers import Retriever, check_retrievers, open_retrievers
from retrieval.scores import Combination, rerank_list

logger = logging.getLogger(__name__)

# The fused first stage and the second stage; the other stage names are the retrievers' (`first_stage.<name>`).
FUSED, RERANK = "hybrid", "rerank"
# Control characters, and unpaired surrogates (not Unicode text; tokenizers reject them), become spaces.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# Passages fetched per wanted document when the index is chunked (several passages can share a document).
_CHUNK_FETCH_FACTOR = 3


@dataclass
class StageScore:
    score: float
    rank: int


@dataclass
class Passage:
    """Where in a document a result matched: the passage's id (`docid#n`), its character offsets into the
    document's `text` (`text[start:end]`), and its text."""

    id: str
    start: int
    end: int
    text: str


@dataclass
class SearchResult:
    """One ranked document.

    `score` and `rank` are the final stage's. `stages` holds each stage's own score and rank for this document:
    every retriever (`bm25`, `dense`, `splade`), `hybrid` (the fused list), `rerank` (the cross-encoder's own
    score and its rank among the re-scored candidates; absent for a document below `rerank.top_n`) and, when the
    pipeline reranks, `final` (the ranking returned: the reranker's score blended with the first stage's by
    `rerank.interpolation`, the unscored candidates below; `score` and `rank` are this entry's). `passage` is
    the best-matching passage of a chunked index (`None` otherwise); `passages` lists every passage that matched,
    best first, when asked (`query(..., passages=True)`).
    """

    doc_id: str
    score: float
    rank: int
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, StageScore] = field(default_factory=dict)
    passage: Passage | None = None
    passages: list[Passage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """As `dataclasses.asdict` (metadata's nested values copied), written out: asdict's generic recursion was
        a quarter of a BM25 query's time behind the HTTP server."""
        def passage(p: Passage) -> dict[str, Any]:
            return {"id": p.id, "start": p.start, "end": p.end, "text": p.text}

        return {"doc_id": self.doc_id, "score": self.score, "rank": self.rank, "title": self.title,
                "text": self.text,
                "metadata": {k: copy.deepcopy(v) if isinstance(v, (dict, list)) else v
                             for k, v in self.metadata.items()},
                "stages": {name: {"score": st.score, "rank": st.rank} for name, st in self.stages.items()},
                "passage": None if self.passage is None else passage(self.passage),
                "passages": [passage(p) for p in self.passages]}


@dataclass
class _Candidates:
    """Per query: ranked (doc_id, score) lists per stage, the passage rows seen for each document, and each
    stage's best passage row per document."""

    lists: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    rows: dict[str, list[int]] = field(default_factory=dict)
    best: dict[str, dict[str, int]] = field(default_factory=dict)
    own: list[tuple[str, float]] = field(default_factory=list)  # the reranker's own ranking of its head


@dataclass(frozen=True)
class _View:
    """One committed state of the index and the retrievers over it: a query reads one view from start to end."""

    index: IndexDirectory
    retrievers: list[Retriever]


class SearchPipeline:
    """Thread-safe for queries: one instance can serve many threads (models are behind locks). A writer's commit
    is seen by the next query (`index.auto_refresh`, on by default) or after `refresh()`; each query answers from
    one committed state."""

    def __init__(self, config: PipelineConfig, index: IndexDirectory | None = None,
                 encoder: Any | None = None, reranker: Any | None = None,
                 models: dict[str, Any] | None = None) -> None:
        """Parameters:
            config: the validated pipeline config (`load_config`).
            index: an already loaded index (else `config.index.path` is loaded).
            encoder: an already loaded bi-encoder for the dense retriever (the same as `models={"dense": ...}`).
            reranker: an already loaded reranker (else built from `config.rerank`, if set).
            models: already loaded models by retriever name.
        """
        self.config = config
        if index is None:
            if config.index.path is None:
                raise ConfigError("index.path is not set; set it in the config or pass index=")
            index = open_index(config.index.path, config)
        retrievers = config.first_stage.retrievers()
        self._check_index(index)
        models = {**(models or {}), **({"dense": encoder} if encoder is not None else {})}
        self._view = _View(index, open_retrievers(index, retrievers, models))
        self.reranker = reranker
        if self.reranker is None and config.rerank is not None:
            if getattr(index, "ray_address", None) is not None:  # a sharded index on Ray: the reranker is actors too
                from retrieval.sharded import RayReranker

                self.reranker = RayReranker(connect(index.ray_address), config.rerank)
            else:
                from rerank.cross_encoder import CrossEncoderReranker

                self.reranker = CrossEncoderReranker(config=config.rerank)
        self._chunked = index.build_config.chunking is not None
        self._lock = threading.Lock()
        self._refresh_failed: tuple | None = None  # the manifest an auto refresh last failed on (warned once)

    def _check_index(self, index: IndexDirectory) -> None:
        check_retrievers(index, self.config.first_stage.retrievers())  # a missing component or another model first
        differences = build_differences(self.config, index.build_config)
        if differences:
            raise IndexDirError(f"{index.path} was built with {_settings(differences, 1)} but the config has "
                                f"{_settings(differences, 2)}; rebuild the index with this config, or change the "
                                "config to the index's values")

    @property
    def index(self) -> IndexDirectory:
        """The index as of the last refresh."""
        return self._view.index

    @property
    def retrievers(self) -> list[Retriever]:
        return self._view.retrievers

    def refresh(self) -> bool:
        """Load the index's latest commit, if there is a newer one (unchanged segments and every model are
        reused); queries running meanwhile finish on the state they started with. Returns whether it changed."""
        with self._lock:
            view = self._view
            if not view.index.changed():
                return False
            index = view.index.reload()
            self._check_index(index)  # a rebuild may have put an index of other settings at the path
            models = {r.name: m for r in view.retrievers if (m := r.loaded_model()) is not None}
            self._view = _View(index, open_retrievers(index, self.config.first_stage.retrievers(), models))
            logger.info("%s: now searching commit %d (%d documents)", index.path, index.generation, len(index.store))
            return True

    def _current(self) -> _View:
        if self.config.index.auto_refresh and self._view.index.changed():
            try:
                self.refresh()
            except IndexDirError as exc:
                # A query must not fail because the newest commit cannot be opened now: it answers from the state
                # it has (still open, still whole) and the next query tries again; `refresh()` raises instead.
                identity = manifest_identity(self._view.index.path)
                if identity != self._refresh_failed:
                    self._refresh_failed = identity
                    logger.warning("%s: still searching commit %d; the newer one cannot be loaded: %s",
                                   self._view.index.path, self._view.index.generation, exc)
        return self._view

    def retriever(self, name: str) -> Retriever | None:
        """The first-stage retriever `name`, or None when the pipeline does not run it."""
        return next((r for r in self.retrievers if r.name == name), None)

    @property
    def bm25(self) -> Retriever | None:
        return self.retriever("bm25")

    @property
    def dense(self) -> Retriever | None:
        return self.retriever("dense")

    @classmethod
    def from_yaml(cls, path: str | Path, index_path: str | Path | None = None) -> SearchPipeline:
        config = load_config(path)
        if index_path is not None:
            config.index.path = Path(index_path).expanduser().resolve()
        return cls(config)

    @classmethod
    def from_config(cls, config: dict[str, Any] | PipelineConfig, base_dir: Path | None = None) -> SearchPipeline:
        return cls(load_config(config, base_dir=base_dir))

    @classmethod
    def from_index(cls, path: str | Path, config: str | Path | dict[str, Any] | PipelineConfig | None = None,
                   ray: str | None = None, **kwargs: Any) -> SearchPipeline:
        """The pipeline an index was built for: the config stored in it (query-time settings and reranker
        included), or `config` instead, whose build-time settings must then agree with the index (any that
        disagrees is refused, naming it), so only query-time settings and the reranker can differ.

        Parameters:
            path: the index directory.
            config: a YAML path, dict or `PipelineConfig` to search with instead of the stored one.
            ray: search a sharded index on this Ray cluster ("local", "auto" or an address; default the config's
                `index.ray`; unset: its shards are searched in this process; `retrieval.sharded`).
            kwargs: passed to `SearchPipeline` (`encoder=`, `reranker=`, `models=`).

        Example:
            >>> pipe = SearchPipeline.from_index("/tmp/idx/scifact")  # doctest: +SKIP
            >>> pipe.query("vitamin D and cancer", top_k=3)  # doctest: +SKIP
        """
        path = Path(path).expanduser().resolve()
        given = load_config(config) if config is not None else None
        if is_sharded(path):
            from index.sharded import read_layout

            top = read_layout(path).manifest
            chosen = given if given is not None else _stored(top.pipeline, BuildConfig.model_validate(top.config), path)
            chosen.index.path = path
            if ray is not None:
                chosen.index.ray = ray
            return cls(chosen, **kwargs)
        if ray is not None:
            raise IndexDirError(f"{path} is not a sharded index; --ray searches one built with `twostage build --ray "
                                "... --shards N` (search this one without --ray)")
        index = IndexDirectory.load(path, verify=given.index.verify if given is not None else True)
        chosen = given if given is not None else stored_config(index)
        chosen.index.path = path
        return cls(chosen, index=index, **kwargs)

    @property
    def stages(self) -> list[str]:
        """The stages this pipeline can run, in order: each retriever, the fused list when there are several,
        then the reranker."""
        out = [r.name for r in self.retrievers]
        if len(self.retrievers) > 1:
            out.append(FUSED)
        if self.reranker is not None:
            out.append(RERANK)
        return out

    @property
    def final_stage(self) -> str:
        return self.stages[-1]

    @property
    def first_stage(self) -> str:
        """The stage whose ranking the second stage re-scores: the fused list, or the one retriever's."""
        return FUSED if len(self.retrievers) > 1 else self.retrievers[0].name

    def stage_depth(self, stage: str) -> int:
        """How many documents `stage` ranks per query at most (its configured `top_k`)."""
        if stage == RERANK:
            stage = self.first_stage
        if stage == FUSED:  # at least as deep as the deepest list it fuses, at most fusion.top_k
            return min(self.config.first_stage.fusion.top_k, max(r.config.top_k for r in self.retrievers))
        retriever = self.retriever(stage)
        if retriever is None:
            raise ValueError(f"stage {stage!r} is not available in this pipeline; available: {self.stages}")
        return retriever.config.top_k

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

    def _to_docs(self, view: _View, hits: tuple[np.ndarray, np.ndarray], k: int, cand: _Candidates,
                 stage: str) -> list[tuple[str, float]]:
        """Passage hits to documents (a document scores as its best passage, which is remembered)."""
        rows, scores = hits
        best: dict[str, float] = {}
        best_row = cand.best.setdefault(stage, {})
        row_doc = view.index.store.row_doc_ids
        for row, score in zip(rows.tolist(), scores.tolist()):
            doc_id = row_doc[row]
            if doc_id not in best:
                best[doc_id] = score
                best_row[doc_id] = row
            seen = cand.rows.setdefault(doc_id, [])
            if row not in seen:
                seen.append(row)
        return list(best.items())[:k]

    def _fused_best(self, view: _View, cand: _Candidates) -> None:
        """A fused document's best passage: the one of the retriever that ranks the document highest."""
        ranks = {r.name: {d: i for i, (d, _) in enumerate(cand.lists[r.name])} for r in view.retrievers
                 if r.name in cand.lists}
        best = cand.best.setdefault(FUSED, {})
        for doc_id, _ in cand.lists.get(FUSED, []):
            name = min((n for n in ranks if doc_id in ranks[n]), key=lambda n: ranks[n][doc_id])
            best[doc_id] = cand.best[name][doc_id]

    def _first_stage(self, view: _View, texts: list[str], stage: str,
                     mask: np.ndarray | None, timings: dict[str, float]) -> list[_Candidates]:
        out = [_Candidates() for _ in texts]
        active = [i for i, t in enumerate(texts) if t]
        todo = [texts[i] for i in active]
        factor = _CHUNK_FETCH_FACTOR if self._chunked else 1
        wanted = [r for r in view.retrievers if stage in (r.name, FUSED, RERANK)]
        for retriever in wanted:
            start = time.perf_counter()
            k = retriever.config.top_k
            for i, hits in zip(active, retriever.search_batch(todo, k * factor, mask)):
                out[i].lists[retriever.name] = self._to_docs(view, hits, k, out[i], retriever.name)
            timings[retriever.name] = _ms(start)
        start = time.perf_counter()
        if len(view.retrievers) > 1 and stage in (FUSED, RERANK):
            fusion = self.config.first_stage.fusion
            for cand in out:
                parts = {r.name: cand.lists[r.name] for r in view.retrievers if r.name in cand.lists}
                if not parts:
                    continue
                if fusion.method == "rrf":
                    # weights only when the config sets them, so plain RRF scores stay the textbook 1/(k+rank)
                    fused = rrf(parts, fusion.k, fusion.weights or None)
                else:
                    weights = fusion.weights or dict.fromkeys(parts, 1 / len(view.retrievers))
                    fused = weighted(parts, weights, fusion.normalization)
                cand.lists[FUSED] = fused[: fusion.top_k]
                if self._chunked:
                    self._fused_best(view, cand)
            timings[FUSED] = _ms(start)
        return out

    def rerank_text(self, query: str, title: str, text: str) -> str:
        """The text the reranker reads for a document or passage: title and text (`model_text`), the text cut to
        its best-matching window when `rerank.passage_window` is set (`retrieval.passage_window`)."""
        cfg = self.config.rerank
        if cfg is not None and cfg.passage_window is not None:
            from retrieval.passage_window import best_window

            analyze = self._window_analyzer()
            text = best_window(text, set(analyze(query)), analyze, cfg.passage_window)
        return model_text(title, text)

    def _window_analyzer(self) -> Any:
        bm25 = self.retriever("bm25")
        if bm25 is not None and hasattr(bm25, "analyzer"):
            return bm25.analyzer.tokenize
        return lambda text: re.findall(r"\w+", text.lower())

    def _rerank_inputs(self, view: _View, cand: _Candidates,
                       query: str) -> tuple[list[tuple[str, float]], dict, list]:
        """The re-scored head of one query, each candidate's passage rows and texts (up to rerank.max_passages
        on a chunked index, its first-stage best first)."""
        cfg = self.config.rerank
        head = cand.lists.get(self.first_stage, [])[: cfg.top_n if cfg is not None else 50]
        limit = (cfg.max_passages if cfg is not None else 4) if self._chunked else 1
        best = cand.best.get(self.first_stage, {})
        rows = {}
        for d, _ in head:
            seen = cand.rows.get(d, [])
            top = best.get(d)
            rows[d] = ([top] + [r for r in seen if r != top] if top is not None else list(seen))[:limit]
        texts = view.index.store.passage_texts([r for rs in rows.values() for r in rs])
        docs = view.index.store.get(d for d, _ in head)
        passages = [[self.rerank_text(query, docs[d]["title"], texts[r]) for r in rows[d]] for d, _ in head]
        return head, rows, passages

    def _rerank_apply(self, cand: _Candidates, head: list[tuple[str, float]], rows: dict,
                      per_doc: list[np.ndarray] | None, scores: np.ndarray | None = None) -> None:
        if per_doc is not None:
            scores = np.array([p.max() if len(p) else -np.inf for p in per_doc], dtype=np.float64)
            cand.best[RERANK] = {d: rows[d][int(np.argmax(p))] for (d, _), p in zip(head, per_doc) if len(p)}
        order = np.argsort(-scores, kind="stable")
        cand.own = [(head[i][0], float(scores[i])) for i in order]
        first = cand.lists.get(self.first_stage, [])
        cand.lists[RERANK] = rerank_list(first, scores, Combination.of(self.config.rerank))

    def _rerank(self, view: _View, texts: list[str], cands: list[_Candidates]) -> None:
        """Re-scores every query's head. A reranker with `predict` scores all the queries' pairs in one call, so
        they share its length-sorted batches (query_batch pays for padding once, not per query)."""
        work = [(q, c, *self._rerank_inputs(view, c, q)) for q, c in zip(texts, cands) if q]
        for _, cand, head, _, _ in work:
            if not head:
                cand.lists[RERANK] = []
        work = [w for w in work if w[2]]
        if not work:
            return
        if hasattr(self.reranker, "predict") and hasattr(self.reranker, "score_passages"):
            pairs = [(q, p) for q, _, _, _, passages in work for doc in passages for p in doc]
            flat = self.reranker.predict(pairs)
            at = 0
            for _, cand, head, rows, passages in work:
                per_doc = []
                for doc in passages:
                    per_doc.append(np.asarray(flat[at : at + len(doc)]))
                    at += len(doc)
                self._rerank_apply(cand, head, rows, per_doc)
            return
        for q, cand, head, rows, passages in work:
            if hasattr(self.reranker, "score_passages"):
                self._rerank_apply(cand, head, rows, self.reranker.score_passages(q, passages))
            else:  # a stand-in reranker with only the document-level call
                scores = np.asarray(self.reranker.score_documents(q, passages), dtype=np.float64)
                self._rerank_apply(cand, head, rows, None, scores)

    def _run(self, view: _View, texts: list[str], stage: str, filter: Any = None,
             timings: dict[str, float] | None = None) -> list[_Candidates]:
        if stage not in self.stages:
            raise ValueError(f"stage {stage!r} is not available in this pipeline; available: {self.stages}")
        timings = {} if timings is None else timings
        start = time.perf_counter()
        mask = view.index.filter_mask(filter) if filter is not None else None
        if filter is not None:
            timings["filter"] = _ms(start)
        cands = self._first_stage(view, texts, stage, mask, timings)
        if stage == RERANK:
            start = time.perf_counter()
            self._rerank(view, texts, cands)
            timings[RERANK] = _ms(start)
        return cands

    # -- public API -----------------------------------------------------------------------------------------

    def retrieve(self, queries: Sequence[str], stage: str | None = None, top_k: int | None = None,
                 filter: dict[str, Any] | None = None) -> list[list[tuple[str, float]]]:
        """Ranked `(doc_id, score)` lists of one stage for many queries (what evaluation needs): the stage's whole
        ranking, or its first `top_k`. Queries and `top_k` are checked as `query_batch` checks them; `filter` as
        in `query`."""
        texts = self._checked(queries, top_k, "retrieve")
        stage = stage or self.final_stage
        cands = self._run(self._current(), texts, stage, filter)
        return [c.lists.get(stage, [])[:top_k] for c in cands]

    def query(self, text: str, top_k: int | None = None, passages: bool = False,
              filter: dict[str, Any] | None = None, stage: str | None = None,
              timings: dict[str, float] | None = None) -> list[SearchResult]:
        """Ranked results for one query; an empty or whitespace-only query returns [].

        Parameters:
            text: the query.
            top_k: how many results (default: the config's `output.top_k`).
            passages: also list every matched passage of each result (`SearchResult.passages`; chunked indexes).
            filter: a metadata filter (`index.filters`), e.g. `{"source": "pubmed", "year": {"gte": 2015}}`:
                applied before each retriever's top-k, so `top_k` results come back whenever that many matching
                documents score; scores are the unfiltered ones. A bad filter raises `FilterError` (a
                ValueError) saying where.
            stage: answer from this stage (`bm25`, `dense`, `hybrid`, `rerank`; default the last one); later stages
                are not run.
            timings: a dict to fill with the milliseconds each stage took (`bm25`, `dense`, `hybrid`, `rerank`,
                `filter`, `documents`).

        Example:
            >>> pipe = SearchPipeline.from_index("/tmp/idx/scifact")  # doctest: +SKIP
            >>> [(r.doc_id, r.stages["final"].rank) for r in pipe.query("vitamin D", top_k=2)]  # doctest: +SKIP
            >>> pipe.query("vitamin D", filter={"year": {"gte": 2015}})  # doctest: +SKIP
        """
        return self.query_batch([text], top_k=top_k, passages=passages, filter=filter, stage=stage,
                                timings=timings, _single=True)[0]

    def query_batch(self, texts: Sequence[str], top_k: int | None = None, passages: bool = False,
                    filter: dict[str, Any] | None = None, stage: str | None = None,
                    timings: dict[str, float] | None = None, _single: bool = False) -> list[list[SearchResult]]:
        """Results for many queries (batched encoding), all under the same `filter`, `stage` and `timings` (the
        whole batch's) as in `query`. A non-string anywhere raises TypeError naming its position before any work
        is done; empty queries get []."""
        top_k = self.config.output.top_k if top_k is None else top_k
        clean = self._checked(texts, top_k, "query_batch", _single)
        stage = stage or self.final_stage
        timings = {} if timings is None else timings
        view = self._current()
        cands = self._run(view, clean, stage, filter, timings)
        start = time.perf_counter()
        wanted: list[list[str]] = [[d for d, _ in c.lists.get(stage, [])[:top_k]] for c in cands]
        docs = view.index.store.get(d for ids in wanted for d in ids)
        out = [self._results(view, c, ids, docs, stage, passages) for c, ids in zip(cands, wanted)]
        timings["documents"] = _ms(start)
        return out

    def notes(self) -> list[str]:
        """What is worth reporting once about the queries run so far (e.g. the reranker's truncation counts),
        as one-line strings: a command logs them at its end, instead of a line per query."""
        notes = getattr(self.reranker, "notes", None)
        return list(notes()) if notes is not None else []

    def _results(self, view: _View, cand: _Candidates, ids: list[str], docs: dict[str, dict], stage: str,
                 all_passages: bool) -> list[SearchResult]:
        lists = dict(cand.lists)
        if stage == RERANK:  # the reranker's own view, then the ranking returned
            lists[RERANK], lists["final"] = cand.own, cand.lists.get(RERANK, [])
        stage_maps = {name: {d: (s, r) for r, (d, s) in enumerate(lst, start=1)} for name, lst in lists.items()}
        final = stage_maps.get(stage if stage != RERANK else "final", {})
        best = cand.best.get(stage, {}) or cand.best.get(self.first_stage, {})
        out = []
        for doc_id in ids:
            doc = docs[doc_id]
            stages = {name: StageScore(float(m[doc_id][0]), m[doc_id][1])
                      for name, m in stage_maps.items() if doc_id in m}
            score, rank = final[doc_id]
            result = SearchResult(doc_id, float(score), rank, doc["title"], doc["text"], doc["metadata"], stages)
            if self._chunked:
                rows = cand.rows.get(doc_id, [])
                top = best.get(doc_id, rows[0] if rows else None)
                if top is not None:
                    ordered = [top] + [r for r in rows if r != top] if all_passages else [top]
                    found = self._passages(view, doc["text"], ordered)
                    result.passage = found[0]
                    result.passages = found if all_passages else []
            out.append(result)
        return out

    def _passages(self, view: _View, text: str, rows: list[int]) -> list[Passage]:
        """The passages at `rows` of one document, with their offsets into its text."""
        spans = passage_spans(text, view.index.build_config.chunking)
        out = []
        for row in rows:
            passage_id = view.index.store.passage_ids[row]
            start, end = spans[int(passage_id.rsplit("#", 1)[1])]
            out.append(Passage(passage_id, start, end, text[start:end]))
        return out


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def open_index(path: str | Path, config: PipelineConfig) -> Any:
    """The index at `path` for `config`: an `IndexDirectory`, or a `retrieval.sharded.ShardedIndex` (searched on
    the Ray cluster `config.index.ray`, or in this process)."""
    if is_sharded(path):
        from retrieval.sharded import ShardedIndex

        return ShardedIndex.open(path, config.first_stage.retrievers(), config.index.ray, config.index.verify)
    if config.index.ray is not None:
        raise IndexDirError(f"{path} is not a sharded index; index.ray (--ray) searches one built with `twostage "
                            "build --ray ... --shards N`")
    return IndexDirectory.load(path, verify=config.index.verify)


def _stored(stored: dict[str, Any] | None, built: BuildConfig, path: Path) -> PipelineConfig:
    try:
        return load_config(stored) if stored is not None else PipelineConfig.for_index(built)
    except ConfigError as exc:
        raise IndexDirError(f"{path}: the pipeline config stored in it is not valid "
                            f"({' '.join(str(exc).split())[:300]}); pass a config, or rebuild the index") from None


def stored_config(index: IndexDirectory) -> PipelineConfig:
    """The pipeline config stored in `index` at build time; for an index built before indexes stored one, its
    build settings with no reranker (and a one-line note)."""
    stored = index.manifest.get("pipeline")
    if stored is None:
        logger.warning("%s stores no pipeline config (built before indexes kept one): searching with its build "
                       "settings and no reranker; pass a config to choose another, or rebuild to store one",
                       index.path)
        return PipelineConfig.for_index(index.build_config)
    try:
        return load_config(stored)
    except ConfigError as exc:
        raise IndexDirError(f"{index.path}: the pipeline config stored in manifest.json is not valid "
                            f"({' '.join(str(exc).split())[:300]}); pass a config, or rebuild the index") from None


def _settings(differences: list[tuple[str, Any, Any]], side: int) -> str:
    # JSON values read as YAML: the index's side can be pasted into the config as it is.
    return ", ".join(f"{d[0]}: {json.dumps(d[side])}" for d in differences)

