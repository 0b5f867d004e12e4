"""Loading a built index directory, checked against its manifest (no pickle anywhere).

Example:
    >>> from index.directory import IndexDirectory
    >>> idx = IndexDirectory.load("/tmp/scifact-index")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.bm25 import BM25Stats
from index.config import BuildConfig
from index.dense import EMBEDDINGS_FILE, load_faiss
from index.manifest import IndexDirError, read_manifest
from index.store import DocumentStore

logger = logging.getLogger(__name__)


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
        """Open an index; refuses (with `IndexDirError`) anything missing, truncated, corrupted or foreign."""
        path = Path(path).expanduser()
        manifest = read_manifest(path, verify=verify)
        rebuild = "rebuild the index with scripts/build_index.py"
        try:
            build_config = BuildConfig.model_validate(manifest["config"])
            components = manifest.get("components", [])
            store = DocumentStore(path)
            bm25 = BM25Stats.load(path) if "bm25" in components else None
            faiss_index = embeddings = None
            if "dense" in components:
                faiss_index = load_faiss(path)
                embeddings = np.load(path / EMBEDDINGS_FILE, mmap_mode="r", allow_pickle=False)
        except IndexDirError:
            raise
        except Exception as exc:  # any reader failing on a damaged file ends here with one clear message
            raise IndexDirError(f"{path}: cannot read the index ({type(exc).__name__}: {exc}); {rebuild}") from exc
        rows = len(store.passage_ids)
        sizes = {"bm25": bm25.num_docs if bm25 else rows, "faiss": faiss_index.ntotal if faiss_index else rows,
                 "embeddings": len(embeddings) if embeddings is not None else rows}
        bad = {k: v for k, v in sizes.items() if v != rows}
        if bad:
            raise IndexDirError(f"{path}: components disagree on the number of passages ({rows} in the store, "
                                f"{bad}); {rebuild}")
        dim = manifest.get("embedding_dim")
        if faiss_index is not None and faiss_index.d != dim:
            raise IndexDirError(f"{path}: FAISS dimension {faiss_index.d} != manifest {dim}; {rebuild}")
        return cls(path, manifest, build_config, store, bm25, faiss_index, embeddings)
