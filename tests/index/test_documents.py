from __future__ import annotations

import json

import pytest

from index.config import CorpusConfig
from index.documents import CorpusError, ReadStats, read_corpus
from tests.conftest import SAMPLE_CORPUS, SCIFACT


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
