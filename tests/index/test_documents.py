from __future__ import annotations

import json

import pytest

from index.builder import build_index
from index.config import CorpusConfig
from index.documents import CorpusError, ReadStats, read_corpus
from retrieval import SearchPipeline
from tests.conftest import SAMPLE_CORPUS, SCIFACT
from tests.reliability import bm25_only, bm25_pipeline_config


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_reads_beir_folder_with_titles_and_metadata():
    docs = list(read_corpus(SCIFACT))
    assert len(docs) == 5183
    assert docs[0].doc_id and docs[0].title and docs[0].text
    assert len({d.doc_id for d in docs}) == len(docs)


def test_jsonl_configurable_fields(tmp_path):
    f = write(tmp_path / "c.jsonl", '{"pid": "a", "body": "hello", "heading": "H", "lang": "en"}\n')
    cfg = CorpusConfig(id_field="pid", text_field="body", title_field="heading")
    (doc,) = read_corpus(f, cfg)
    assert (doc.doc_id, doc.text, doc.title, doc.metadata) == ("a", "hello", "H", {"lang": "en"})


def test_jsonl_accepts_plain_id_field(tmp_path):
    f = write(tmp_path / "c.jsonl", '{"id": 7, "text": "x"}\n')
    assert next(read_corpus(f)).doc_id == "7"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"_id": "a", "text": "x"}\n{"text": "y"}\n', r"c\.jsonl:2: missing field '_id'"),
        ('{"_id": "a"}\n', r"c\.jsonl:1: missing field 'text'"),
        ('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n',
         r"c\.jsonl:2: duplicate document id 'a'.*c\.jsonl:1"),
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', r"c\.jsonl:2: invalid JSON"),
        ('["a", "b"]\n', r"c\.jsonl:1: expected a JSON object"),
        ("", r"no documents"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, content, message):
    f = write(tmp_path / "c.jsonl", content)
    with pytest.raises(CorpusError, match=message):
        list(read_corpus(f))


def test_bad_utf8_names_line(tmp_path):
    f = write(tmp_path / "c.jsonl", b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: not valid UTF-8"):
        list(read_corpus(f))


def test_empty_documents_skipped_and_counted(tmp_path):
    f = write(tmp_path / "c.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "text": "  ", "title": ""}\n')
    stats = ReadStats()
    assert [d.doc_id for d in read_corpus(f, stats=stats)] == ["a"]
    assert stats.skipped_empty == 1
    with pytest.raises(CorpusError, match="no title and no text"):
        list(read_corpus(f, CorpusConfig(on_empty="error")))


def test_title_only_document_is_kept(tmp_path):
    f = write(tmp_path / "c.jsonl", '{"_id": "a", "text": "", "title": "Only a title"}\n')
    assert next(read_corpus(f)).title == "Only a title"


def test_csv_and_tsv(tmp_path):
    c = write(tmp_path / "c.csv", '_id,title,text\n1,T,"hello, world"\n2,,second\n')
    assert [(d.doc_id, d.text) for d in read_corpus(c)] == [("1", "hello, world"), ("2", "second")]
    t = write(tmp_path / "c.tsv", "_id\ttext\n1\tone\n1\ttwo\n")
    with pytest.raises(CorpusError, match=r"c\.tsv:3: duplicate"):
        list(read_corpus(t))


def test_folder_of_text_and_markdown(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "a.txt", "plain text")
    write(tmp_path / "sub" / "b.md", "# The Title\n\nbody")
    write(tmp_path / "ignored.bin", b"\x00\x01")
    docs = {d.doc_id: d for d in read_corpus(tmp_path)}
    assert set(docs) == {"a", "sub/b"}
    assert docs["sub/b"].title == "The Title"


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        list(read_corpus(tmp_path / "nope.jsonl"))
    with pytest.raises(CorpusError, match="cannot tell the corpus format"):
        list(read_corpus(write(tmp_path / "c.xml", "<a/>")))


def test_sample_corpus_is_valid():
    docs = list(read_corpus(SAMPLE_CORPUS))
    assert len(docs) == len(SAMPLE_CORPUS.read_text().splitlines())
    assert all(json.dumps(d.metadata) == "{}" for d in docs)


PAGE = """<!DOCTYPE html>
<html><head><title> Ocean
  Tides </title><style>p { color: red }</style><script>var tides = "not text";</script></head>
<body><nav><a href="/">Home</a> | <a href="/about">About</a></nav><!-- a comment, not text -->
<h1>Why the <em>sea</em> rises</h1>
<p>The moon   pulls
   the <b>ocean</b>, twice a day.</p><ul><li>spring tides</li><li>neap tides</li></ul>
<pre>high  04:12
low   10:31</pre><p>caf&eacute; &amp; harbour<br>after a break</p></body></html>
"""


def test_html_file_reads_the_page_text_and_title(tmp_path):
    """The text a browser shows, a line per block; no script, style, nav, comment or <head>; title = <title>."""
    write(tmp_path / "tides.html", PAGE)
    (doc,) = read_corpus(tmp_path)
    assert (doc.doc_id, doc.title) == ("tides", "Ocean Tides")
    assert doc.text == ("Why the sea rises\nThe moon pulls the ocean, twice a day.\nspring tides\nneap tides\n"
                        "high  04:12\nlow   10:31\ncafé & harbour\nafter a break")
    assert doc.metadata == {"path": str(tmp_path / "tides.html")}


@pytest.mark.parametrize(("name", "content", "title"), [
    ("a.htm", "<html><body><h1>First <i>heading</i></h1><h1>Second</h1><p>body</p></body></html>",
     "First heading"),
    ("b.html", "<p>no title and no heading</p>", "b"),
    ("c.HTML", "<title>Upper-case suffix</title><p>x</p>", "Upper-case suffix"),
])
def test_html_title_falls_back_to_the_first_h1_then_the_file_name(tmp_path, name, content, title):
    write(tmp_path / name, content)
    (doc,) = read_corpus(tmp_path)
    assert doc.title == title


@pytest.mark.parametrize(("content", "title"), [
    ("The Title\n=========\n\nBody text.\n", "The Title"),
    ("=========\n The Title\n=========\n\nSub\n---\n\nBody.\n", "The Title"),  # overlined, inset
    (":orphan:\n\nIntro paragraph.\n\nSection\n~~~~~~~\n\nmore\n", "Section"),  # the first title, not line 1
    ("Short underline\n-----\n\ntext\n", "Short underline"),  # docutils: an underline of 4 or more counts
    ("    an indented line\n    ================\n\nplain\n", "notes"),  # a block quote, not a title
    ("Just a paragraph,\nno section title.\n", "notes"),
])
def test_rst_title_is_the_first_section_title(tmp_path, content, title):
    write(tmp_path / "notes.rst", content)
    (doc,) = read_corpus(tmp_path)
    assert (doc.doc_id, doc.title, doc.text) == ("notes", title, content)


def test_skipped_files_are_counted_by_extension(tmp_path, caplog):
    for name in ("a.txt", "b.md", "c.html", "d.rst", "x.pdf", "y.pdf", "z.docx", "Makefile", "sub/w.PDF"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write(tmp_path / name, "text")
    stats = ReadStats()
    with caplog.at_level("WARNING", logger="index.documents"):
        assert len(list(read_corpus(tmp_path, stats=stats))) == 4
    assert stats.skipped_files == {".pdf": 3, ".docx": 1, "no extension": 1}
    line = "skipped 5 files: 3 .pdf, 1 .docx, 1 with no extension (read: .txt .md .html .htm .rst)"
    assert stats.skipped_files_line() == line
    assert [r.getMessage() for r in caplog.records] == [f"{tmp_path}: {line}"]


def test_nothing_skipped_says_nothing(tmp_path, caplog):
    write(tmp_path / "a.txt", "text")
    stats = ReadStats()
    with caplog.at_level("WARNING", logger="index.documents"):
        list(read_corpus(tmp_path, stats=stats))
    assert (stats.skipped_files, stats.skipped_files_line(), caplog.records) == ({}, None, [])


def test_html_and_rst_files_are_indexed_and_found(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder / "tides.html", PAGE)
    write(folder / "volcano.rst", "Volcanoes\n=========\n\nMagma rises through the crust.\n")
    write(folder / "sleep.txt", "adults should sleep seven hours")
    build_index(folder, tmp_path / "idx", bm25_only(), show_progress=False)
    pipe = SearchPipeline.from_config(bm25_pipeline_config(tmp_path / "idx"))
    assert [(r.doc_id, r.title) for r in pipe.query("harbour neap", top_k=3)] == [("tides", "Ocean Tides")]
    assert [(r.doc_id, r.title) for r in pipe.query("magma", top_k=3)] == [("volcano", "Volcanoes")]
    for query in ("var", "color red", "comment", "home"):  # script, style, comment and nav text: not indexed
        assert pipe.query(query, top_k=3) == [], query
