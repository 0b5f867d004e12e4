"""Reading corpora and building index directories: documents, BM25 statistics, embeddings + FAISS, manifest."""

from __future__ import annotations

from index.builder import BuildReport, build_index
from index.config import BuildConfig
from index.directory import IndexDirectory
from index.documents import CorpusError, Document, read_corpus
from index.manifest import IndexDirError
from index.models import ModelNotAvailableError

__all__ = ["BuildConfig", "BuildReport", "CorpusError", "Document", "IndexDirError", "IndexDirectory",
           "ModelNotAvailableError", "build_index", "read_corpus"]
