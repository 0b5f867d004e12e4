"""Updating a sharded index: each document goes to the shard that owns its id (`index.sharded.shard_of`), each
shard commits as any index does (`index.writer.IndexWriter`), then the top level is rewritten: the corpus's BM25
statistics of the live documents, the new rows' corpus positions, and `sharded.json` (renamed over the old one).

The corpus vocabulary keeps its order (terms no live document holds are dropped) and new terms follow in the
order the added passages hold them, as an unsharded index that got the same updates orders them; so document
frequencies, N and the average length are exact, and scores equal the unsharded index's (within float rounding of
okapi's floor, whose mean IDF is summed in vocabulary order). An update interrupted between the shards' commits
and the top level's is finished by the next writer (readers refuse the mixed state, naming the fix).

Example:
    >>> from index.sharded_writer import ShardedWriter  # doctest: +SKIP
    >>> with ShardedWriter("/tmp/idx/sharded") as w:  # doctest: +SKIP
    ...     w.upsert([{"_id": "d9", "text": "new text"}]); w.commit()
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from index.analyzer import Analyzer
from index.bm25 import BM25Stats
from index.chunking import chunk_document
from index.config import BuildConfig
from index.documents import Document, model_text, read_documents
from index.lock import WriterLock
from index.manifest import fsync_dir
from index.sharded import (
    SHARDED_FILE,
    SHARDED_LEFTOVER,
    CorpusStats,
    read_layout,
    save_corpus_stats,
    save_rows,
    shard_of,
    write_sharded,
)
from index.writer import IndexWriter, UpdateReport

logger = logging.getLogger(__name__)


class ShardedWriter:
    """The one writer of a sharded index: `add`, `upsert`, `delete`, `commit`, `merge` as `IndexWriter`'s.

    Parameters:
        path: the sharded index (`twostage build --ray ... --shards N`).
        config, models, show_progress: as `IndexWriter`'s, for every shard.
    """

    def __init__(self, path: str | Path, config: BuildConfig | None = None, models: dict[str, Any] | None = None,
                 show_progress: bool = False) -> None:
        self.path = Path(path).expanduser().resolve()
        self._lock = WriterLock(self.path).acquire()
        self.writers: list[IndexWriter] = []
        try:
            self.layout = read_layout(self.path)
            n = len(self.layout.manifest.shards)
            for i in range(n):
                self.writers.append(IndexWriter(self.layout.shard_path(i), config, models, show_progress))
            self.config = self.writers[0].config
            self.analyzer = Analyzer(self.config.bm25.analyzer) if self.config.bm25 is not None else None
            self._order: dict[str, Document] = {}  # pending adds in the order an unsharded writer keeps them
            found = [w.index.generation for w in self.writers]
            if found != self.layout.manifest.shard_generations:
                logger.warning("%s: the last update stopped between the shards' commits and %s; finishing it",
                               self.path, SHARDED_FILE)
                self._write_top(UpdateReport(self.path))
        except BaseException:
            self.close()
            raise

    def _writer(self, doc_id: str) -> IndexWriter:
        return self.writers[shard_of(doc_id, len(self.writers))]

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._writer(doc_id)

    @property
    def pending(self) -> bool:
        return any(w.pending for w in self.writers)

    def _checked(self, docs: Iterable[Document | dict[str, Any]]) -> list[Document]:
        """The batch read and refused as a whole when an id repeats (each shard would see only its part)."""
        batch = list(read_documents(docs))
        ids = [d.doc_id for d in batch]
        if len(set(ids)) != len(ids):
            self._writer(ids[0]).add([d for d in batch if ids.count(d.doc_id) > 1])  # raises, naming the id
        return batch

    def _route(self, batch: list[Document]) -> dict[int, list[Document]]:
        by_shard: dict[int, list[Document]] = {}
        for doc in batch:
            by_shard.setdefault(shard_of(doc.doc_id, len(self.writers)), []).append(doc)
        return by_shard

    def add(self, docs: Iterable[Document | dict[str, Any]]) -> int:
        """As `IndexWriter.add`; a batch refused by one shard changes no shard."""
        batch = self._checked(docs)
        taken = [d for d in batch if d.doc_id in self]
        if taken:  # checked across shards first, so that no shard takes part of a refused batch
            self._writer(taken[0].doc_id).add(taken[:1])  # raises, naming the id
        added = 0
        for shard, part in self._route(batch).items():
            added += self.writers[shard].add(part)
        for doc in batch:
            self._order[doc.doc_id] = doc
        return added

    def upsert(self, docs: Iterable[Document | dict[str, Any]]) -> int:
        batch = self._checked(docs)
        done = 0
        for shard, part in self._route(batch).items():
            done += self.writers[shard].upsert(part)
        for doc in batch:
            self._order.pop(doc.doc_id, None)
            self._order[doc.doc_id] = doc
        return done

    def delete(self, doc_ids: Iterable[str], strict: bool = False) -> int:
        ids = list(dict.fromkeys(doc_ids))
        if strict:
            unknown = [i for i in ids if isinstance(i, str) and i not in self]
            if unknown:
                self._writer(unknown[0]).delete(unknown[:1], strict=True)  # raises, naming the id
        by_shard: dict[int, list[str]] = {}
        for doc_id in ids:
            if not isinstance(doc_id, str):
                return self.writers[0].delete([doc_id])  # raises, naming the type
            by_shard.setdefault(shard_of(doc_id, len(self.writers)), []).append(doc_id)
            self._order.pop(doc_id, None)
        return sum(self.writers[s].delete(part) for s, part in by_shard.items())

    def rollback(self) -> None:
        for w in self.writers:
            w.rollback()
        self._order = {}

    def commit(self) -> UpdateReport:
        """Commit every shard with changes, then the top level; returns the totals."""
        start = time.perf_counter()
        report = UpdateReport(self.path)
        if not self.pending:
            self.rollback()
            return self._totals(report, start)
        new_terms = self._new_terms()
        positions = self._new_positions()
        for w in self.writers:
            if w.pending:
                r = w.commit()
                for key in ("added", "replaced", "deleted", "unknown", "skipped_empty"):
                    setattr(report, key, getattr(report, key) + getattr(r, key))
        self._write_top(report, new_terms, positions)
        self._order = {}
        return self._totals(report, start)

    def merge(self) -> UpdateReport:
        """Commit what is pending, then merge every shard (`IndexWriter.merge`)."""
        if self.pending:
            self.commit()
        start = time.perf_counter()
        report = UpdateReport(self.path, merged=True)
        before = [w.index.generation for w in self.writers]
        lives = [self._live_positions(i) for i in range(len(self.writers))]
        for w in self.writers:
            w.merge()
        if [w.index.generation for w in self.writers] != before:
            self._write_top(report, merged=lives)
        return self._totals(report, start)

    # -- the top level ----------------------------------------------------------------------------------------

    def _new_terms(self) -> list[str]:
        """The pending adds' BM25 terms in first-seen order (their passages in add order)."""
        if self.analyzer is None:
            return []
        seen: dict[str, None] = {}
        for doc in self._order.values():
            for p in chunk_document(doc, self.config.chunking):
                seen.update(dict.fromkeys(self.analyzer.tokenize(model_text(p.title, p.text))))
        return list(seen)

    def _new_positions(self) -> dict[str, list[int]]:
        """Corpus positions for the pending adds' passages, in add order (per document)."""
        at = self.layout.manifest.next_row
        out: dict[str, list[int]] = {}
        for doc in self._order.values():
            n = sum(1 for _ in chunk_document(doc, self.config.chunking))
            out[doc.doc_id] = list(range(at, at + n))
            at += n
        return out

    def _live_positions(self, shard: int) -> np.ndarray:
        index = self.writers[shard].index
        live = np.concatenate([~s.deleted for s in index.segments])
        return self.layout.rows[shard][live]

    def _write_top(self, report: UpdateReport, new_terms: list[str] | None = None,
                   positions: dict[str, list[int]] | None = None, merged: list[np.ndarray] | None = None) -> None:
        old = self.layout
        generation = old.generation + 1
        files: list[str] = []
        bm25 = None
        next_row = old.manifest.next_row
        rows_out: list[np.ndarray] = []
        for i, w in enumerate(self.writers):
            index = w.index
            if merged is not None:
                rows = merged[i]
            else:
                rows = old.rows[i]
                total = sum(s.rows for s in index.segments)
                if total > len(rows):  # the shard's new segment: its documents' positions, in its row order
                    new_ids = index.segments[-1].store.row_doc_ids
                    extra = _positions_for(new_ids, positions or {})
                    if extra is None:  # finishing an interrupted update: the add order is lost, keep shard order
                        extra = np.arange(next_row, next_row + len(new_ids))
                    rows = np.concatenate([rows, extra])
            rows_out.append(np.asarray(rows, dtype=np.int64))
        next_row = max([next_row, *(int(r.max()) + 1 for r in rows_out if len(r))])
        if self.config.bm25 is not None:
            corpus = self._corpus_stats(new_terms or [])
            files += save_corpus_stats(self.path, corpus, generation)
            bm25 = {"num_docs": corpus.num_docs, "total_length": corpus.total_length,
                    "okapi_mean_idf": corpus.okapi_mean}
        for i, rows in enumerate(rows_out):
            files.append(save_rows(self.path, i, rows, generation))
        m = old.manifest
        content = m.model_dump(mode="json", exclude={"files", "format_version", "kind", "hash"})
        content.update(shard_generations=[w.index.generation for w in self.writers], bm25=bm25, next_row=next_row,
                       counts={"documents": sum(len(w.index.store) for w in self.writers),
                               "passages": sum(w.index.num_rows for w in self.writers),
                               "skipped_empty": m.counts.get("skipped_empty", 0)})
        write_sharded(self.path, content, files)
        self.layout = read_layout(self.path)
        self._remove_leftovers()

    def _corpus_stats(self, new_terms: list[str]) -> CorpusStats:
        """The live corpus's statistics: the old vocabulary's order, then new terms in the order added."""
        parts: list[BM25Stats] = [w.index.parts["bm25"] for w in self.writers]
        df: dict[str, int] = {}
        for stats in parts:
            for term, n in zip(stats.vocab, stats.doc_freq.tolist()):
                df[term] = df.get(term, 0) + n
        order = list(dict.fromkeys([*(self.layout.corpus.vocab if self.layout.corpus else []), *new_terms, *df]))
        vocab = [t for t in order if df.get(t, 0) > 0]
        return CorpusStats(vocab, np.asarray([df[t] for t in vocab], dtype=np.int64),
                           sum(p.num_docs for p in parts), sum(int(p.doc_len.sum()) for p in parts))

    def _remove_leftovers(self) -> None:
        listed = set(self.layout.manifest.files) | set(self.layout.manifest.shards) | {SHARDED_FILE}
        removed = 0
        for name in os.listdir(self.path):
            if name not in listed and SHARDED_LEFTOVER.fullmatch(name) and (self.path / name).is_file():
                (self.path / name).unlink()
                removed += 1
        if removed:
            fsync_dir(self.path)

    def _totals(self, report: UpdateReport, start: float) -> UpdateReport:
        report.generation = self.layout.generation
        report.segments = sum(len(w.index.segments) for w in self.writers)
        report.documents = sum(len(w.index.store) for w in self.writers)
        report.passages = sum(w.index.num_rows for w in self.writers)
        report.seconds = time.perf_counter() - start
        report.advice = [a for w in self.writers for a in w.index.maintenance()]
        return report

    def close(self) -> None:
        for w in self.writers:
            w.close()
        self._lock.release()

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _positions_for(doc_ids: list[str], positions: dict[str, list[int]]) -> np.ndarray | None:
    """The corpus positions of a new segment's rows (one per passage, its documents' passages in order)."""
    out: list[int] = []
    taken: dict[str, int] = {}
    for d in doc_ids:
        mine = positions.get(d)
        if mine is None:
            return None
        out.append(mine[taken.get(d, 0)])
        taken[d] = taken.get(d, 0) + 1
    return np.asarray(out, dtype=np.int64)


def open_writer(path: str | Path, config: BuildConfig | None = None, models: dict[str, Any] | None = None,
                show_progress: bool = False) -> IndexWriter | ShardedWriter:
    """The writer for the index at `path`: `ShardedWriter` for a sharded one, else `IndexWriter`."""
    from index.sharded import is_sharded

    cls = ShardedWriter if is_sharded(path) else IndexWriter
    return cls(path, config, models, show_progress)
