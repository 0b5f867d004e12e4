"""Loading a built index directory, checked against its manifest (no pickle anywhere).

Example:
    >>> from index.directory import IndexDirectory
    >>> idx = IndexDirectory.load("/tmp/scifact-index")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from pydantic import ValidationError

from index.bm25 import STATS_FILE, VOCAB_FILE, BM25Stats
from index.config import BuildConfig
from index.dense import EMBEDDINGS_FILE, FAISS_FILE, load_faiss
from index.manifest import FileReader, IndexDirError, IndexFiles, first_error, read_one_build
from index.store import STORE_FILE, DocumentStore

logger = logging.getLogger(__name__)

# The files each part of an index is read from: a manifest that does not list one is refused, never read unchecked.
NEEDS: dict[str, tuple[str, ...]] = {"store": (STORE_FILE,), "bm25": (STATS_FILE, VOCAB_FILE),
                                     "dense": (EMBEDDINGS_FILE, FAISS_FILE)}


@dataclass
class IndexDirectory:
    path: Path
    manifest: dict[str, Any]
    build_config: BuildConfig
    store: DocumentStore
    bm25: BM25Stats | None
    faiss_index: faiss.Index | None
    embeddings: np.ndarray | None

    @property
    def dense_model(self) -> str | None:
        return self.manifest.get("models", {}).get("dense")

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> IndexDirectory:
        """Open an index; refuses (with `IndexDirError`) anything missing, truncated, corrupted or foreign. All of
        it comes from one build, also while a rebuild swaps a new one into `path`."""
        path = Path(path).expanduser()
        return read_one_build(path, verify, lambda files: cls._read(files))

    @classmethod
    def _read(cls, files: IndexFiles) -> IndexDirectory:
        path, manifest = files.path, files.manifest
        for part in ("store", *manifest.components):
            for name in NEEDS[part]:
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
            bm25 = faiss_index = embeddings = None
            if "bm25" in manifest.components:
                bm25 = BM25Stats.from_bytes(files.read_bytes(STATS_FILE), files.read_bytes(VOCAB_FILE),
                                            path / STATS_FILE)
            if "dense" in manifest.components:
                with files.reading(FAISS_FILE) as reader:
                    faiss_index = load_faiss(reader.read)
                with files.reading(EMBEDDINGS_FILE) as reader:
                    embeddings = _map_npy(reader)
        except IndexDirError:
            raise
        except Exception as exc:  # any reader failing on a damaged file ends here with one clear message
            # One line: readers such as FAISS put a multi-line report in their messages.
            detail = " ".join(str(exc).split())[:300]
            raise IndexDirError(f"{path}: cannot read the index ({type(exc).__name__}: {detail}); {rebuild}") from exc
        rows = len(store.passage_ids)
        sizes = {"bm25": bm25.num_docs if bm25 else rows, "faiss": faiss_index.ntotal if faiss_index else rows,
                 "embeddings": len(embeddings) if embeddings is not None else rows}
        bad = {k: v for k, v in sizes.items() if v != rows}
        if bad:
            raise IndexDirError(f"{path}: components disagree on the number of passages ({rows} in the store, "
                                f"{bad}); {rebuild}")
        dim = manifest.embedding_dim
        if faiss_index is not None and faiss_index.d != dim:
            raise IndexDirError(f"{path}: FAISS dimension {faiss_index.d} != manifest {dim}; {rebuild}")
        return cls(path, manifest.model_dump(mode="json"), build_config, store, bm25, faiss_index, embeddings)


def _map_npy(reader: FileReader) -> np.ndarray:
    """Memory-map the array of an open `.npy` file, as `np.load(mmap_mode="r")` does for a path."""
    version = np.lib.format.read_magic(reader)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(reader)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(reader)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if dtype.hasobject:  # np.load's own refusal, word for word
        raise ValueError("Array can't be memory-mapped: Python objects in dtype.")
    with os.fdopen(reader.fileno(), "rb", closefd=False) as fh:  # the map keeps its own handle on the file
        return np.memmap(fh, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C",
                         offset=reader.tell())
