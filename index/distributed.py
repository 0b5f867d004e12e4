"""Building an index on a Ray cluster: this process reads the corpus once (streamed) and writes the document
stores; blocks of passages go to a pool of worker actors (each loads the models once) that tokenize them for BM25
and encode them for the dense index; their parts come back in order and are merged exactly.

Without `shards` the result is the index a single-process build makes (the same BM25 arrays, embeddings within
float rounding of the batch composition); with `shards=N` it is N such indexes, documents assigned by a hash of
their id (`index.sharded.shard_of`), and a top-level `sharded.json` with the corpus's BM25 statistics, so shard
scores equal unsharded ones. Either way the build runs in a temp folder and is swapped in atomically like any
build (`index.builder`): a worker that dies is restarted and its block retried (`retries` times), and a build that
fails anyway leaves the previous index untouched.

Example:
    >>> from index.distributed import build_on_ray  # doctest: +SKIP
    >>> build_on_ray("corpus.jsonl", "/tmp/idx/sharded", config, address="local", shards=4)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from index.builder import LIBRARY_VERSION, BuildReport, SegmentBuild, build_index, merge_info, write_built
from index.chunking import chunk_document
from index.cluster import ClusterError, cluster_cpus, connect
from index.components import ENCODE_BLOCK, Component, component_class
from index.config import BuildConfig
from index.documents import ReadStats, model_text, read_corpus
from index.fields import FieldIndex
from index.progress import bar
from index.sharded import CorpusStats, save_corpus_stats, save_rows, shard_name, shard_of, write_sharded
from index.store import StoreWriter

logger = logging.getLogger(__name__)

# Passages per task: large enough that a task's overhead (~1 ms here) is small against its work, small enough that
# a few blocks in flight per worker keep this process's memory bounded; the block a single-process build encodes
# at once, so that the embeddings are the same bits.
BLOCK_PASSAGES = ENCODE_BLOCK
IN_FLIGHT_PER_WORKER = 2
BLOCK_TIMEOUT_S = 1800.0


class BlockWorker:
    """A Ray actor: the enabled components, their models loaded once, turning blocks of passages into parts."""

    def __init__(self, config: dict[str, Any], kill_at: str | None = None) -> None:
        build = BuildConfig.model_validate(config)
        self.components = [component_class(n)(n, c) for n, c in build.retrievers().items()]
        self.kill_at = kill_at

    def pid(self) -> int:
        return os.getpid()

    def encode(self, number: int, texts: list[str]) -> tuple[dict[str, Any], float]:
        self._test_kill(number)
        start = time.perf_counter()
        return {c.name: c.encode_block(texts) for c in self.components}, time.perf_counter() - start

    def _test_kill(self, number: int) -> None:
        # Fault tests only (TWOSTAGE_TEST_KILL_BLOCK="N:marker"): the worker that gets block N first dies, as a
        # killed machine would; the marker keeps its restarted self alive.
        if self.kill_at is None:
            return
        block, _, marker = self.kill_at.partition(":")
        if int(block) == number and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)


class _Output:
    """One index being written: its store, metadata, components fed by blocks, and its rows' corpus positions."""

    def __init__(self, directory: Path, config: BuildConfig) -> None:
        directory.mkdir(exist_ok=True)
        self.directory = directory
        self.writer = StoreWriter(directory, chunked=config.chunking is not None)
        self.components: list[Component] = [component_class(n)(n, c) for n, c in config.retrievers().items()]
        self.metadata: list[dict[str, Any]] = []
        self.positions: list[int] = []
        self.documents = 0

    def finish(self, read_seconds: float, show_progress: bool) -> SegmentBuild:
        files = [self.writer.close()]
        files += FieldIndex.build(self.metadata).save(self.directory)
        self.metadata = []
        phases = {"read": read_seconds}
        info: dict[str, Any] = {"components": []}
        for component in self.components:
            start = time.perf_counter()
            merge_info(info, component.finish(self.directory, show_progress))
            phases[component.name] = time.perf_counter() - start
            files += list(type(component).FILES)
            info["components"].append(component.name)
        return SegmentBuild(files, self.writer.rows, self.documents, phases, info)


def build_on_ray(corpus: str | Path, output: str | Path, config: BuildConfig, address: str = "local",
                 shards: int | None = None, workers: int | None = None, block_passages: int = BLOCK_PASSAGES,
                 retries: int = 1, show_progress: bool = True, pipeline: dict[str, Any] | None = None,
                 num_cpus: int | None = None) -> BuildReport:
    """Build `corpus` into `output` on Ray (see the module docstring).

    Parameters:
        corpus, output, config, show_progress, pipeline: as `index.builder.build_index`.
        address: "local" (a cluster in this process), "auto" or a cluster address (`index.cluster.connect`).
        shards: write N shard indexes and a `sharded.json` (None: one index).
        workers: worker actors (default: one per CPU of the cluster).
        block_passages: passages per task.
        retries: how often a block whose worker died is retried on the restarted worker (0: the build fails).
        num_cpus: CPUs of a local cluster (default: the machine's).
    """
    if shards is not None and shards < 1:
        raise ValueError(f"--shards must be at least 1, got {shards}")
    unsupported = [n for n in config.retrievers() if n not in ("bm25", "dense")]
    if unsupported:
        raise ValueError(f"a Ray build makes bm25 and dense indexes; the config also enables {', '.join(unsupported)}"
                         f" (set first_stage.{unsupported[0]}.enabled: false, or build without --ray)")
    ray = connect(address, num_cpus)
    into = _RayBuild(ray, shards, workers, block_passages, retries)
    report = build_index(corpus, output, config, show_progress=show_progress, pipeline=pipeline, into=into)
    report.details.update(into.details)
    return report


class _RayBuild:
    """`build_index`'s `into` for a Ray build (and a sharded layout)."""

    def __init__(self, ray: Any, shards: int | None, workers: int | None, block_passages: int, retries: int) -> None:
        self.ray, self.shards, self.block_passages, self.retries = ray, shards, block_passages, retries
        self.workers = workers or cluster_cpus()
        self.details: dict[str, Any] = {}

    def __call__(self, corpus: Path, tmp: Path, config: BuildConfig, models: dict[str, Any], show_progress: bool,
                 pipeline: dict[str, Any] | None) -> BuildReport:
        n = self.shards or 1
        outputs = [_Output(tmp / shard_name(i) if self.shards else tmp, config) for i in range(n)]
        stats = ReadStats()
        start = time.perf_counter()
        corpus_terms, corpus_df, lengths = self._run(corpus, config, outputs, stats, show_progress)
        read = time.perf_counter() - start
        reports = []
        for out in outputs:
            shard_stats = ReadStats(documents=out.documents, skipped_empty=0 if self.shards else stats.skipped_empty,
                                    skipped_files={} if self.shards else dict(stats.skipped_files))
            reports.append(write_built(corpus, out.directory, config, pipeline, shard_stats,
                                       out.finish(read, show_progress)))
        phases = {"read+workers": read}
        for r in reports:
            for k, v in r.phases.items():
                if k != "read":
                    phases[k] = phases.get(k, 0.0) + v
        if self.shards:
            start = time.perf_counter()
            self._write_top(tmp, config, pipeline, outputs, reports, corpus_terms, corpus_df, lengths, stats)
            phases["sharded manifest"] = time.perf_counter() - start
        return BuildReport(tmp, stats.documents, sum(r.passages for r in reports), stats.skipped_empty, 0.0, 0,
                           phases, dict(stats.skipped_files))

    def _run(self, corpus: Path, config: BuildConfig, outputs: list[_Output], stats: ReadStats,
             show_progress: bool) -> tuple[dict[str, int], list[int], list[int]]:
        """Read the corpus, send blocks to the workers, add their parts in order; returns the corpus's BM25
        vocabulary (first-seen order), document frequencies and passage lengths."""
        from ray.util import ActorPool

        ray = self.ray
        kill_at = os.environ.get("TWOSTAGE_TEST_KILL_BLOCK")
        actor = ray.remote(BlockWorker).options(num_cpus=1, max_restarts=self.retries,
                                                 max_task_retries=self.retries)
        pool_actors = [actor.remote(config.model_dump(mode="json"), kill_at) for _ in range(self.workers)]
        pool = ActorPool(pool_actors)
        pending: deque[np.ndarray] = deque()  # per block in flight: each passage's output
        corpus_terms: dict[str, int] = {}
        corpus_df: list[int] = []
        lengths: list[int] = []
        position = 0
        texts: list[str] = []
        owners: list[int] = []
        submitted = done = 0
        work_seconds = 0.0
        started = time.perf_counter()

        def collect() -> None:
            nonlocal done, work_seconds
            owner = pending.popleft()
            try:
                parts, seconds = pool.get_next(timeout=BLOCK_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - translated into one line below
                raise _block_error(ray, exc, done, self.retries) from None
            work_seconds += seconds
            bm25 = parts.get("bm25")
            if bm25 is not None:  # the corpus's statistics, counted in block order = corpus order
                for term, df in zip(bm25.vocab, bm25.doc_freq.tolist()):
                    i = corpus_terms.setdefault(term, len(corpus_df))
                    if i == len(corpus_df):
                        corpus_df.append(df)
                    else:
                        corpus_df[i] += df
                lengths.append(int(bm25.doc_len.sum()))
            for s, out in enumerate(outputs):
                rows = np.flatnonzero(owner == s) if len(outputs) > 1 else None
                if rows is not None and not len(rows):
                    continue
                for component in out.components:
                    component.add_block(parts[component.name], rows)
            done += 1

        def submit() -> None:
            nonlocal submitted, texts, owners
            pool.submit(lambda a, v: a.encode.remote(*v), (submitted, texts))
            pending.append(np.asarray(owners, dtype=np.int32))
            submitted += 1
            texts, owners = [], []
            while len(pending) >= self.workers * IN_FLIGHT_PER_WORKER:
                collect()

        for doc in bar(read_corpus(corpus, config.corpus, stats), "reading documents (Ray workers encode)", "doc",
                       show=show_progress):
            s = shard_of(doc.doc_id, len(outputs)) if len(outputs) > 1 else 0
            out = outputs[s]
            passages = list(chunk_document(doc, config.chunking))
            out.writer.add(doc, passages)
            out.documents += 1
            for p in passages:
                out.metadata.append(doc.metadata)
                out.positions.append(position)
                position += 1
                texts.append(model_text(p.title, p.text))
                owners.append(s)
                if len(texts) >= self.block_passages:
                    submit()
        if texts:
            submit()
        while pending:
            collect()
        elapsed = time.perf_counter() - started
        for a in pool_actors:
            ray.kill(a)
        self.details = {"workers": self.workers, "tasks": submitted, "tasks_per_s": submitted / elapsed if elapsed
                        else 0.0, "task_seconds": work_seconds, "wall_seconds": elapsed,
                        "shards": self.shards or 0}
        return corpus_terms, corpus_df, lengths

    def _write_top(self, tmp: Path, config: BuildConfig, pipeline: dict[str, Any] | None, outputs: list[_Output],
                   reports: list[BuildReport], terms: dict[str, int], df: list[int], lengths: list[int],
                   stats: ReadStats) -> None:
        files: list[str] = []
        bm25 = None
        if config.bm25 is not None:
            corpus = CorpusStats(list(terms), np.asarray(df, dtype=np.int64), sum(r.passages for r in reports),
                                 sum(lengths))
            files += save_corpus_stats(tmp, corpus, 0)
            bm25 = {"num_docs": corpus.num_docs, "total_length": corpus.total_length,
                    "okapi_mean_idf": corpus.okapi_mean}
        for i, out in enumerate(outputs):
            files.append(save_rows(tmp, i, np.asarray(out.positions, dtype=np.int64), 0))
        from index.manifest import read_manifest

        first = read_manifest(outputs[0].directory)
        content = {
            "shards": [shard_name(i) for i in range(len(outputs))],
            "shard_generations": [0] * len(outputs),
            "bm25": bm25,
            "next_row": sum(r.passages for r in reports),
            "counts": {"documents": stats.documents, "passages": sum(r.passages for r in reports),
                       "skipped_empty": stats.skipped_empty},
            "config": first["config"],
            "pipeline": pipeline,
            "models": first.get("models", {}),
            "components": first.get("components", []),
            "embedding_dim": first.get("embedding_dim"),
            "library_version": LIBRARY_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_sharded(tmp, content, files)


def _block_error(ray: Any, exc: BaseException, number: int, retries: int) -> Exception:
    """One line for a block that failed: a worker that died (after `retries` restarts), a timeout, or the error
    the worker raised (its own type, e.g. a model that cannot be loaded)."""
    exceptions = ray.exceptions
    if isinstance(exc, exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            return cause
    if isinstance(exc, (exceptions.RayActorError, exceptions.WorkerCrashedError)):
        tried = f"after {retries} restart{'s' if retries != 1 else ''}" if retries else "with retries off"
        return ClusterError(f"a Ray worker died while encoding block {number} ({tried}); the build was abandoned "
                            "and the output was not changed; rerun it (a build retries a dead worker's block "
                            "`retries` times)")
    if isinstance(exc, TimeoutError):
        return ClusterError(f"block {number} did not finish within {BLOCK_TIMEOUT_S:.0f} s; the build was abandoned "
                            "and the output was not changed; check the cluster's workers")
    return ClusterError(f"block {number} failed on Ray ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")

