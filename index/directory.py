"""Loading a built index directory, checked against its manifest (no pickle anywhere).

Example:
    >>> from index.directory import IndexDirectory
    >>> idx = IndexDirectory.load("/tmp/scifact-index")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from index.components import component_class
from index.config import BuildConfig
from index.fields import FIELDS_FILES, FieldIndex
from index.manifest import IndexDirError, IndexFiles, first_error, manifest_identity, read_one_build
from index.segments import Segment, StoreView, load_segment
from index.store import STORE_FILE, DocumentStore

logger = logging.getLogger(__name__)

# Maintenance advice: a merge is due from this many delta segments, or this fraction of deleted passages.
MERGE_SEGMENTS = 10
MERGE_DELETED_FRACTION = 0.2
_CACHED_MASKS = 64


@dataclass
class IndexDirectory:
    """A loaded index: the document store and each component's data (`parts`, by retriever name), over the live
    rows of all its segments (`index.segments`)."""

    path: Path
    manifest: dict[str, Any]
    build_config: BuildConfig
    store: DocumentStore | StoreView
    parts: dict[str, Any] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    identity: tuple[int, int, int] | None = None  # of the manifest read (`changed()`)
    _fields: FieldIndex | None = None
    _masks: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def model(self, component: str) -> str | None:
        """The model a component was built with (`None` for BM25)."""
        return self.manifest.get("models", {}).get(component)

    @property
    def dense_model(self) -> str | None:
        return self.model("dense")

    @property
    def bm25(self) -> Any | None:
        return self.parts.get("bm25")

    @property
    def faiss_index(self) -> Any | None:
        dense = self.parts.get("dense")
        return dense.index if dense is not None else None

    @property
    def embeddings(self) -> np.ndarray | None:
        dense = self.parts.get("dense")
        return dense.embeddings if dense is not None else None

    @property
    def generation(self) -> int:
        """How many commits the index has had since its build (0: none)."""
        return int(self.manifest.get("generation", 0))

    @property
    def num_rows(self) -> int:
        return len(self.store.passage_ids)

    def changed(self) -> bool:
        """Whether a commit or a rebuild has put another manifest at `path` since this was loaded (one stat)."""
        return manifest_identity(self.path) != self.identity

    def reload(self) -> IndexDirectory:
        """The index as it is now on disk, reusing every segment whose files have not changed."""
        return IndexDirectory.load(self.path, verify=self._verify, previous=self)

    # -- metadata filters -----------------------------------------------------------------------------------

    @property
    def fields(self) -> FieldIndex:
        """The live rows' metadata as columns (made on first use, from each segment's columns)."""
        with self._lock:
            if self._fields is None:
                self._fields = FieldIndex.concat([s.fields() for s in self.segments], [s.keep for s in self.segments])
            return self._fields

    @functools.cached_property
    def doc_id_array(self) -> np.ndarray:
        """Each row's document id as one array (what `doc_id` filters compare against)."""
        return np.asarray(self.store.row_doc_ids)

    @functools.cached_property
    def document_ids(self) -> frozenset[str]:
        """The ids of the documents this commit holds (made on first use)."""
        return frozenset(self.store.row_doc_ids)

    def filter_mask(self, flt: Any, known: frozenset[str] = frozenset()) -> np.ndarray:
        """The rows a metadata filter allows (a boolean mask over rows); `flt`: a filter dict or a parsed `Filter`.
        Raises `FilterError` naming what is wrong with it. Recently used filters are cached. `known`: fields the
        rest of a sharded corpus holds (`index.filters.evaluate`)."""
        from index.filters import Filter, evaluate, parse_filter

        parsed = flt if isinstance(flt, Filter) else parse_filter(flt)
        key = (parsed.key, known)
        with self._lock:
            mask = self._masks.get(key)
            if mask is not None:
                self._masks.move_to_end(key)
                return mask
        mask = evaluate(parsed, self.fields, self.doc_id_array, known)
        mask.setflags(write=False)
        with self._lock:
            self._masks[key] = mask
            while len(self._masks) > _CACHED_MASKS:
                self._masks.popitem(last=False)
        return mask

    # -- upkeep ---------------------------------------------------------------------------------------------

    def maintenance(self) -> list[str]:
        """What a merge would fix, as one-line advice (empty when nothing is due)."""
        out = []
        deltas = len(self.segments) - 1
        deleted = sum(int(s.deleted.sum()) for s in self.segments)
        total = sum(s.rows for s in self.segments)
        if deltas >= MERGE_SEGMENTS:
            out.append(f"{self.path} has {deltas} delta segments; a merge folds them into one "
                       f"(twostage update --index {self.path} --merge)")
        if total and deleted / total >= MERGE_DELETED_FRACTION:
            out.append(f"{deleted:,} of {total:,} passages in {self.path} are deleted ({deleted / total:.0%}); a "
                       f"merge reclaims their space (twostage update --index {self.path} --merge)")
        faiss_type = self.build_config.dense.faiss.type if self.build_config.dense is not None else "flat"
        if faiss_type in ("ivf", "sq8") and deltas and "dense" in self.parts:
            trained = self.segments[0].rows
            newer = total - trained
            if newer > trained:
                out.append(f"{self.path}: the FAISS {faiss_type} quantizer was trained on {trained:,} vectors, and "
                           f"{newer:,} more were added since; a merge retrains it (twostage update --index "
                           f"{self.path} --merge)")
        return out

    @classmethod
    def load(cls, path: str | Path, verify: bool = True, previous: IndexDirectory | None = None) -> IndexDirectory:
        """Open an index; refuses (with `IndexDirError`) anything missing, truncated, corrupted or foreign. All of
        it comes from one commit of one build, also while an update commits or a rebuild swaps a new one into
        `path`. `previous`: a loaded state of the same index whose unchanged segments are reused (`reload`)."""
        path = Path(path).expanduser()
        reuse = {s.key: s for s in previous.segments} if previous is not None else {}
        loaded = read_one_build(path, verify, lambda files: cls._read(files, reuse))
        loaded._verify = verify
        return loaded

    _verify: bool = True

    @classmethod
    def _read(cls, files: IndexFiles, previous: dict[tuple, Segment]) -> IndexDirectory:
        path, manifest = files.path, files.manifest
        entries = manifest.segment_list()
        # The files each part is read from: a manifest that does not list one is refused, never read unchecked.
        needs = {"store": (STORE_FILE,), **{c: component_class(c).FILES for c in manifest.components}}
        for entry in entries:
            # Metadata columns: both files or (an index built before they existed) neither.
            fields = {"fields": FIELDS_FILES} if any(entry.prefix + n in manifest.files for n in FIELDS_FILES) else {}
            for part, names in {**needs, **fields}.items():
                for name in names:
                    if entry.prefix + name not in manifest.files:
                        raise IndexDirError(f"{path}: manifest.json does not list {entry.prefix + name}, which the "
                                            f"{part} component needs; it was not written by this library or was "
                                            f"edited; {files.rebuild}")
        rebuild = "rebuild the index with scripts/build_index.py"
        try:
            build_config = BuildConfig.model_validate(manifest.config)
        except ValidationError as exc:
            raise IndexDirError(f"{path}: the build config in manifest.json is not valid "
                                f"({first_error(exc, 'config')}); {rebuild}") from None
        try:
            segments = [load_segment(files, e, manifest.components, previous) for e in entries]
        except IndexDirError:
            raise
        except Exception as exc:  # any reader failing on a damaged file ends here with one clear message
            # One line: readers such as FAISS put a multi-line report in their messages.
            detail = " ".join(str(exc).split())[:300]
            raise IndexDirError(f"{path}: cannot read the index ({type(exc).__name__}: {detail}); {rebuild}") from exc
        dim = manifest.embedding_dim
        for seg in segments:
            dense = seg.parts.get("dense")
            if dense is not None and dense.index.d != dim:
                raise IndexDirError(f"{path}: FAISS dimension {dense.index.d} != manifest {dim}; {rebuild}")
        single = len(segments) == 1 and segments[0].keep is None
        store = segments[0].store if single else StoreView(segments)
        keep = [s.keep for s in segments]
        parts = {}
        for c in manifest.components:
            config = getattr(build_config, c)
            parts[c] = component_class(c).combine([s.parts[c] for s in segments], keep, config)
        identity = files._manifest_id
        return cls(path, manifest.model_dump(mode="json"), build_config, store, parts, segments, identity)
