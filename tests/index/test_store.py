"""The document store opens strictly read-only from any path (nothing is ever written), serves only the schema
StoreWriter writes, bounds every query, and turns whatever a tampered file holds into one IndexDirError."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import index.store as store_module
from index.builder import build_index
from index.chunking import Passage
from index.directory import IndexDirectory
from index.documents import MAX_JSON_DEPTH, Document
from index.manifest import MANIFEST_FILE, IndexDirError, sha256_file
from index.store import STORE_FILE, DocumentStore, StoreWriter
from retrieval import SearchPipeline
from tests.conftest import ROOT, SAMPLE_CORPUS
from tests.reliability import answers, bm25_only, bm25_pipeline_config, copy_index

REBUILD = r"; rebuild it with: python scripts/build_index.py --config CONFIG --corpus CORPUS --output "
SCHEMA = rf"{STORE_FILE} does not have the schema this library writes"
TIDES = "why does the ocean have tides"  # its first hit is the document 'tides'


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "idx"
    build_index(SAMPLE_CORPUS, path, bm25_only(), show_progress=False)
    return path


@pytest.fixture(scope="module")
def expected(built) -> list[list[tuple]]:
    return answers(SearchPipeline.from_config(bm25_pipeline_config(built)))


@pytest.fixture
def index_copy(tmp_path, built) -> Path:
    return copy_index(built, tmp_path / "idx")


def _tree(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def _rehash(index: Path) -> None:
    """What someone with write access does after editing a file: make the manifest match it."""
    manifest = json.loads((index / MANIFEST_FILE).read_text())
    for name in manifest["files"]:
        manifest["files"][name] = {"sha256": sha256_file(index / name), "bytes": (index / name).stat().st_size}
    (index / MANIFEST_FILE).write_text(json.dumps(manifest))


def _tamper(index: Path, sql: str) -> None:
    with closing(sqlite3.connect(index / STORE_FILE)) as conn:
        conn.executescript(sql)
    _rehash(index)


def _pipeline(index: Path) -> SearchPipeline:
    return SearchPipeline.from_config(bm25_pipeline_config(index))


# -- any path: the SQLite URI is quoted, so '#', '?', '%' and the rest name the file they say ---------------------


@pytest.mark.parametrize("name", ["hash#dir", "query?mode=rwc", "percent%41", "space dir", "all #?%20 é"])
def test_index_path_with_uri_characters_builds_and_searches(tmp_path, expected, name):
    """Before, '#' cut the URI (losing mode=ro: an empty file was created outside the index) and '?'/'%' named
    another file; the special characters are both in a parent folder and in the index's own name."""
    index = tmp_path / name / f"idx {name}"
    build_index(SAMPLE_CORPUS, index, bm25_only(), show_progress=False)
    before = _tree(tmp_path)
    assert answers(_pipeline(index)) == expected
    assert _tree(tmp_path) == before


_NAME = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_NAME.filter(lambda n: n not in (".", "..")))
def test_store_opens_under_any_folder_name(name):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        writer = StoreWriter(folder, chunked=False)
        writer.add(Document("d", "some text", "a title", {"k": name}), [Passage("d", "d", "a title", "some text")])
        writer.close()
        before = _tree(Path(tmp))
        store = DocumentStore(folder)
        assert store.passage_ids == ["d"]
        assert store.get(["d"])["d"] == {"title": "a title", "text": "some text", "metadata": {"k": name}}
        assert store.passage_texts([0]) == {0: "some text"}
        assert _tree(Path(tmp)) == before


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="directory handles as paths are a Linux feature")
def test_store_opened_through_a_directory_handle(tmp_path, index_copy):
    """A loader that opens the index folder once reads its files through /proc/self/fd/N: the store must open
    there, and keep serving the build it was opened on after that build is swapped away from its name."""
    fd = os.open(index_copy, os.O_RDONLY | os.O_DIRECTORY)
    try:
        index_copy.rename(tmp_path / "swapped away #1")
        other = tmp_path / "other.jsonl"
        other.write_text('{"_id": "tides", "title": "another build", "text": "x"}\n')
        build_index(other, index_copy, bm25_only(), show_progress=False)
        store = DocumentStore(Path(f"/proc/self/fd/{fd}"), name=index_copy)
        assert store.get(["tides"])["tides"]["title"] == "Why the sea has tides"
        assert len(store.passage_ids) == 24
    finally:
        os.close(fd)


def test_messages_name_the_index_path_given(tmp_path, index_copy):
    _tamper(index_copy, "DELETE FROM documents WHERE doc_id = 'tides';")
    store = DocumentStore(index_copy, name=tmp_path / "shown")
    shown = re.escape(str(tmp_path / "shown" / STORE_FILE))
    with pytest.raises(IndexDirError, match=rf"^{shown} has no document 'tides' that the index refers to{REBUILD}"):
        store.get(["tides"])


# -- WAL: immutable means the hashed file is all that is read, and nothing is written beside it -------------------


def test_wal_mode_store_writes_nothing(index_copy, expected):
    with closing(sqlite3.connect(index_copy / STORE_FILE)) as conn:
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    _rehash(index_copy)
    before = _tree(index_copy)
    assert answers(_pipeline(index_copy)) == expected
    assert _tree(index_copy) == before  # no -shm or -wal file appeared


def test_write_ahead_log_beside_the_store_is_ignored(index_copy, expected):
    """A -wal file is not in the manifest: what it holds (here: every document deleted) must not be served."""
    with closing(sqlite3.connect(index_copy / STORE_FILE)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    _rehash(index_copy)
    with closing(sqlite3.connect(index_copy / STORE_FILE)) as writer:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("DELETE FROM documents")
        writer.commit()
        assert (index_copy / f"{STORE_FILE}-wal").stat().st_size > 0
        assert answers(_pipeline(index_copy)) == expected


# -- the schema: exactly what StoreWriter creates --------------------------------------------------------------


@pytest.mark.parametrize(("sql", "detail"), [
    ("ALTER TABLE passages RENAME TO p0; CREATE VIEW passages AS SELECT * FROM p0;",
     r"table 'passages' is missing, unexpected table 'p0', unexpected view 'passages'"),
    ("CREATE TRIGGER t AFTER INSERT ON documents BEGIN SELECT 1; END;", r"unexpected trigger 't'"),
    ("CREATE INDEX by_doc ON passages(doc_id);", r"unexpected index 'by_doc'"),
    ("ALTER TABLE documents ADD COLUMN extra TEXT;", r"table 'documents' is defined differently"),
    ("DROP TABLE passages;", r"table 'passages' is missing"),
    ("ANALYZE;", r"unexpected table 'sqlite_stat1'"),
    ("".join(f"CREATE TABLE t{i} (x);" for i in range(9)), r"unexpected table 't0', .* and 6 more"),
], ids=["view", "trigger", "index", "column", "missing-table", "statistics", "many"])
def test_other_schema_is_refused(index_copy, sql, detail):
    _tamper(index_copy, sql)
    with pytest.raises(IndexDirError, match=rf"{SCHEMA} \({detail}\){REBUILD}"):
        IndexDirectory.load(index_copy)


# The package's __init__ imports the model stack (seconds); the store needs none of it, so the child skips it.
_OPEN_STORE = """
import pathlib, sys, types
package = types.ModuleType("index")
package.__path__ = ["index"]
sys.modules["index"] = package
from index.store import DocumentStore
DocumentStore(pathlib.Path(sys.argv[1]))
"""


def test_infinite_view_is_refused_without_running_it(tmp_path, index_copy):
    """The issue's hang: a `passages` view over an endless recursive query (SQLite spilled its sort to a temp
    file). Run in a child process so that, were it ever to hang again, the test fails instead of hanging."""
    _tamper(index_copy, "ALTER TABLE passages RENAME TO p0; CREATE VIEW passages AS WITH RECURSIVE r(n) AS "
                        "(SELECT 0 UNION ALL SELECT n + 1 FROM r) SELECT n AS row, 'p' AS passage_id, "
                        "'d' AS doc_id, NULL AS text FROM r ORDER BY n DESC;")
    env = {**os.environ, "SQLITE_TMPDIR": str(tmp_path)}  # were it to spill again, into a folder pytest removes
    done = subprocess.run([sys.executable, "-c", _OPEN_STORE, str(index_copy)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert "IndexDirError" in done.stderr and "unexpected view 'passages'" in done.stderr


def test_passage_rows_must_be_numbered_from_zero(index_copy):
    """Rows are positions in the BM25 and FAISS arrays: a renumbered row would serve another passage's text."""
    _tamper(index_copy, "UPDATE passages SET row = 1000 WHERE row = 3;")
    with pytest.raises(IndexDirError, match=rf"has passage rows that are not numbered 0 to 23{REBUILD}"):
        IndexDirectory.load(index_copy)


def test_passage_ids_must_be_text(index_copy):
    _tamper(index_copy, "UPDATE passages SET doc_id = x'00' WHERE row = 3;")
    with pytest.raises(IndexDirError, match=rf"has passage ids or document ids that are not text{REBUILD}"):
        IndexDirectory.load(index_copy)


# -- bounded queries --------------------------------------------------------------------------------------------


def _exact_accounting(monkeypatch) -> None:
    """Check the budget after every instruction: the tiny test stores run fewer than one default step."""
    monkeypatch.setattr(store_module, "_PROGRESS_STEP", 1)


@pytest.mark.parametrize("call", ["load", "get", "passage_texts", "iter_documents"])
def test_every_query_is_bounded(index_copy, monkeypatch, call):
    """Every statement runs under an instruction budget; with none left, each one stops with a clear error."""
    _exact_accounting(monkeypatch)
    store = None if call == "load" else DocumentStore(index_copy)
    for name in ("_OPS_BASE", "_OPS_PER_BYTE", "_OPS_PER_ROW"):
        monkeypatch.setattr(store_module, name, 0)
    with pytest.raises(IndexDirError, match=r"is damaged or not written by this library: a query ran past its "
                                            rf"budget of 0 SQLite instructions \(sized to the file\){REBUILD}"):
        if store is None:
            DocumentStore(index_copy)
        elif call == "get":
            store.get(["tides"])
        elif call == "passage_texts":
            store.passage_texts([0])
        else:
            list(store.iter_documents())


def test_the_densest_store_stays_within_budget(tmp_path, monkeypatch):
    """Budgets grow with what a query may touch (the file's bytes for a scan, the keys for a lookup): without the
    fixed base, a store of the smallest possible rows still scans and looks everything up within them."""
    _exact_accounting(monkeypatch)
    monkeypatch.setattr(store_module, "_OPS_BASE", 0)
    writer = StoreWriter(tmp_path, chunked=True)
    ids = [str(i) for i in range(3000)]
    for doc_id in ids:
        writer.add(Document(doc_id, ""), [Passage(doc_id, doc_id, "", "")])
    writer.close()
    store = DocumentStore(tmp_path)
    assert store.passage_ids == ids
    assert len(list(store.iter_documents())) == len(store.get(ids)) == len(store.passage_texts(range(3000))) == 3000


# -- rows and values a tampered store holds ------------------------------------------------------------------------


def _nested(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


@pytest.mark.parametrize(("sql", "problem"), [
    ("DELETE FROM documents WHERE doc_id = 'tides';", r"has no document 'tides' that the index refers to"),
    ("UPDATE documents SET title = x'00ff' WHERE doc_id = 'tides';", r"holds document 'tides' with a value that "
                                                                     r"is not text"),
    ("UPDATE documents SET metadata = '{' WHERE doc_id = 'tides';", r"holds document 'tides' whose metadata is "
                                                                    r"not valid JSON \(Expecting"),
    ("UPDATE documents SET metadata = '[1]' WHERE doc_id = 'tides';", r"holds document 'tides' whose metadata is "
                                                                      r"not a JSON object"),
    (f"UPDATE documents SET metadata = '{_nested(3000)}' WHERE doc_id = 'tides';",
     rf"holds document 'tides' whose metadata is nested more than {MAX_JSON_DEPTH} levels deep"),
    (f"UPDATE documents SET metadata = '{_nested(MAX_JSON_DEPTH + 1)}' WHERE doc_id = 'tides';",
     rf"holds document 'tides' whose metadata is nested more than {MAX_JSON_DEPTH} levels deep"),
], ids=["deleted-document", "blob-title", "metadata-not-json", "metadata-not-an-object", "metadata-nested-3000",
        "metadata-deeper-than-a-corpus-may-be"])
def test_tampered_document_is_refused_when_served(index_copy, sql, problem):
    """Once loaded (nothing at load time reads every document), the damage is found by the query that needs it."""
    _tamper(index_copy, sql)
    pipe = _pipeline(index_copy)
    message = rf"^{re.escape(str(index_copy / STORE_FILE))} {problem}.*{REBUILD}"
    with pytest.raises(IndexDirError, match=message):
        pipe.query(TIDES)
    if sql.startswith("UPDATE"):  # a damaged value is found by a full read too
        with pytest.raises(IndexDirError, match=message):
            list(pipe.index.store.iter_documents())


def test_passage_of_a_deleted_document(index_copy):
    _tamper(index_copy, "DELETE FROM documents WHERE doc_id = 'tides';")
    row = DocumentStore(index_copy).passage_ids.index("tides")
    with pytest.raises(IndexDirError, match=rf"has no document 'tides' that passage row {row} refers to{REBUILD}"):
        DocumentStore(index_copy).passage_texts([row])
    with pytest.raises(IndexDirError, match=rf"has no passage row 24{REBUILD}"):
        DocumentStore(index_copy).passage_texts([24])


def test_metadata_as_deep_as_a_corpus_may_nest_is_served(index_copy):
    _tamper(index_copy, f"UPDATE documents SET metadata = '{_nested(MAX_JSON_DEPTH)}' WHERE doc_id = 'tides';")
    metadata = DocumentStore(index_copy).get(["tides"])["tides"]["metadata"]
    assert json.dumps(metadata) == _nested(MAX_JSON_DEPTH)
