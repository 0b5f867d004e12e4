"""Searching a sharded index (`index.sharded`): each shard searched with the whole corpus's BM25 statistics, in this
process or by one Ray actor per shard, and the hits merged as the unsharded index ranks them.

A shard returns its top k per query with each hit's corpus position (`shard-NNN.rows.npy`); merging sorts by score,
ties by position, which is exactly the order an unsharded index's top k has, so BM25 (bit for bit), flat dense and
the fused lists equal the unsharded index's. Queries are analysed and encoded once, here; the shards only score.

`ShardedIndex` stands where `SearchPipeline` reads an `IndexDirectory`: `SearchPipeline.from_index(path)` opens a
sharded index in this process, `from_index(path, ray="local")` (or `index.ray` in the config, or `--ray` on the
command line) on a Ray cluster. A shard actor that dies during a query is restarted by Ray and the query sent to it
once more; if that fails too, or a shard does not answer within `SHARD_TIMEOUT_S`, the query fails with a
`ShardError` naming the shard (never a hang).

Example:
    >>> from retrieval import SearchPipeline  # doctest: +SKIP
    >>> pipe = SearchPipeline.from_index("/tmp/idx/sharded", ray="local")  # doctest: +SKIP
    >>> pipe.query("vitamin D and cancer", top_k=3)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.analyzer import Analyzer
from index.bm25 import BM25Scorer, CorpusTerms
from index.cluster import ClusterError, connect
from index.config import BM25Config, BuildConfig, DenseConfig, RetrieverConfig
from index.directory import IndexDirectory
from index.manifest import IndexDirError
from index.sharded import SHARDED_FILE, ShardedLayout, read_layout, shard_of
from retrieval.retrievers import Hits, Retriever

logger = logging.getLogger(__name__)

SHARD_TIMEOUT_S = 60.0
# A shard's hits: corpus positions, scores, and each hit's document and passage ids.
ShardHits = tuple[np.ndarray, np.ndarray, list[str], list[str]]


class ShardError(ClusterError):
    """A shard could not answer; the message names it."""


@dataclass(frozen=True)
class ShardFilter:
    """A filter as shards take it: the filter, and every field the corpus holds, so that a shard none of whose rows
    has a field matches it as absent instead of refusing it (as one index whose other rows hold it would)."""

    filter: Any
    known: tuple[str, ...]


class ShardSearcher:
    """One shard, scored as part of the whole corpus (what a shard actor holds).

    Parameters:
        path: the sharded index's directory.
        shard: which shard.
        configs: the retrievers' configs as JSON (`first_stage.<name>` sections).
        verify: check every file's sha256 at open.
    """

    def __init__(self, path: str | Path, shard: int, configs: dict[str, dict[str, Any]], verify: bool = True,
                 delay_s: float = 0.0) -> None:
        layout = read_layout(path)
        self.shard = shard
        self.index = IndexDirectory.load(layout.shard_path(shard), verify=verify)
        expected = layout.manifest.shard_generations[shard]
        if self.index.generation != expected:
            raise IndexDirError(f"{self.index.path} is at commit {self.index.generation} but {SHARDED_FILE} records "
                                f"{expected}: an update is committing, or was interrupted (then `twostage update "
                                f"--index {layout.path}` finishes it)")
        rows = layout.rows[shard]
        live = np.concatenate([np.ones(s.rows, dtype=bool) if s.keep is None else ~s.deleted
                               for s in self.index.segments])
        if len(rows) != len(live):
            raise IndexDirError(f"{layout.path}: the row positions of shard {shard} do not match its rows; rebuild it")
        self.positions = rows[live]
        self.bm25: BM25Scorer | None = None
        self.dense = None
        self.dense_config: DenseConfig | None = None
        if "bm25" in configs:
            stats = self.index.parts["bm25"]
            self.bm25 = BM25Scorer(stats, BM25Config.model_validate(configs["bm25"]),
                                   layout.corpus.for_shard(stats.vocab))
        if "dense" in configs:
            from index.dense import configure_search

            self.dense_config = DenseConfig.model_validate(configs["dense"])
            self.dense = self.index.parts["dense"]
            for part in getattr(self.dense, "parts", [self.dense]):
                configure_search(part.index, self.dense_config.faiss)
        self.delay_s = delay_s  # fault tests: a slow shard, so that a query is in flight when its actor is killed

    def pid(self) -> int:
        return os.getpid()

    def info(self) -> dict[str, Any]:
        return {"documents": len(self.index.store), "passages": self.index.num_rows,
                "fields": list(self.index.fields.fields)}

    def _mask(self, flt: ShardFilter | None) -> np.ndarray | None:
        return None if flt is None else self.index.filter_mask(flt.filter, frozenset(flt.known))

    def _hits(self, found: list[tuple[np.ndarray, np.ndarray]]) -> list[ShardHits]:
        store = self.index.store
        out = []
        for rows, scores in found:
            rows = np.asarray(rows, dtype=np.int64)
            out.append((self.positions[rows], np.asarray(scores, dtype=np.float64),
                        [store.row_doc_ids[r] for r in rows.tolist()], [store.passage_ids[r] for r in rows.tolist()]))
        return out

    def search_bm25(self, queries: list[tuple[list[str], list[int] | None, float]], k: int,
                    flt: Any = None) -> list[ShardHits]:
        if self.delay_s:
            time.sleep(self.delay_s)
        mask = self._mask(flt)
        return self._hits([self.bm25.search_terms(t, c, k, const, mask) for t, c, const in queries])

    def search_dense(self, embeddings: np.ndarray, k: int, flt: Any = None) -> list[ShardHits]:
        if self.delay_s:
            time.sleep(self.delay_s)
        mask = self._mask(flt)
        if mask is not None and not mask.any():
            return [(np.empty(0, dtype=np.int64), np.empty(0), [], []) for _ in embeddings]
        return self._hits(self.dense.search(embeddings, k, self.dense_config.faiss, mask))

    def documents(self, doc_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self.index.store.get(doc_ids)

    def has(self, doc_ids: list[str]) -> list[bool]:
        held = self.index.document_ids
        return [d in held for d in doc_ids]

    def passage_texts(self, positions: list[int]) -> dict[int, str]:
        local = np.searchsorted(self.positions, positions)  # positions ascend with local rows
        texts = self.index.store.passage_texts(local.tolist())
        return {p: texts[r] for p, r in zip(positions, local.tolist())}


class LocalShards:
    """The shards searched one after another in this process."""

    def __init__(self, searchers: list[ShardSearcher]) -> None:
        self.searchers = searchers

    def __len__(self) -> int:
        return len(self.searchers)

    def call(self, method: str, args: Sequence[tuple], shards: Sequence[int] | None = None) -> list[Any]:
        which = range(len(self.searchers)) if shards is None else shards
        return [getattr(self.searchers[i], method)(*a) for i, a in zip(which, args)]

    def close(self) -> None:
        pass


class ActorCalls:
    """Calls to Ray actors in parallel, each awaited at most `SHARD_TIMEOUT_S`; an actor that died is restarted by
    Ray (`max_restarts`) and the call sent to it once more; a second failure is an error naming the actor."""

    def __init__(self, ray: Any, actors: list[Any], label: str, ping: str) -> None:
        self.ray, self.actors, self.label = ray, actors, label  # label: "shard {i} of ..." names actor i
        self.ping = ping  # a cheap method: answered once a restarted actor is up

    def __len__(self) -> int:
        return len(self.actors)

    def call(self, method: str, args: Sequence[tuple], which: Sequence[int] | None = None) -> list[Any]:
        which = list(range(len(self.actors)) if which is None else which)
        refs = [getattr(self.actors[i], method).remote(*a) for i, a in zip(which, args)]
        return [self._get(i, method, a, ref) for i, a, ref in zip(which, args, refs)]

    def _get(self, i: int, method: str, args: tuple, ref: Any) -> Any:
        exceptions = self.ray.exceptions
        for attempt in (1, 2):
            try:
                return self.ray.get(ref, timeout=SHARD_TIMEOUT_S)
            except exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, Exception):  # the actor's own error (a bad filter, a damaged file)
                    raise cause from None
                raise ShardError(self._message(i, exc)) from None
            except (exceptions.RayActorError, exceptions.ActorUnavailableError) as exc:
                if attempt == 2:
                    raise ShardError(self._message(i, exc, retried=True)) from None
                logger.warning("%s died during %s; retrying on its restarted actor", self.label.format(i=i), method)
                self._await_restart(i, exc)
                ref = getattr(self.actors[i], method).remote(*args)
            except exceptions.GetTimeoutError:
                raise ShardError(f"{self.label.format(i=i)} did not answer within {SHARD_TIMEOUT_S:.0f} s; the query "
                                 "was not answered (is the cluster overloaded?)") from None
        raise AssertionError("unreachable")

    def _await_restart(self, i: int, first: BaseException) -> None:
        """Wait (at most SHARD_TIMEOUT_S) until Ray has restarted actor i; an actor that cannot come back (its
        constructor fails, e.g. its shard is gone) is an error naming it."""
        exceptions = self.ray.exceptions
        deadline = time.monotonic() + SHARD_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                self.ray.get(getattr(self.actors[i], self.ping).remote(), timeout=max(0.1, deadline - time.monotonic()))
                return
            except exceptions.ActorUnavailableError:  # still restarting
                time.sleep(0.2)
            except exceptions.RayActorError as exc:
                raise ShardError(self._message(i, exc, retried=True)) from None
            except exceptions.GetTimeoutError:
                break
        raise ShardError(f"{self.label.format(i=i)} died ({type(first).__name__}) and did not come back within "
                         f"{SHARD_TIMEOUT_S:.0f} s; the query was not answered")

    def _message(self, i: int, exc: BaseException, retried: bool = False) -> str:
        detail = " ".join(str(exc).split())[:160]
        again = ", twice (once after a restart)" if retried else ""
        return f"{self.label.format(i=i)} failed{again}: {type(exc).__name__}: {detail}; the query was not answered"

    def close(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(a)


class RayShards(ActorCalls):
    """One Ray actor per shard (`ShardSearcher`), called in parallel."""

    def __init__(self, ray: Any, path: Path, n: int, configs: dict[str, dict[str, Any]], verify: bool) -> None:
        delay = float(os.environ.get("TWOSTAGE_TEST_SHARD_DELAY", "0") or 0)
        actor = ray.remote(ShardSearcher).options(num_cpus=0, max_restarts=-1, max_task_retries=0)
        super().__init__(ray, [actor.remote(str(path), i, configs, verify, delay) for i in range(n)],
                         f"shard {{i}} of {path}", "pid")
        self.call("info", [()] * n)  # every shard loaded (or its error raised) before the first query


class _Rows:
    """Row -> id lookups of a sharded store: filled from the hits searches return (a sharded index's coordinator
    does not hold every passage's ids)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.ids: dict[int, tuple[int, str, str]] = {}  # position -> shard, doc id, passage id

    def add(self, shard: int, hits: ShardHits) -> None:
        for p, d, pid in zip(hits[0].tolist(), hits[2], hits[3]):
            self.ids[p] = (shard, d, pid)


class _Column:
    def __init__(self, rows: _Rows, field: int) -> None:
        self.rows, self.field = rows, field

    def __getitem__(self, position: int) -> str:
        return self.rows.ids[int(position)][self.field]

    def __len__(self) -> int:
        return self.rows.total


class ShardedStore:
    """`DocumentStore`'s read interface over the shards."""

    def __init__(self, shards: LocalShards | RayShards, documents: int, passages: int) -> None:
        self.shards = shards
        self.rows = _Rows(passages)
        self.row_doc_ids = _Column(self.rows, 1)
        self.passage_ids = _Column(self.rows, 2)
        self.num_documents = documents

    def __len__(self) -> int:
        return self.num_documents

    def get(self, doc_ids: Any) -> dict[str, dict[str, Any]]:
        by_shard: dict[int, list[str]] = {}
        for d in dict.fromkeys(doc_ids):
            by_shard.setdefault(shard_of(d, len(self.shards)), []).append(d)
        out: dict[str, dict[str, Any]] = {}
        for found in self.shards.call("documents", [(ids,) for ids in by_shard.values()], list(by_shard)):
            out.update(found)
        return out

    def passage_texts(self, rows: Any) -> dict[int, str]:
        by_shard: dict[int, list[int]] = {}
        for p in dict.fromkeys(int(r) for r in rows):
            by_shard.setdefault(self.rows.ids[p][0], []).append(p)
        out: dict[int, str] = {}
        for found in self.shards.call("passage_texts", [(sorted(ps),) for ps in by_shard.values()], list(by_shard)):
            out.update(found)
        return out


class ShardedIndex:
    """A sharded index opened for searching (see the module docstring); stands in for `IndexDirectory`."""

    def __init__(self, layout: ShardedLayout, configs: Mapping[str, RetrieverConfig], ray: str | None = None,
                 verify: bool = True) -> None:
        self.layout = layout
        self.path = layout.path
        self.ray_address = ray
        self.verify = verify
        m = layout.manifest
        self.manifest = {"config": m.config, "pipeline": m.pipeline, "models": m.models, "components": m.components,
                         "embedding_dim": m.embedding_dim, "counts": m.counts, "generation": layout.generation,
                         "shards": m.shards}
        self.build_config = BuildConfig.model_validate(m.config)
        self.configs = {n: c.model_dump(mode="json") for n, c in configs.items()}
        n = len(m.shards)
        if ray is None:
            self.shards: LocalShards | RayShards = LocalShards(
                [ShardSearcher(layout.path, i, self.configs, verify) for i in range(n)])
        else:
            self.shards = RayShards(connect(ray), layout.path, n, self.configs, verify)
        infos = self.shards.call("info", [()] * n)
        self.store = ShardedStore(self.shards, sum(i["documents"] for i in infos), sum(i["passages"] for i in infos))
        self.field_names = tuple(sorted({f for i in infos for f in i["fields"]}))
        self.segments: list[Any] = []
        self._identity = _identity(layout.path)

    sharded = True

    @classmethod
    def open(cls, path: str | Path, configs: Mapping[str, RetrieverConfig], ray: str | None = None,
             verify: bool = True) -> ShardedIndex:
        return cls(read_layout(path), configs, ray, verify)

    @property
    def remote(self) -> bool:
        """Whether the shards are Ray actors (a query then waits on other processes)."""
        return isinstance(self.shards, RayShards)

    @property
    def generation(self) -> int:
        return self.layout.generation

    @property
    def num_rows(self) -> int:
        return self.store.rows.total

    def model(self, component: str) -> str | None:
        return self.manifest["models"].get(component)

    def changed(self) -> bool:
        return _identity(self.path) != self._identity

    def reload(self) -> ShardedIndex:
        fresh = ShardedIndex.open(self.path, {n: _config(n, c) for n, c in self.configs.items()}, self.ray_address,
                                  self.verify)
        # Queries still running on this state finish before its shards go (a Ray actor per shard, or nothing).
        threading.Timer(SHARD_TIMEOUT_S, self.shards.close).start()
        return fresh

    def filter_mask(self, flt: Any) -> Any:
        from index.filters import Filter, parse_filter

        parse_filter(flt) if not isinstance(flt, Filter) else None  # its syntax checked here, its fields by each shard
        return ShardFilter(flt, self.field_names)

    @property
    def document_ids(self) -> _Membership:
        return _Membership(self)

    def maintenance(self) -> list[str]:
        return []

    def open_retrievers(self, configs: Mapping[str, RetrieverConfig], models: Mapping[str, Any]) -> list[Retriever]:
        out: list[Retriever] = []
        for name, config in configs.items():
            if name == "bm25":
                out.append(ShardedBM25(self, config))
            elif name == "dense":
                out.append(ShardedDense(self, config, models.get("dense")))
            else:
                raise IndexDirError(f"{self.path} is sharded, and sharded indexes serve bm25 and dense; set "
                                    f"first_stage.{name}.enabled: false")
        return out

    def close(self) -> None:
        self.shards.close()

    def merge(self, per_shard: list[list[ShardHits]], k: int) -> list[Hits]:
        """Per query, the shards' hits merged: by score, ties by corpus position (the unsharded index's order)."""
        out = []
        for q in range(len(per_shard[0]) if per_shard else 0):
            positions, scores = [], []
            for s, hits in enumerate(per_shard):
                self.store.rows.add(s, hits[q])
                positions.append(hits[q][0])
                scores.append(hits[q][1])
            pos, sc = np.concatenate(positions), np.concatenate(scores)
            order = np.lexsort((pos, -sc))[:k]
            out.append((pos[order], sc[order]))
        return out


class _Membership:
    def __init__(self, index: ShardedIndex) -> None:
        self.index = index

    def __contains__(self, doc_id: str) -> bool:
        s = shard_of(doc_id, len(self.index.shards))
        return self.index.shards.call("has", [([doc_id],)], [s])[0][0]


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path / SHARDED_FILE)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _config(name: str, data: dict[str, Any]) -> RetrieverConfig:
    from index.components import config_class

    return config_class(name).model_validate(data)


class ShardedBM25(Retriever):
    """BM25 over the shards: queries analysed and resolved against the corpus's vocabulary here, scored there."""

    def __init__(self, index: ShardedIndex, config: BM25Config, name: str = "bm25") -> None:
        self.name = name
        self.config = config
        self.index = index
        self.analyzer = Analyzer(index.build_config.bm25.analyzer)
        corpus = index.layout.corpus
        self.terms = CorpusTerms(corpus.vocab, corpus.doc_freq, corpus.num_docs, config, corpus.okapi_mean)

    def search_batch(self, queries: Sequence[str], k: int, filter: Any = None) -> list[Hits]:
        resolved = [self.terms.resolve(self.analyzer.tokenize(q)) for q in queries]
        n = len(self.index.shards)
        return self.index.merge(self.index.shards.call("search_bm25", [(resolved, k, filter)] * n), k)


class ShardedDense(Retriever):
    """Dense over the shards: queries encoded once here, each shard's FAISS index searched there."""

    model_kind = "embedding model"

    def __init__(self, index: ShardedIndex, config: DenseConfig, encoder: Any | None = None,
                 name: str = "dense") -> None:
        from index.dense import Encoder

        self.name = name
        self.config = config
        self.index = index
        self.encoder = encoder or Encoder(config.model, config)
        dim = index.manifest["embedding_dim"]
        if self.encoder.dim != dim:
            raise IndexDirError(f"the encoder {config.model!r} gives {self.encoder.dim}-dim vectors but the index "
                                f"holds {dim}-dim ones; rebuild the index with this model")

    def loaded_model(self) -> Any:
        return self.encoder

    def search_batch(self, queries: Sequence[str], k: int, filter: Any = None) -> list[Hits]:
        if not queries:
            return []
        emb = np.asarray(self.encoder.encode_queries(queries), dtype=np.float32)
        n = len(self.index.shards)
        return self.index.merge(self.index.shards.call("search_dense", [(emb, k, filter)] * n), k)


class RayReranker:
    """The cross-encoder as its own pool of Ray actors (one per GPU of the cluster, else `actors`): the merged
    candidates' pairs are split across them in contiguous runs and the scores put back in order. A dead actor is
    restarted and its run sent once more, as for shards."""

    MIN_PAIRS = 16  # below this per actor, splitting costs more than it saves

    def __init__(self, ray: Any, config: Any, actors: int | None = None) -> None:
        from rerank.cross_encoder import CrossEncoderReranker

        self.ray = ray
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n = actors or gpus or 1
        actor = ray.remote(CrossEncoderReranker).options(num_cpus=0 if gpus else 1, num_gpus=1 if gpus else 0,
                                                          max_restarts=-1, max_task_retries=0)
        self.actors = [actor.remote(config=config) for _ in range(n)]
        self.model_name = getattr(config, "model", None)
        self.backend, self.precision = getattr(config, "backend", None), getattr(config, "precision", None)
        self._calls = ActorCalls(ray, self.actors, "reranker actor {i}", "notes")
        self._calls.call("notes", [()] * n)  # every actor loaded (or its error raised) before the first query

    def predict(self, pairs: Sequence[tuple[str, str]], show_progress: bool = False, **_: Any) -> np.ndarray:
        pairs = list(pairs)
        if not pairs:
            return np.empty(0, dtype=np.float32)
        n = max(1, min(len(self.actors), len(pairs) // self.MIN_PAIRS))
        bounds = np.linspace(0, len(pairs), n + 1).astype(int)
        runs = [(pairs[a:b],) for a, b in zip(bounds[:-1], bounds[1:])]
        return np.concatenate([np.asarray(r) for r in self._calls.call("predict", runs, list(range(n)))])

    def score_passages(self, query: str, passages: Sequence[Sequence[str]]) -> list[np.ndarray]:
        flat = self.predict([(query, p) for doc in passages for p in doc])
        out, at = [], 0
        for doc in passages:
            out.append(flat[at : at + len(doc)])
            at += len(doc)
        return out

    def notes(self) -> list[str]:
        return []

    def close(self) -> None:
        self._calls.close()
