"""Changing an index in place: add, upsert and delete documents, each batch committed atomically.

A commit writes the new documents as one new segment (only they are tokenized and encoded), the deleted rows of
older segments as new tombstone files, then renames a new manifest over the old one: that rename is the commit.
A crash (SIGKILL) before it leaves the index exactly as it was (the files written are unlisted, and the next
writer removes them); after it, exactly as committed. Readers that loaded the old manifest keep their files (a
file is only removed once no manifest lists it, and open files outlive removal) and see the commit on `reload`.
`merge` folds every segment's live rows into one (no re-encoding: the stored statistics and vectors are copied),
retraining approximate FAISS indexes.

Searching an updated index equals searching a fresh build of its live documents in order (the oldest segment's
first, each update's after): same BM25 scores, same flat dense and fused rankings (`index.segments`).

Example:
    >>> from index.writer import IndexWriter
    >>> with IndexWriter("/tmp/idx/sample") as writer:  # doctest: +SKIP
    ...     writer.upsert([{"_id": "d1", "text": "Tides follow the moon.", "source": "notes"}])
    ...     writer.delete(["old-doc"])
    ...     report = writer.commit()
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from index.builder import LIBRARY_VERSION, _test_pause, build_segment, merge_info
from index.components import component_class
from index.config import BuildConfig, build_setting_differences
from index.directory import IndexDirectory
from index.documents import Document, read_documents
from index.lock import WriterLock
from index.manifest import MANIFEST_FILE, IndexDirError, SegmentEntry, fsync_dir, fsync_file, write_manifest
from index.segments import LEFTOVER, SEGMENT_FILES, live_documents, segment_files, tombstone_name
from index.store import StoreWriter

logger = logging.getLogger(__name__)


class UpdateError(ValueError):
    """An update that cannot be applied as asked; nothing was changed on disk."""


@dataclass
class UpdateReport:
    """What one commit (or merge) did."""

    path: Path
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    unknown: int = 0  # ids asked to be deleted that the index does not hold
    skipped_empty: int = 0
    generation: int = 0
    segments: int = 0
    documents: int = 0
    passages: int = 0
    merged: bool = False
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "path"}
        return {"index": str(self.path), **out, "phases": {k: round(v, 3) for k, v in self.phases.items()}}


def _shown_ids(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i if len(i) <= 60 else i[:57] + "...") for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class IndexWriter:
    """The one writer of an index (others get `IndexLockedError` until it is closed).

    Parameters:
        path: the index directory (built by `build_index`).
        config: the build settings to encode new documents with; every setting that decides what the index holds
            must equal the index's (any difference is refused, naming it). Default: the index's own.
        models: already loaded models by retriever name (e.g. `{"dense": encoder}`).
        show_progress: progress bars while encoding new documents.

    Changes are held in memory until `commit()`; closing without a commit discards them.
    """

    def __init__(self, path: str | Path, config: BuildConfig | None = None, models: dict[str, Any] | None = None,
                 show_progress: bool = False) -> None:
        self.path = Path(path).expanduser().resolve()
        if not (self.path / MANIFEST_FILE).is_file():  # before the lock, which would create folders on the way
            raise IndexDirError(f"{self.path} is not an index (no {MANIFEST_FILE}); build one first with "
                                "twostage build")
        self._lock = WriterLock(self.path).acquire()
        try:
            self._index = IndexDirectory.load(self.path, verify=True)
            built = self._index.build_config
            self.config = config or built
            differences = build_setting_differences(built, self.config)
            if differences:
                shown = ", ".join(f"{k}: {have!r} (the update asks for {want!r})" for k, have, want in differences)
                raise UpdateError(f"{self.path} was built with {shown}; an update must use the index's build "
                                  "settings: change the config to the index's values, or rebuild the index")
            self._remove_leftovers()
        except BaseException:
            self._lock.release()
            raise
        self.models = dict(models or {})
        self.show_progress = show_progress
        self._live = live_documents(self._index.segments)
        self._adds: dict[str, Document] = {}
        self._deletes: set[str] = set()
        self._replaced: set[str] = set()
        self._unknown = self._skipped = self._deleted = 0

    # -- the index as committed -------------------------------------------------------------------------------

    @property
    def index(self) -> IndexDirectory:
        """The index as of the last commit."""
        return self._index

    def __contains__(self, doc_id: str) -> bool:
        """Whether `doc_id` is in the index once the pending changes are committed."""
        return doc_id in self._adds or (doc_id in self._live and doc_id not in self._deletes)

    @property
    def pending(self) -> bool:
        return bool(self._adds or self._deletes)

    # -- changes --------------------------------------------------------------------------------------------

    def _documents(self, docs: Iterable[Document | dict[str, Any]], action: str) -> list[Document]:
        """Validated documents with text, the empty ones counted and left out, ids unique within the batch."""
        batch = read_documents(docs)
        seen: set[str] = set()
        duplicates = [d.doc_id for d in batch if d.doc_id in seen or seen.add(d.doc_id)]
        if duplicates:
            raise UpdateError(f"{action}: document id {_shown_ids(duplicates)} appears more than once in the batch; "
                              "ids must be unique (nothing was changed)")
        out = []
        for doc in batch:
            if doc.text.strip() or doc.title.strip():
                out.append(doc)
            elif self.config.corpus.on_empty == "error":
                raise UpdateError(f"{action}: document {doc.doc_id!r} has no title and no text (nothing was changed)")
            else:
                self._skipped += 1
        return out

    def add(self, docs: Iterable[Document | dict[str, Any]]) -> int:
        """Add new documents (dicts with `_id`/`id`, `text`, optional `title` and metadata fields, or `Document`s).
        An id the index already holds is refused, naming it (use `upsert` to replace); returns how many were
        added."""
        batch = self._documents(docs, "add")
        taken = [d.doc_id for d in batch if d.doc_id in self]
        if taken:
            raise UpdateError(f"add: the index already holds document {_shown_ids(taken)}; use upsert to replace "
                              "documents (nothing was changed)")
        for doc in batch:
            self._adds[doc.doc_id] = doc
        return len(batch)

    def upsert(self, docs: Iterable[Document | dict[str, Any]]) -> int:
        """Add documents, replacing any the index holds under the same id (its passages go with it); returns
        how many were given."""
        batch = self._documents(docs, "upsert")
        for doc in batch:
            if doc.doc_id in self._live and doc.doc_id not in self._deletes:
                self._deletes.add(doc.doc_id)
                self._replaced.add(doc.doc_id)
            self._adds.pop(doc.doc_id, None)
            self._adds[doc.doc_id] = doc  # a re-upserted id moves to the end, as a fresh add would
        return len(batch)

    def delete(self, doc_ids: Iterable[str], strict: bool = False) -> int:
        """Delete documents by id (and all their passages). Ids the index does not hold are counted
        (`UpdateReport.unknown`), or, with `strict`, refused before anything is deleted; returns how many were
        deleted."""
        ids = list(dict.fromkeys(doc_ids))
        bad = [i for i in ids if not isinstance(i, str)]
        if bad:
            raise UpdateError(f"delete: document ids must be strings, got {type(bad[0]).__name__} {bad[0]!r}")
        unknown = [i for i in ids if i not in self]
        if unknown and strict:
            raise UpdateError(f"delete: the index holds no document {_shown_ids(unknown)} (nothing was deleted); "
                              "drop --strict to skip unknown ids")
        deleted = 0
        for doc_id in ids:
            if doc_id in self._adds:
                del self._adds[doc_id]
                self._replaced.discard(doc_id)  # upserted, then deleted: the old version's tombstone stays
                deleted += 1
            elif doc_id in self._live and doc_id not in self._deletes:
                self._deletes.add(doc_id)
                deleted += 1
        self._unknown += len(unknown)
        self._deleted += deleted
        return deleted

    def rollback(self) -> None:
        """Discard the changes not yet committed."""
        self._adds, self._deletes, self._replaced = {}, set(), set()
        self._unknown = self._skipped = self._deleted = 0

    # -- commits ----------------------------------------------------------------------------------------------

    def commit(self) -> UpdateReport:
        """Write the pending changes as one atomic commit; returns what it did. With nothing pending, nothing is
        written."""
        start = time.perf_counter()
        index = self._index
        report = UpdateReport(self.path, added=len(self._adds) - len(self._replaced), replaced=len(self._replaced),
                              deleted=self._deleted, unknown=self._unknown,
                              skipped_empty=self._skipped)
        if not self.pending:
            self.rollback()
            return self._finish(report, start)
        generation = index.generation + 1
        old = self._segment_entries()
        entries = list(old)
        info: dict[str, Any] = {}
        with self._staging() as (tmp, new_files):
            if self._adds:
                built = build_segment(self._adds.values(), tmp, self.config, self.models, self.show_progress)
                report.phases.update(built.phases)
                entry = SegmentEntry(name=f"s{generation:06d}", prefix=f"s{generation:06d}-", rows=built.rows,
                                     documents=built.documents)
                t = time.perf_counter()
                self._place(tmp, built.files, entry.prefix, new_files)
                entries.append(entry)
                info = built.info
                report.phases["place"] = time.perf_counter() - t
            _test_pause("update-segment")
            t = time.perf_counter()
            entries = self._tombstones(entries, generation, new_files)
            report.phases["tombstones"] = time.perf_counter() - t
            _test_pause("update-tombstones")
            t = time.perf_counter()
            self._write_manifest(entries, generation, info)
            report.phases["manifest"] = time.perf_counter() - t
        _test_pause("update-committed")
        self._committed()
        return self._finish(report, start)

    def merge(self) -> UpdateReport:
        """Commit what is pending, then fold every segment's live rows into one new segment (statistics and
        vectors copied, nothing re-encoded; approximate FAISS indexes retrained), as one atomic commit."""
        if self.pending:
            self.commit()
        start = time.perf_counter()
        index = self._index
        report = UpdateReport(self.path, merged=True)
        if len(index.segments) == 1 and index.segments[0].keep is None:
            return self._finish(report, start)  # already one segment with nothing deleted
        generation = index.generation + 1
        entry = SegmentEntry(name=f"s{generation:06d}", prefix=f"s{generation:06d}-", rows=index.num_rows,
                             documents=len(index.store))
        with self._staging() as (tmp, new_files):
            t = time.perf_counter()
            files, info = self._write_merged(index, tmp)
            report.phases["merge"] = time.perf_counter() - t
            self._place(tmp, files, entry.prefix, new_files)
            _test_pause("merge-segment")
            t = time.perf_counter()
            self._write_manifest([entry], generation, info, replace_info=True, phase="merge-manifest")
            report.phases["manifest"] = time.perf_counter() - t
        _test_pause("merge-committed")
        self._committed()
        return self._finish(report, start)

    def close(self) -> None:
        """Release the lock; changes not committed are discarded (and logged)."""
        if self.pending:
            logger.warning("%s: closing the writer without a commit; %d pending changes discarded", self.path,
                           len(self._adds) + len(self._deletes))
            self.rollback()
        self._lock.release()

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------------

    @contextmanager
    def _staging(self) -> Iterator[tuple[Path, list[str]]]:
        """A temp folder inside the index to build a segment in, and the list of files a commit places into the
        index; if the commit fails before its rename, all of them are removed (else the next writer does)."""
        tmp = self.path / f".update-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        new_files: list[str] = []
        try:
            tmp.mkdir()
            yield tmp, new_files
        except BaseException:
            for name in new_files:
                (self.path / name).unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _place(self, tmp: Path, files: list[str], prefix: str, new_files: list[str]) -> None:
        for name in files:
            os.replace(tmp / name, self.path / (prefix + name))
            new_files.append(prefix + name)

    def _finish(self, report: UpdateReport, start: float) -> UpdateReport:
        index = self._index
        report.generation = index.generation
        report.segments = len(index.segments)
        report.documents = len(index.store)
        report.passages = index.num_rows
        report.seconds = time.perf_counter() - start
        report.advice = index.maintenance()
        return report

    def _segment_entries(self) -> list[SegmentEntry]:
        """The current segments as the manifest will list them (an index never updated gets its base entry)."""
        return [seg.entry if self._index.manifest.get("segments") is not None
                else SegmentEntry(name=seg.entry.name, prefix=seg.entry.prefix, rows=seg.rows,
                                  documents=seg.store.num_documents)
                for seg in self._index.segments]

    def _tombstones(self, entries: list[SegmentEntry], generation: int, new_files: list[str]) -> list[SegmentEntry]:
        """A new tombstone file for each old segment that loses rows in this commit."""
        by_segment: dict[int, list[int]] = {}
        for doc_id in self._deletes:
            seg, rows = self._live[doc_id]
            by_segment.setdefault(seg, []).extend(rows)
        out = list(entries)
        for seg, rows in by_segment.items():
            segment = self._index.segments[seg]
            deleted = segment.deleted.copy()
            deleted[rows] = True
            name = tombstone_name(entries[seg], generation)
            buffer = io.BytesIO()
            np.savez(buffer, rows=np.flatnonzero(deleted).astype(np.int64))
            with open(self.path / name, "wb") as fh:
                fh.write(buffer.getvalue())
            new_files.append(name)
            fsync_file(self.path / name)
            out[seg] = entries[seg].model_copy(update={"deleted": name, "deleted_rows": int(deleted.sum())})
        return out

    def _write_manifest(self, entries: list[SegmentEntry], generation: int, info: dict[str, Any],
                        replace_info: bool = False, phase: str = "update-manifest") -> None:
        fsync_dir(self.path)  # the new files' names are durable before a manifest lists them
        old = dict(self._index.manifest)
        known = old.pop("files")
        old.pop("format_version", None)
        content = dict(old)
        if replace_info:
            content.pop("counts", None)
        content["segments"] = [e.model_dump(mode="json") for e in entries]
        content["generation"] = generation
        content["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        content["library_version"] = LIBRARY_VERSION
        for key in ("models", "vocabularies", "embedding_dim"):
            if key in info:  # the same models (the settings were checked); a merge keeps them as they are
                merge_info(content, {key: info[key]})
        live_rows = sum(e.rows - e.deleted_rows for e in entries)
        counts = dict(content.get("counts", {}))
        counts.update(passages=live_rows, documents=len(self._live) - len(self._deletes) + len(self._adds))
        content["counts"] = counts
        files = [name for e in entries for name in segment_files(e, content["components"])]
        files += [e.deleted for e in entries if e.deleted is not None]
        write_manifest(self.path, content, files, {k: v for k, v in known.items() if k in files},
                       before_replace=lambda: _test_pause(phase))


    def _write_merged(self, index: IndexDirectory, directory: Path) -> tuple[list[str], dict[str, Any]]:
        """One segment's files holding `index`'s live rows, in their order."""
        from index.chunking import chunk_document

        writer = StoreWriter(directory, chunked=self.config.chunking is not None)
        try:
            for doc in index.store.iter_documents():
                writer.add(doc, list(chunk_document(doc, index.build_config.chunking)))
            files = [writer.close()]
        except BaseException:
            writer.conn.close()
            raise
        if writer.rows != index.num_rows:
            raise IndexDirError(f"{self.path}: the live documents re-chunk into {writer.rows} passages, the index "
                                f"holds {index.num_rows}; rebuild the index")
        files += index.fields.save(directory)
        keep = [s.keep for s in index.segments]
        info: dict[str, Any] = {}
        for name in index.manifest["components"]:
            cls = component_class(name)
            merge_info(info, cls.write_merged([s.parts[name] for s in index.segments], keep,
                                              getattr(index.build_config, name), directory))
            files += list(cls.FILES)
        return files, info

    def _committed(self) -> None:
        """After the rename: drop what no manifest lists any more, reload, and start a new batch."""
        self._index = self._index.reload()
        self._remove_leftovers()
        self._live = live_documents(self._index.segments)
        self.rollback()

    def _remove_leftovers(self) -> None:
        """Files of this index's updates that the manifest does not list: superseded tombstones and merged
        segments, or what an interrupted update wrote. Readers that have them open keep them until they close."""
        listed = set(self._index.manifest["files"])
        removed = 0
        for name in os.listdir(self.path):
            if name in listed or not LEFTOVER.fullmatch(name):
                continue
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
            removed += 1
        # The build's own files, once a merge has replaced its segment (no manifest lists them again).
        if all(s.entry.prefix for s in self._index.segments):
            for name in SEGMENT_FILES + tuple(f for c in self._index.manifest["components"]
                                              for f in component_class(c).FILES):
                if name not in listed and (self.path / name).is_file():
                    (self.path / name).unlink()
                    removed += 1
        if removed:
            fsync_dir(self.path)
            logger.info("%s: removed %d files no commit lists any more", self.path, removed)
