"""Loading a built index directory, checked against its manifest (no pickle anywhere).

Example:
    >>> from index.directory import IndexDirectory
    >>> idx = IndexDirectory.load("/tmp/scifact-index")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from index.components import component_class
from index.config import BuildConfig
from index.manifest import IndexDirError, IndexFiles, first_error, read_one_build
from index.store import STORE_FILE, DocumentStore

logger = logging.getLogger(__name__)


@dataclass
class IndexDirectory:
    """A loaded index: the document store and each component's data (`parts`, by retriever name)."""

    path: Path
    manifest: dict[str, Any]
    build_config: BuildConfig
    store: DocumentStore
    parts: dict[str, Any] = field(default_factory=dict)

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

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> IndexDirectory:
        """Open an index; refuses (with `IndexDirError`) anything missing, truncated, corrupted or foreign. All of
        it comes from one build, also while a rebuild swaps a new one into `path`."""
        path = Path(path).expanduser()
        return read_one_build(path, verify, lambda files: cls._read(files))

    @classmethod
    def _read(cls, files: IndexFiles) -> IndexDirectory:
        path, manifest = files.path, files.manifest
        # The files each part is read from: a manifest that does not list one is refused, never read unchecked.
        needs = {"store": (STORE_FILE,), **{c: component_class(c).FILES for c in manifest.components}}
        for part, names in needs.items():
            for name in names:
                if name not in manifest.files:
                    raise IndexDirError(f"{path}: manifest.json does not list {name}, which the {part} component "
                                        f"needs; it was not written by this library or was edited; {files.rebuild}")
        rebuild = "rebuild the index with scripts/build_index.py"
        try:
            build_config = BuildConfig.model_validate(manifest.config)
        except ValidationError as exc:
            raise IndexDirError(f"{path}: the build config in manifest.json is not valid "
                                f"({first_error(exc, 'config')}); {rebuild}") from None
        try:
            with files.reading(STORE_FILE):
                # SQLite opens by path: the handle's path names this build's file, which has just been checked
                # (a published build's files are only ever removed, which makes this open fail, never replaced).
                store = DocumentStore(files.handle_path, name=path)
            files.keep_open_while(store)
            parts = {c: component_class(c).load(files, manifest) for c in manifest.components}
        except IndexDirError:
            raise
        except Exception as exc:  # any reader failing on a damaged file ends here with one clear message
            # One line: readers such as FAISS put a multi-line report in their messages.
            detail = " ".join(str(exc).split())[:300]
            raise IndexDirError(f"{path}: cannot read the index ({type(exc).__name__}: {detail}); {rebuild}") from exc
        rows = len(store.passage_ids)
        sizes = {k: v for c, part in parts.items() for k, v in component_class(c).sizes(part).items()}
        bad = {k: v for k, v in sizes.items() if v != rows}
        if bad:
            raise IndexDirError(f"{path}: components disagree on the number of passages ({rows} in the store, "
                                f"{bad}); {rebuild}")
        dense = parts.get("dense")
        dim = manifest.embedding_dim
        if dense is not None and dense.index.d != dim:
            raise IndexDirError(f"{path}: FAISS dimension {dense.index.d} != manifest {dim}; {rebuild}")
        return cls(path, manifest.model_dump(mode="json"), build_config, store, parts)
