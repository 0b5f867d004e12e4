"""Document store in embedded SQLite: documents by id, and passages by row when the corpus is chunked."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from index.chunking import Passage
from index.documents import Document

STORE_FILE = "documents.sqlite"

_SCHEMA = """
CREATE TABLE documents (doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE TABLE passages (row INTEGER PRIMARY KEY, passage_id TEXT NOT NULL, doc_id TEXT NOT NULL, text TEXT);
"""


class StoreWriter:
    """Writes a new store file (only ever into a build's temp directory)."""

    def __init__(self, directory: Path, chunked: bool) -> None:
        self.path = directory / STORE_FILE
        self.chunked = chunked
        self.conn = sqlite3.connect(self.path)
        self.conn.executescript(_SCHEMA)
        self.rows = 0

    def add(self, doc: Document, passages: Sequence[Passage]) -> None:
        self.conn.execute(
            "INSERT INTO documents VALUES (?, ?, ?, ?)",
            (doc.doc_id, doc.title, doc.text, json.dumps(doc.metadata, ensure_ascii=False, default=str)),
        )
        self.conn.executemany(
            "INSERT INTO passages VALUES (?, ?, ?, ?)",
            [(self.rows + i, p.passage_id, p.doc_id, p.text if self.chunked else None)
             for i, p in enumerate(passages)],
        )
        self.rows += len(passages)

    def close(self) -> str:
        self.conn.commit()
        self.conn.close()
        return STORE_FILE


class DocumentStore:
    """Read-only access; one SQLite connection per thread, so it can be shared by threads."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / STORE_FILE
        self._local = threading.local()
        conn = self._conn()
        rows = conn.execute("SELECT passage_id, doc_id FROM passages ORDER BY row").fetchall()
        self.passage_ids = [r[0] for r in rows]
        self.row_doc_ids = [r[1] for r in rows]
        self.num_documents = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._local.conn = conn
        return conn

    def __len__(self) -> int:
        return self.num_documents

    def get(self, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(doc_ids))
        out: dict[str, dict[str, Any]] = {}
        conn = self._conn()
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for doc_id, title, text, meta in conn.execute(
                f"SELECT doc_id, title, text, metadata FROM documents WHERE doc_id IN ({marks})", part
            ):
                out[doc_id] = {"title": title, "text": text, "metadata": json.loads(meta)}
        return out

    def passage_texts(self, rows: Sequence[int]) -> dict[int, str]:
        """Text of each passage row (the document's text when the index is not chunked)."""
        out: dict[int, str] = {}
        conn = self._conn()
        rows = [int(r) for r in dict.fromkeys(rows)]
        for start in range(0, len(rows), 500):
            part = rows[start : start + 500]
            marks = ",".join("?" * len(part))
            for row, text in conn.execute(
                f"SELECT p.row, COALESCE(p.text, d.text) FROM passages p JOIN documents d ON p.doc_id = d.doc_id "
                f"WHERE p.row IN ({marks})", part,
            ):
                out[row] = text
        return out

    def iter_documents(self) -> Iterable[Document]:
        for doc_id, title, text, meta in self._conn().execute(
            "SELECT doc_id, title, text, metadata FROM documents ORDER BY rowid"
        ):
            yield Document(doc_id=doc_id, text=text, title=title, metadata=json.loads(meta))
