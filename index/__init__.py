"""Reading corpora and building index directories: documents, BM25 statistics, embeddings + FAISS, manifest.

Names are imported on first use (PEP 562): importing a light module of this package (its config, for one)
never loads torch, faiss or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from index.lazy import lazy_exports

_HOMES = {
    "BuildReport": "index.builder",
    "build_index": "index.builder",
    "BuildConfig": "index.config",
    "IndexDirectory": "index.directory",
    "CorpusError": "index.documents",
    "Document": "index.documents",
    "read_corpus": "index.documents",
    "IndexDirError": "index.manifest",
    "ModelNotAvailableError": "index.runtime.models",
}
__all__ = [
    "BuildConfig", "BuildReport", "CorpusError", "Document", "IndexDirError", "IndexDirectory",
    "ModelNotAvailableError", "build_index", "read_corpus"
]

if TYPE_CHECKING:
    from index.builder import BuildReport, build_index
    from index.config import BuildConfig
    from index.directory import IndexDirectory
    from index.documents import CorpusError, Document, read_corpus
    from index.manifest import IndexDirError
    from index.runtime.models import ModelNotAvailableError

__getattr__ = lazy_exports(__name__, _HOMES)
