"""Segments of an updated index and the one view of their live rows that searching reads.

An index is a list of segments, oldest first: the build's own (`base`, plain file names) and one per update commit
that added documents (`s000001-...` files). Each is immutable once written; a deletion is a tombstone file listing
the segment's deleted rows, replaced (under a new name) by each commit that deletes more. The manifest names the
segments and their files, so a commit is the atomic rename of one new manifest (`index.writer`).

Searching sees the live rows of all segments, in segment order, numbered 0..n-1: exactly the rows a fresh build
of the same documents in that order would have. BM25 and SPLADE statistics are combined into one set over those
rows (so N, average length and document frequencies are the live corpus's), flat embeddings into one exact index;
approximate FAISS indexes stay per segment and are searched with selectors that leave deleted rows out.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from index.arrays import read_npz
from index.components import component_class
from index.documents import Document
from index.fields import FIELDS_FILES, FieldIndex
from index.manifest import IndexDirError, IndexFiles, SegmentEntry, SegmentFiles
from index.store import STORE_FILE, DocumentStore

logger = logging.getLogger(__name__)

# Names only an update writes: delta segment files, tombstones, a manifest not yet renamed, the temp folder a new
# segment is built in. Unlisted ones are what an interrupted update left; the next writer removes them.
LEFTOVER = re.compile(r"s[0-9]{6}-[A-Za-z0-9._-]+|deleted\.[0-9]+\.npz|manifest\.json\.tmp|\.update-[0-9]+-[0-9a-f]+")
# What a segment holds besides its components' files.
SEGMENT_FILES = (STORE_FILE, *FIELDS_FILES)


def segment_files(entry: SegmentEntry, components: Sequence[str]) -> list[str]:
    """The file names of a segment in the manifest (tombstones aside)."""
    names = [*SEGMENT_FILES, *(f for c in components for f in component_class(c).FILES)]
    return [entry.prefix + name for name in names]


def tombstone_name(entry: SegmentEntry, generation: int) -> str:
    return f"{entry.prefix}deleted.{generation}.npz"


@dataclass
class Segment:
    """One loaded segment: its store, its components' parts, and which of its rows are deleted."""

    entry: SegmentEntry
    store: DocumentStore
    parts: dict[str, Any]
    key: tuple  # its files' names and sha256: a refresh reuses a segment whose key has not changed
    deleted: np.ndarray  # bool per local row
    _fields: FieldIndex | None = None
    _fields_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def rows(self) -> int:
        return len(self.store.passage_ids)

    @property
    def keep(self) -> np.ndarray | None:
        """Live local rows, ascending (None: every row is live)."""
        return None if not self.deleted.any() else np.flatnonzero(~self.deleted)

    @property
    def deleted_documents(self) -> set[str]:
        ids = self.store.row_doc_ids
        return {ids[r] for r in np.flatnonzero(self.deleted).tolist()}

    def fields(self) -> FieldIndex:
        """Its rows' metadata as columns: read from the segment's field files, or (an index built before they
        existed) made once from the store."""
        with self._fields_lock:
            if self._fields is None:
                meta = {d.doc_id: d.metadata for d in self.store.iter_documents()}
                self._fields = FieldIndex.build(meta[d] for d in self.store.row_doc_ids)
            return self._fields

    def with_deleted(self, deleted: np.ndarray, entry: SegmentEntry) -> Segment:
        return Segment(entry, self.store, self.parts, self.key, deleted, self._fields)


def load_segment(files: IndexFiles, entry: SegmentEntry, components: Sequence[str],
                 previous: dict[tuple, Segment]) -> Segment:
    """Read one segment through the checked handle (or reuse the already loaded one with the same files)."""
    manifest = files.manifest
    names = segment_files(entry, components)
    key = (entry.prefix, *((n, manifest.files[n].sha256) for n in names if n in manifest.files))
    seg_files = SegmentFiles(files, entry.prefix)
    deleted = _read_tombstones(files, entry)
    reused = previous.get(key)
    if reused is not None:
        _check_rows(files, entry, reused.rows, deleted)
        return reused.with_deleted(deleted, entry)
    with files.reading(entry.prefix + STORE_FILE):
        # SQLite opens by path: the handle's path names this build's file, which has just been checked (an
        # index's files are only ever removed once unlisted, which makes this open fail, never replaced).
        store = files.open_under_handle(lambda path: DocumentStore(path, name=files.path,
                                                                   file=entry.prefix + STORE_FILE))
    parts = {c: component_class(c).load(seg_files, manifest) for c in components}
    fields = None
    if all(seg_files.has(n) for n in FIELDS_FILES):
        try:
            fields = FieldIndex.from_bytes(*(seg_files.read_bytes(n) for n in FIELDS_FILES))
        except ValueError as exc:
            raise IndexDirError(f"{files.path}: the metadata columns of segment {entry.name} are damaged ({exc}); "
                                f"{files.rebuild}") from None
    segment = Segment(entry, store, parts, key, deleted, fields)
    rows = segment.rows
    _check_rows(files, entry, rows, deleted)
    sizes = {k: v for c, part in parts.items() for k, v in component_class(c).sizes(part).items()}
    if fields is not None:
        sizes["fields"] = fields.num_rows
    bad = {k: v for k, v in sizes.items() if v != rows}
    if bad:
        raise IndexDirError(f"{files.path}: components disagree on the number of passages ({rows} in the store, "
                            f"{bad}); {files.rebuild}")
    return segment


def _check_rows(files: IndexFiles, entry: SegmentEntry, rows: int, deleted: np.ndarray) -> None:
    if files.manifest.segments is not None and entry.rows != rows:
        raise IndexDirError(f"{files.path}: segment {entry.name} holds {rows} passages, the manifest says "
                            f"{entry.rows}; {files.rebuild}")
    if len(deleted) != rows:
        raise IndexDirError(f"{files.path}: the tombstones of segment {entry.name} do not match its rows; "
                            f"{files.rebuild}")


def _read_tombstones(files: IndexFiles, entry: SegmentEntry) -> np.ndarray:
    deleted = np.zeros(entry.rows, dtype=bool)
    if entry.deleted is None:
        return deleted
    try:
        rows = read_npz(files.read_bytes(entry.deleted), ("rows",))["rows"]
    except IndexDirError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise IndexDirError(f"{files.path / entry.deleted} is damaged ({type(exc).__name__}: {detail}); "
                            f"{files.rebuild}") from None
    if rows.ndim != 1 or rows.dtype.kind not in "iu" or (rows.size and (rows.min() < 0 or rows.max() >= entry.rows)) \
            or len(np.unique(rows)) != entry.deleted_rows or len(rows) != entry.deleted_rows:
        raise IndexDirError(f"{files.path / entry.deleted} does not list {entry.deleted_rows} distinct rows of "
                            f"segment {entry.name}; {files.rebuild}")
    deleted[rows] = True
    return deleted


class StoreView:
    """The documents and passages of several segments' live rows, numbered as one store (`DocumentStore`'s
    read interface)."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = list(segments)
        self.passage_ids: list[str] = []
        self.row_doc_ids: list[str] = []
        locals_, owners = [], []
        self._segment_of: dict[str, int] = {}
        for i, seg in enumerate(self.segments):
            keep = seg.keep
            rows = range(seg.rows) if keep is None else keep.tolist()
            pids, dids = seg.store.passage_ids, seg.store.row_doc_ids
            self.passage_ids.extend(pids[r] for r in rows)
            live_docs = [dids[r] for r in rows]
            self.row_doc_ids.extend(live_docs)
            self._segment_of.update(dict.fromkeys(live_docs, i))
            locals_.append(np.arange(seg.rows) if keep is None else keep)
            owners.append(np.full(len(rows), i, dtype=np.int32))
        self._local = np.concatenate(locals_) if locals_ else np.empty(0, dtype=np.int64)
        self._owner = np.concatenate(owners) if owners else np.empty(0, dtype=np.int32)
        self.num_documents = len(self._segment_of)

    def __len__(self) -> int:
        return self.num_documents

    def get(self, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        by_segment: dict[int, list[str]] = {}
        for d in dict.fromkeys(doc_ids):
            seg = self._segment_of.get(d)
            if seg is None:
                raise self.segments[0].store._damaged(f"has no document {d!r} that the index refers to")
            by_segment.setdefault(seg, []).append(d)
        out: dict[str, dict[str, Any]] = {}
        for seg, ids in by_segment.items():
            out.update(self.segments[seg].store.get(ids))
        return out

    def passage_texts(self, rows: Iterable[int]) -> dict[int, str]:
        wanted = [int(r) for r in dict.fromkeys(rows)]
        by_segment: dict[int, list[int]] = {}
        for r in wanted:
            by_segment.setdefault(int(self._owner[r]), []).append(r)
        out: dict[int, str] = {}
        for seg, view_rows in by_segment.items():
            local = [int(self._local[r]) for r in view_rows]
            texts = self.segments[seg].store.passage_texts(local)
            out.update((v, texts[lr]) for v, lr in zip(view_rows, local))
        return out

    def iter_documents(self) -> Iterator[Document]:
        for i, seg in enumerate(self.segments):
            for doc in seg.store.iter_documents():
                if self._segment_of.get(doc.doc_id) == i:
                    yield doc


def live_documents(segments: Sequence[Segment]) -> dict[str, tuple[int, list[int]]]:
    """Each live document's segment (position) and local rows: what the writer deletes by id."""
    out: dict[str, tuple[int, list[int]]] = {}
    for i, seg in enumerate(segments):
        ids, deleted = seg.store.row_doc_ids, seg.deleted
        for r, d in enumerate(ids):
            if not deleted[r]:
                out.setdefault(d, (i, []))[1].append(r)
    return out
