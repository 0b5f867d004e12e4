"""Document store in embedded SQLite: documents by id, and passages by row when the corpus is chunked.

A store is read as untrusted input (a manifest rewritten to match a tampered file passes every hash check): it is
opened read-only and immutable from a quoted URI, must hold exactly the schema `StoreWriter` creates, and every
query runs under an instruction budget, so a damaged or foreign file ends in one `IndexDirError`, never a hang, a
wrong answer, a raw `KeyError`, or a file written beside it.
"""

from __future__ import annotations

import functools
import json
import reprlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from index.chunking import Passage
from index.documents import MAX_JSON_DEPTH, Document, _nested_deeper_than
from index.manifest import IndexDirError, rebuild_hint

T = TypeVar("T")

STORE_FILE = "documents.sqlite"

_SCHEMA = """
CREATE TABLE documents (doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE TABLE passages (row INTEGER PRIMARY KEY, passage_id TEXT NOT NULL, doc_id TEXT NOT NULL, text TEXT);
"""
_SCHEMA_QUERY = "SELECT type, name, tbl_name, sql FROM sqlite_master"

# SQLite's advice for untrusted files (sqlite.org/security.html): no functions run from the schema, extra checks
# of every b-tree cell, no writes; sorts and temporary tables stay in memory, bounded by the instruction budget,
# instead of spilling unseen into a shared temp folder (the hang this replaced wrote ~14 MB/s there).
_PRAGMAS = ("trusted_schema = OFF", "cell_size_check = ON", "query_only = ON", "temp_store = MEMORY")

# Instruction budget of one statement. A full scan of the densest store StoreWriter can write (one-character ids,
# empty texts) takes 0.08 SQLite instructions per file byte, and a lookup 16-18 per key; the budgets leave 12-14x
# headroom and stop a runaway statement (a damaged file) after some 10^8 instructions per 100 MB of store.
_PROGRESS_STEP = 1_000  # instructions between two checks of the budget
_OPS_BASE = 1_000_000
_OPS_PER_BYTE = 1
_OPS_PER_ROW = 250
_BATCH = 500  # ids per lookup statement: well under SQLite's limit on bound parameters

_short = reprlib.Repr()
_short.maxstring = 80  # a tampered id can be megabytes long; a message names it, bounded


@functools.cache
def _expected_schema() -> frozenset[tuple[Any, ...]]:
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.executescript(_SCHEMA)
        return frozenset(conn.execute(_SCHEMA_QUERY).fetchall())


def _schema_problems(found: Iterable[tuple[Any, ...]]) -> list[str]:
    """What differs from `_SCHEMA`, as `table 'x' is missing`, `... is defined differently`, `unexpected ...`."""
    want = {(kind, name): rest for kind, name, *rest in _expected_schema()}
    have = {(kind, name): rest for kind, name, *rest in found}

    def named(key: tuple[Any, Any]) -> str:
        return f"{key[0]} {_short.repr(key[1])}"

    return ([f"{named(k)} is missing" for k in sorted(want.keys() - have.keys())]
            + [f"{named(k)} is defined differently" for k in sorted(want.keys() & have.keys()) if want[k] != have[k]]
            + [f"unexpected {named(k)}" for k in sorted(have.keys() - want.keys(), key=repr)])


class _Budget:
    """Instructions left to the running statement. Its own object, so that the connection's progress handler does
    not refer back to the store: no reference cycle, and the file closes as soon as the store is dropped."""

    def __init__(self) -> None:
        self.left = 0

    def spend(self) -> bool:
        self.left -= _PROGRESS_STEP
        return self.left < 0  # true aborts the statement (sqlite3.OperationalError: interrupted)


def _connect(path: Path) -> sqlite3.Connection:
    # as_uri() percent-encodes '#', '?', '%', spaces and non-UTF-8 bytes, so the URI names exactly this file (a raw
    # path was cut at '#', losing mode=ro). immutable=1: SQLite takes no locks and never reads or creates a
    # -journal, -wal or -shm file, so only the hashed bytes are served and a search writes nothing.
    uri = f"{path.absolute().as_uri()}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    for pragma in _PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    return conn


class StoreWriter:
    """Writes a new store file (only ever into a build's temp directory)."""

    def __init__(self, directory: Path, chunked: bool) -> None:
        self.path = directory / STORE_FILE
        self.chunked = chunked
        self.conn = sqlite3.connect(self.path)
        try:
            self.conn.executescript(_SCHEMA)
        except BaseException:  # e.g. a full disk: no open handle may keep the deleted file's space in use
            self.conn.close()
            raise
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
    rebuilt and swapped in later never mixes into what this store (and the arrays loaded with it) serves.

    `directory` may be any path to the index folder (also `/proc/self/fd/N`); `name` is the index path that
    messages show (default: `directory`). Ids and rows asked for are those the index refers to: one missing is
    damage, reported as `IndexDirError`."""

    def __init__(self, directory: Path, name: Path | None = None, file: str = STORE_FILE) -> None:
        self.path = directory / file
        self._file = file
        self._shown = Path(name) if name is not None else directory
        self._lock = threading.Lock()
        self._budget = _Budget()
        # Errors of SQLite itself at load are left to the loader, which reports any unreadable file alike.
        self._connection = _connect(self.path)
        self._connection.set_progress_handler(self._budget.spend, _PROGRESS_STEP)
        pages, page_bytes = (self._query(f"PRAGMA {p}", (), self._lookup_budget(1))[0][0]
                             for p in ("page_count", "page_size"))
        self._bytes = pages * page_bytes
        problems = _schema_problems(self._query(_SCHEMA_QUERY, (), self._scan_budget()))
        if problems:
            shown = ", ".join(problems[:3]) + (f", and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise self._damaged(f"does not have the schema this library writes ({shown})")
        rows = self._query("SELECT passage_id, doc_id FROM passages ORDER BY row", (), self._scan_budget())
        self.passage_ids = [r[0] for r in rows]
        self.row_doc_ids = [r[1] for r in rows]
        self._check_passage_rows()
        self.num_documents = self._query("SELECT COUNT(*) FROM documents", (), self._scan_budget())[0][0]

    def __len__(self) -> int:
        return self.num_documents

    # -- bounded queries -----------------------------------------------------------------------------------------

    def _scan_budget(self) -> int:
        return _OPS_BASE + _OPS_PER_BYTE * self._bytes

    @staticmethod
    def _lookup_budget(keys: int) -> int:
        return _OPS_BASE + _OPS_PER_ROW * keys

    def _run(self, step: Callable[[], T], budget: int) -> T:
        with self._lock:
            self._budget.left = budget
            try:
                return step()
            except sqlite3.OperationalError:
                if self._budget.left >= 0:
                    raise
                raise self._damaged(f"is damaged or not written by this library: a query ran past its budget of "
                                    f"{budget} SQLite instructions (sized to the file)") from None

    def _query(self, sql: str, params: Sequence[Any], budget: int) -> list[Any]:
        return self._run(lambda: self._connection.execute(sql, params).fetchall(), budget)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """After load, SQLite's own errors (a damaged page, text that is not UTF-8) are the store's damage too."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._damaged(f"cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None

    def _damaged(self, problem: str) -> IndexDirError:
        return IndexDirError(f"{self._shown / self._file} {problem}; {rebuild_hint(self._shown)}")

    # -- checks --------------------------------------------------------------------------------------------------

    def _check_passage_rows(self) -> None:
        """Rows are positions in the BM25 and FAISS arrays, so they must be exactly 0..n-1 (`row` is the integer
        primary key: unique, so the count and both ends settle it), and ids must be text."""
        count = len(self.passage_ids)
        # Each of MIN and MAX alone is one b-tree descent; together in one statement they would be a full scan.
        ends = tuple(self._query(f"SELECT {end}(row) FROM passages", (), self._lookup_budget(1))[0][0]
                     for end in ("MIN", "MAX"))
        if count and ends != (0, count - 1):
            raise self._damaged(f"has passage rows that are not numbered 0 to {count - 1}")
        if set(map(type, self.passage_ids)).union(map(type, self.row_doc_ids)) - {str}:
            raise self._damaged("has passage ids or document ids that are not text")

    def _document(self, doc_id: Any, title: Any, text: Any, meta: Any) -> dict[str, Any]:
        where = f"holds document {_short.repr(doc_id)}"
        if not all(isinstance(v, str) for v in (doc_id, title, text, meta)):
            raise self._damaged(f"{where} with a value that is not text")
        try:
            metadata = json.loads(meta)
        except RecursionError:
            metadata = None  # far deeper than the limit below, which says so
        except ValueError as exc:
            raise self._damaged(f"{where} whose metadata is not valid JSON ({str(exc)[:200]})") from None
        # The corpus reader's own limit: deeper metadata was not written by a build, and could make a caller's
        # json.dumps (search.py --json) run out of stack.
        if metadata is None or _nested_deeper_than(metadata, MAX_JSON_DEPTH):
            raise self._damaged(f"{where} whose metadata is nested more than {MAX_JSON_DEPTH} levels deep")
        if not isinstance(metadata, dict):
            raise self._damaged(f"{where} whose metadata is not a JSON object")
        return {"title": title, "text": text, "metadata": metadata}

    # -- reads ---------------------------------------------------------------------------------------------------

    def get(self, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(doc_ids))
        out: dict[str, dict[str, Any]] = {}
        with self._reading():
            for start in range(0, len(ids), _BATCH):
                part = ids[start : start + _BATCH]
                marks = ",".join("?" * len(part))
                rows = self._query(f"SELECT doc_id, title, text, metadata FROM documents WHERE doc_id IN ({marks})",
                                   part, self._lookup_budget(len(part)))
                out.update((row[0], self._document(*row)) for row in rows)
        missing = next((d for d in ids if d not in out), None)
        if missing is not None:
            raise self._damaged(f"has no document {_short.repr(missing)} that the index refers to")
        return out

    def passage_texts(self, rows: Iterable[int]) -> dict[int, str]:
        """Text of each passage row (the document's text when the index is not chunked)."""
        out: dict[int, str] = {}
        wanted = [int(r) for r in dict.fromkeys(rows)]
        with self._reading():
            for start in range(0, len(wanted), _BATCH):
                part = wanted[start : start + _BATCH]
                marks = ",".join("?" * len(part))
                found = self._query(
                    f"SELECT p.row, p.doc_id, COALESCE(p.text, d.text) FROM passages p "
                    f"LEFT JOIN documents d ON p.doc_id = d.doc_id WHERE p.row IN ({marks})",
                    part, self._lookup_budget(len(part)),
                )
                for row, doc_id, text in found:
                    if not isinstance(text, str):
                        raise self._damaged(f"has no document {_short.repr(doc_id)} that passage row {row} refers to")
                    out[row] = text
        missing = next((r for r in wanted if r not in out), None)
        if missing is not None:
            raise self._damaged(f"has no passage row {missing}")
        return out

    def iter_documents(self) -> Iterator[Document]:
        with self._reading():
            cursor = self._run(lambda: self._connection.execute(
                "SELECT doc_id, title, text, metadata FROM documents ORDER BY rowid"), self._lookup_budget(1))
            while rows := self._run(lambda: cursor.fetchmany(1000), self._lookup_budget(1000)):
                for row in rows:
                    fields = self._document(*row)
                    yield Document(doc_id=row[0], text=fields["text"], title=fields["title"],
                                   metadata=fields["metadata"])
