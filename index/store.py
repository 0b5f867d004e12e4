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
    """Read-only access through one connection, opened at load and shared by all threads under a lock: an index
    rebuilt and swapped in later never mixes into what this store (and the arrays loaded with it) serves."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / STORE_FILE
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        conn = self._connection
        rows = conn.execute("SELECT passage_id, doc_id FROM passages ORDER BY row").fetchall()
        self.passage_ids = [r[0] for r in rows]
        self.row_doc_ids = [r[1] for r in rows]
        self.num_documents = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]

    def __len__(self) -> int:
        return self.num_documents

    def get(self, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(doc_ids))
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            with self._lock:
                rows = self._connection.execute(
                    f"SELECT doc_id, title, text, metadata FROM documents WHERE doc_id IN ({marks})", part
                ).fetchall()
            for doc_id, title, text, meta in rows:
                out[doc_id] = {"title": title, "text": text, "metadata": json.loads(meta)}
        return out

    def passage_texts(self, rows: Sequence[int]) -> dict[int, str]:
        """Text of each passage row (the document's text when the index is not chunked)."""
        out: dict[int, str] = {}
        rows = [int(r) for r in dict.fromkeys(rows)]
        for start in range(0, len(rows), 500):
            part = rows[start : start + 500]
            marks = ",".join("?" * len(part))
            with self._lock:
                found = self._connection.execute(
                    f"SELECT p.row, COALESCE(p.text, d.text) FROM passages p JOIN documents d ON p.doc_id = d.doc_id "
                    f"WHERE p.row IN ({marks})", part,
                ).fetchall()
            out.update(found)
        return out

    def iter_documents(self) -> Iterable[Document]:
        with self._lock:
            cursor = self._connection.execute("SELECT doc_id, title, text, metadata FROM documents ORDER BY rowid")
        while True:
            with self._lock:
                rows = cursor.fetchmany(1000)
            if not rows:
                return
            for doc_id, title, text, meta in rows:
                yield Document(doc_id=doc_id, text=text, title=title, metadata=json.loads(meta))
