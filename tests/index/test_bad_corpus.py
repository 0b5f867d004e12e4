"""Bad corpus input: every case has one defined outcome (error naming file:line, skipped and counted, or indexed),
and a build that fails on bad input never touches the good index it would have replaced."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from index.analyzer import Analyzer
from index.builder import build_index
from index.config import CorpusConfig
from index.directory import IndexDirectory
from index.documents import MAX_JSON_DEPTH, CorpusError, ReadStats, read_corpus, read_documents
from retrieval import SearchPipeline
from tests.conftest import ROOT, SAMPLE_CORPUS, pipeline_config
from tests.reliability import answers, bm25_only, bm25_pipeline_config, leftovers

GOOD = '{"_id": "a", "text": "a good first document"}\n'


def _stray_quote_csv(rows: int, stray_row: int) -> str:
    """A CSV of `rows` documents where row `stray_row` (1-based, so line `stray_row + 1`) opens a quote it never
    closes: a lenient reader swallows every later row into that one field."""
    lines = [f"{i},row number {i}" for i in range(1, rows + 1)]
    lines[stray_row - 1] = f'{stray_row},"a stray quote opens this field'
    return "_id,text\n" + "\n".join(lines) + "\n"


def _deep_line(depth: int, kind: str = "[", text: str = "y") -> str:
    """A JSONL record nested `depth` levels deep (the record's own object is level 1)."""
    record = f'{{"_id": "b", "text": "{text}"'
    if depth == 1:
        return record + "}\n"
    inner = depth - 1
    nested = "[" * inner + "]" * inner if kind == "[" else '{"k": ' * (inner - 1) + "{}" + "}" * (inner - 1)
    return f'{record}, "m": {nested}}}\n'


# (case, file name, content, CorpusError message): refused with the file and line that is wrong.
REFUSED = [
    ("missing-id", "c.jsonl", GOOD + '{"text": "y"}\n', r"c\.jsonl:2: missing field '_id'"),
    ("missing-text", "c.jsonl", GOOD + '{"_id": "b", "title": "t"}\n', r"c\.jsonl:2: missing field 'text'"),
    ("null-text", "c.jsonl", GOOD + '{"_id": "b", "text": null}\n', r"c\.jsonl:2: missing field 'text'"),
    ("blank-id", "c.jsonl", GOOD + '{"_id": "  ", "text": "y"}\n', r"c\.jsonl:2: empty document id"),
    ("text-not-a-string", "c.jsonl", GOOD + '{"_id": "b", "text": {"x": 1}}\n',
     r"c\.jsonl:2: field 'text' must be a string or number, not dict"),
    ("duplicate-id", "c.jsonl", GOOD + '{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n',
     r"c\.jsonl:3: duplicate document id 'a' \(first seen at .*c\.jsonl:1\)"),
    ("invalid-json", "c.jsonl", GOOD + '{"_id": "b", "text": "unterminated}\n', r"c\.jsonl:2: invalid JSON"),
    ("truncated-last-line", "c.jsonl", GOOD + '{"_id": "b", "te', r"c\.jsonl:2: invalid JSON"),
    ("json-not-an-object", "c.jsonl", GOOD + '["b", "text"]\n', r"c\.jsonl:2: expected a JSON object, got list"),
    ("non-utf8-bytes", "c.jsonl", GOOD.encode() + b'{"_id": "b", "text": "caf\xe9"}\n',
     r"c\.jsonl:2: not valid UTF-8 \(byte 25"),
    ("utf16-file", "c.jsonl", GOOD.encode("utf-16"), r"c\.jsonl:1: not valid UTF-8"),
    ("lone-surrogate-text", "c.jsonl", GOOD + '{"_id": "b", "text": "bad \\ud800 escape"}\n',
     r"c\.jsonl:2: field 'text' holds an unpaired surrogate"),
    ("lone-surrogate-id", "c.jsonl", GOOD + '{"_id": "b\\udfff", "text": "y"}\n',
     r"c\.jsonl:2: field '_id' holds an unpaired surrogate"),
    ("lone-surrogate-metadata", "c.jsonl", GOOD + '{"_id": "b", "text": "y", "src": "\\udc80"}\n',
     r"c\.jsonl:2: a metadata field holds an unpaired surrogate"),
    ("empty-file", "c.jsonl", "", r"c\.jsonl: the corpus holds no documents with text; nothing to index"),
    ("only-blank-lines", "c.jsonl", "\n   \n\t\n", r"c\.jsonl: the corpus holds no documents"),
    ("only-empty-documents", "c.jsonl", '{"_id": "a", "text": ""}\n{"_id": "b", "text": " ", "title": ""}\n',
     r"c\.jsonl: the corpus holds no documents"),
    ("csv-extra-value", "c.csv", "_id,text\na,x\nb,y,z\n", r"c\.csv:3: more values than header columns \(2\)"),
    ("csv-missing-text-column", "c.csv", "_id,body\na,x\n", r"c\.csv:2: missing field 'text'"),
    ("csv-non-utf8", "c.csv", b"_id,text\na,x\nb,\xff\n", r"c\.csv:3: not valid UTF-8"),
    ("csv-empty-file", "c.csv", "", r"c\.csv: empty file; the first row must name the columns"),
    ("unknown-extension", "c.xml", "<doc/>", r"c\.xml: cannot tell the corpus format"),
    ("csv-stray-quote", "c.csv", _stray_quote_csv(100, 3),
     r"c\.csv:4: a quoted field opens on this line and runs on into line 5.*corpus\.multiline_fields: true"),
    ("csv-unterminated-quote", "c.csv", '_id,text\na,x\nb,"never closed\n',
     r"c\.csv:3: a quoted field in the record that starts on this line is never closed"),
    ("csv-text-after-closing-quote", "c.csv", '_id,text\na,"quoted" then more\n',
     r"c\.csv:2: malformed quoting \(',' expected after '\"'\)"),
    ("csv-carriage-return-in-field", "c.csv", "_id,text\na,one\rtwo\n",
     r"c\.csv:2: a carriage return \(\\r\) inside an unquoted field"),
    ("json-nested-3000-levels", "c.jsonl", GOOD + _deep_line(3000), rf"c\.jsonl:2: nested more than {MAX_JSON_DEPTH} "),
    ("json-nested-past-the-bound", "c.jsonl", GOOD + _deep_line(MAX_JSON_DEPTH + 1, "{"),
     rf"c\.jsonl:2: nested more than {MAX_JSON_DEPTH} levels deep"),
]


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.parametrize(("case", "name", "content", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_file_and_line(tmp_path, case, name, content, message):
    path = _write(tmp_path, name, content)
    with pytest.raises(CorpusError, match=message):
        list(read_corpus(path))


def test_folder_errors_name_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"empty: no \.txt or \.md files found"):
        list(read_corpus(tmp_path / "empty"))
    folder = tmp_path / "docs"
    folder.mkdir()
    _write(folder, "a.txt", "fine")
    _write(folder, "b.txt", b"line one\nline \xff two\n")
    with pytest.raises(CorpusError, match=r"docs/b\.txt:2: not valid UTF-8"):
        list(read_corpus(folder))
    with pytest.raises(CorpusError, match=r"nope: no such file or folder"):
        list(read_corpus(tmp_path / "nope"))


@pytest.mark.parametrize("raw_name", [b"caf\xe9.txt", b"d\xe9j\xe0/x.md"])
def test_folder_non_utf8_file_name_is_named(tmp_path, raw_name):
    """A name the file system holds as non-UTF-8 bytes cannot be an id or be stored: refused, naming the file in a
    message that can itself be printed (the bad bytes shown as \\xNN)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    _write(folder, "ok.txt", "fine")
    bad = os.path.join(os.fsencode(folder), raw_name)
    os.makedirs(os.path.dirname(bad), exist_ok=True)
    with open(bad, "wb") as fh:
        fh.write(b"text in a file with a latin-1 name")
    shown = re.escape(raw_name.decode("utf-8", "backslashreplace"))
    with pytest.raises(CorpusError, match=rf"docs/{shown}: the path is not valid UTF-8.*rename the file") as err:
        build_index(folder, tmp_path / "idx", bm25_only(), show_progress=False)
    assert str(err.value).encode("utf-8")  # printable: no lone surrogates from the name
    assert not (tmp_path / "idx").exists()


def test_folder_ids_differing_only_by_suffix(tmp_path):
    """notes.md beside notes.txt: refused naming both files and the way out; with corpus.folder_id_suffix the ids
    keep the suffix and both are indexed."""
    folder = tmp_path / "docs"
    folder.mkdir()
    _write(folder, "notes.md", "# Notes\nthe markdown version")
    _write(folder, "notes.txt", "the plain text version")
    _write(folder, "other.txt", "something else")
    with pytest.raises(CorpusError, match=r"docs/notes\.txt: document id 'notes' is also the id of .*docs/notes\.md"
                       r".*corpus\.folder_id_suffix: true"):
        build_index(folder, tmp_path / "idx", bm25_only(), show_progress=False)
    corpus = {"folder_id_suffix": True}
    report = build_index(folder, tmp_path / "idx", bm25_only(corpus=corpus), show_progress=False)
    assert report.documents == 3
    config = bm25_pipeline_config(tmp_path / "idx")
    config["index"]["corpus"] = corpus
    hits = SearchPipeline.from_config(config).query("version", top_k=5)
    assert {(r.doc_id, r.title) for r in hits} == {("notes.md", "Notes"), ("notes.txt", "notes")}


def test_csv_multiline_fields_need_the_option(tmp_path):
    """A quoted field over several lines is refused by default (that is what a stray quote looks like); with
    corpus.multiline_fields it is read, and an unterminated quote is still refused naming its record's line."""
    corpus = _write(tmp_path, "c.csv", '_id,text\na,"two\nlines"\nb,after\n')
    with pytest.raises(CorpusError, match=r"c\.csv:2: a quoted field opens on this line and runs on into line 3"):
        list(read_corpus(corpus))
    multiline = CorpusConfig(multiline_fields=True)
    assert [(d.doc_id, d.text) for d in read_corpus(corpus, multiline)] == [("a", "two\nlines"), ("b", "after")]
    unterminated = _write(tmp_path, "u.csv", '_id,text\na,"two\nlines"\nb,"never closed\nc,x\nd,y\n')
    with pytest.raises(CorpusError, match=r"u\.csv:4: a quoted field in the record that starts on this line is "
                       r"never closed: it runs to the end of the file \(lines 4-6\)"):
        list(read_corpus(unterminated, multiline))


def test_tsv_quotes_are_literal(tmp_path):
    """TSV has no quoting (IANA text/tab-separated-values, as BEIR and MS MARCO write it): a quote is text, and a
    quote at the start of a field cannot swallow the rows after it."""
    corpus = _write(tmp_path, "c.tsv", '_id\ttext\n1\t"Hello," she said\n2\tsecond "row\n3\t""doubled""\n')
    assert [(d.doc_id, d.text) for d in read_corpus(corpus)] == [
        ("1", '"Hello," she said'), ("2", 'second "row'), ("3", '""doubled""')]


def test_quoting_can_be_forced(tmp_path):
    """corpus.quoting: none reads a CSV whose quotes are plain text (the stray quote is kept, no row is lost);
    corpus.quoting: csv reads a TSV written with CSV quoting (a tab inside a quoted field)."""
    stray = _write(tmp_path, "c.csv", _stray_quote_csv(100, 3))
    docs = list(read_corpus(stray, CorpusConfig(quoting="none")))
    assert [d.doc_id for d in docs] == [str(i) for i in range(1, 101)]
    assert docs[2].text == '"a stray quote opens this field'
    quoted = _write(tmp_path, "q.tsv", '_id\ttext\n1\t"a tab\tinside"\n2\t"say ""hi"""\n')
    assert [d.text for d in read_corpus(quoted, CorpusConfig(quoting="csv"))] == ["a tab\tinside", 'say "hi"']


_ANY_TEXT = st.text(st.one_of(st.sampled_from('"\',\t\n\r '), st.characters(blacklist_categories=("Cs",))),
                    min_size=1).filter(str.strip)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(_ANY_TEXT, min_size=1, max_size=6))
def test_csv_reads_back_what_the_csv_module_writes(tmp_path_factory, texts):
    """Whatever the text (quotes, commas, line breaks), a CSV written by csv.writer reads back row for row and
    character for character, or (only when a field spans lines, without corpus.multiline_fields) is refused."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # \r\n line ends: the writer then quotes any field holding \r or \n
    writer.writerows([("_id", "text"), *((f"d{i}", text) for i, text in enumerate(texts))])
    corpus = tmp_path_factory.mktemp("csv") / "c.csv"
    corpus.write_text(buffer.getvalue(), encoding="utf-8")
    expected = [(f"d{i}", text) for i, text in enumerate(texts)]
    assert [(d.doc_id, d.text) for d in read_corpus(corpus, CorpusConfig(multiline_fields=True))] == expected
    if any("\n" in text for text in texts):
        with pytest.raises(CorpusError, match=r"c\.csv:\d+: a quoted field opens on this line"):
            list(read_corpus(corpus))
    else:
        assert [(d.doc_id, d.text) for d in read_corpus(corpus)] == expected


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(_ANY_TEXT.map(lambda t: re.sub(r"[\t\n\r]", " ", t)).filter(str.strip), min_size=1,
                      max_size=6))
def test_tsv_reads_back_any_text_without_tabs_and_line_breaks(tmp_path_factory, texts):
    corpus = tmp_path_factory.mktemp("tsv") / "c.tsv"
    corpus.write_text("_id\ttext\n" + "".join(f"d{i}\t{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
    assert [(d.doc_id, d.text) for d in read_corpus(corpus)] == [(f"d{i}", t) for i, t in enumerate(texts)]


@settings(max_examples=40, deadline=None)
@example(depth=MAX_JSON_DEPTH, kind="[")
@example(depth=MAX_JSON_DEPTH + 1, kind="[")
@example(depth=3000, kind="{")
@given(depth=st.integers(1, 3000), kind=st.sampled_from("[{"))
def test_nesting_is_read_up_to_the_bound_and_refused_beyond(tmp_path_factory, depth, kind):
    """Any depth: read (and storable) up to MAX_JSON_DEPTH, else refused with file:line; never a RecursionError."""
    corpus = tmp_path_factory.mktemp("deep") / "c.jsonl"
    corpus.write_text(GOOD + _deep_line(depth, kind), encoding="utf-8")
    if depth <= MAX_JSON_DEPTH:
        _, doc = read_corpus(corpus)
        assert json.loads(json.dumps(doc.metadata)) == doc.metadata
    else:
        with pytest.raises(CorpusError, match=rf"c\.jsonl:2: nested more than {MAX_JSON_DEPTH} levels deep"):
            list(read_corpus(corpus))


def test_in_memory_documents_nesting_is_bounded():
    """read_documents: a dict nested past the bound, or one that contains itself, is refused (it used to raise
    RecursionError / ValueError from json)."""
    cyclic: dict = {"_id": "a", "text": "x"}
    cyclic["self"] = cyclic
    deep = json.loads(_deep_line(MAX_JSON_DEPTH + 1))
    for record in (cyclic, deep):
        with pytest.raises(CorpusError, match=rf"document #1: nested more than {MAX_JSON_DEPTH} levels deep"):
            read_documents([{"_id": "ok", "text": "fine"}, record])


def test_metadata_at_the_nesting_bound_is_stored_and_returned(tmp_path):
    """The deepest record the reader accepts goes through the store and comes back whole."""
    corpus = _write(tmp_path, "c.jsonl", _deep_line(MAX_JSON_DEPTH, text="deep metadata"))
    build_index(corpus, tmp_path / "idx", bm25_only(), show_progress=False)
    (hit,) = SearchPipeline.from_config(bm25_pipeline_config(tmp_path / "idx")).query("deep metadata")
    record = json.loads(_deep_line(MAX_JSON_DEPTH))
    assert hit.metadata == {"m": record["m"]}


@pytest.fixture(scope="module")
def good_index(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good") / "idx"
    build_index(SAMPLE_CORPUS, out, bm25_only(), show_progress=False)
    return out


def test_failed_build_keeps_the_good_index(tmp_path, good_index):
    """Every refused corpus, built over a good index: the error surfaces, the old index still loads (sha256
    verified) and answers exactly as before, and the failed build leaves nothing behind."""
    before = answers(SearchPipeline.from_config(bm25_pipeline_config(good_index)))
    manifest = (good_index / "manifest.json").read_bytes()
    for case, name, content, message in REFUSED:
        corpus = _write(tmp_path, f"{case}-{name}", content)
        with pytest.raises(CorpusError, match=message):  # the file is named {case}-c.jsonl
            build_index(corpus, good_index, bm25_only(), show_progress=False)
        assert leftovers(good_index) == [], case
    assert (good_index / "manifest.json").read_bytes() == manifest
    assert answers(SearchPipeline.from_config(bm25_pipeline_config(good_index))) == before


def test_empty_documents_are_skipped_counted_and_logged(tmp_path, caplog):
    corpus = _write(tmp_path, "c.jsonl", GOOD + '{"_id": "b", "text": ""}\n{"_id": "c", "text": " \\n\\t "}\n'
                    '{"_id": "d", "text": "", "title": "a title is enough"}\n\n')
    with caplog.at_level(logging.WARNING, logger="index.documents"):
        report = build_index(corpus, tmp_path / "idx", bm25_only(), show_progress=False)
    assert (report.documents, report.skipped_empty) == (2, 2)
    assert "c.jsonl: skipped 2 documents with no title and no text" in caplog.text
    idx = IndexDirectory.load(tmp_path / "idx")
    assert idx.manifest["counts"]["skipped_empty"] == 2
    assert idx.store.passage_ids == ["a", "d"]
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: document 'b' has no title and no text"):
        list(read_corpus(corpus, CorpusConfig(on_empty="error")))


def test_odd_but_valid_input_is_indexed(tmp_path):
    """A BOM, CRLF line ends, control characters and NUL inside text, numeric ids: all indexed as given."""
    body = ('{"_id": 1, "text": "tab\\tand\\u0000nul and bell\\u0007 inside"}\r\n'
            '{"_id": "2", "text": "windows line ends"}\r\n')
    corpus = _write(tmp_path, "c.jsonl", "\ufeff".encode() + body.encode())
    build_index(corpus, tmp_path / "idx", bm25_only(), show_progress=False)
    pipe = SearchPipeline.from_config(bm25_pipeline_config(tmp_path / "idx"))
    (hit,) = pipe.query("bell nul", top_k=5)
    assert (hit.doc_id, hit.text) == ("1", "tab\tand\x00nul and bell\x07 inside")
    assert [r.doc_id for r in pipe.query("windows")] == ["2"]


LONG_WORD = "".join(random.Random(0).choice("abcdefghij") for _ in range(10_000))
MIXED = [
    {"_id": "long-word", "text": f"a document with a {LONG_WORD} in it"},
    {"_id": "cjk", "text": "東京タワーは東京の電波塔です。"},
    {"_id": "arabic", "text": "مُحَمَّد يقرأ الكتاب في المكتبة"},
    {"_id": "hindi", "text": "नमस्ते दुनिया, यह एक परीक्षण है"},
    {"_id": "emoji", "text": "🎉🎉 party time 😀 👍🏽"},
    {"_id": "russian", "text": "Привет мир, это проверка"},
    {"_id": "english", "text": "ocean tides follow the moon"},
]


@pytest.fixture(scope="module")
def mixed_index(tmp_path_factory, tiny_bi_encoder) -> tuple[Path, SearchPipeline]:
    tmp = tmp_path_factory.mktemp("mixed")
    corpus = tmp / "c.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in MIXED), encoding="utf-8")
    config = pipeline_config(tmp / "idx", tiny_bi_encoder)
    from retrieval.config import load_config

    build_index(corpus, tmp / "idx", load_config(config).build_config(), show_progress=False)
    return tmp / "idx", SearchPipeline.from_config(config)


@pytest.mark.parametrize(("query", "doc_id"), [
    (LONG_WORD, "long-word"),
    (LONG_WORD[:64] + "zzzz", "long-word"),  # terms are cut at max_token_length (64): the tail is ignored
    ("東京", "cjk"),
    ("電波", "cjk"),
    ("مُحَمَّد", "arabic"),
    ("नमस्ते", "hindi"),
    ("परीक्षण", "hindi"),
    ("привет", "russian"),
    ("party", "emoji"),
])
def test_mixed_scripts_and_long_words_are_found(mixed_index, query, doc_id):
    _, pipe = mixed_index
    (first,) = pipe.retrieve([query], stage="bm25", top_k=1)
    assert first and first[0][0] == doc_id
    assert pipe.query(query, top_k=3)  # the hybrid pipeline answers too


def test_mixed_scripts_analysis():
    """The defined tokens: CJK one per character, words keep their combining marks, emoji are not terms."""
    a = Analyzer()
    assert a.tokenize("東京タワー") == ["東", "京", "タ", "ワ", "ー"]
    assert a.tokenize("مُحَمَّد يقرأ") == ["مُحَمَّد", "يقرأ"]
    assert a.tokenize("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]
    assert a.tokenize("🎉😀👍🏽") == []
    assert [len(t) for t in a.tokenize(LONG_WORD)] == [64]


def test_emoji_only_query_gets_dense_answers(mixed_index):
    _, pipe = mixed_index
    assert pipe.retrieve(["🎉😀"], stage="bm25") == [[]]
    hits = pipe.query("🎉😀", top_k=3)
    assert len(hits) == 3 and all("bm25" not in r.stages and "dense" in r.stages for r in hits)


_MEMORY_PROBE = """
import json, resource, sys
from index.builder import build_index
from index.chunking import chunk_document
from index.config import BuildConfig, ChunkingConfig
from index.documents import read_corpus
def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
docs = list(read_corpus(sys.argv[1]))
before = peak_mib()
passages = sum(1 for doc in docs for _ in chunk_document(doc, ChunkingConfig(max_words=200, overlap=20)))
chunk_growth = peak_mib() - before
del docs
report = build_index(sys.argv[1], sys.argv[2], BuildConfig.model_validate({"dense": {"enabled": False}}),
                     show_progress=False)
print(json.dumps({"passages": passages, "chunk_growth": chunk_growth, "build_growth": peak_mib() - before}))
"""


def test_20mb_document_memory_stays_bounded(tmp_path):
    """One 20 MB document (3.65 million words), in a fresh process: splitting it into passages grows the peak RSS
    by under 5x the document (a tuple per word made that about 21x), and a BM25 build of it by under 12x (21x
    before the analyzer sliced long texts)."""
    rng = random.Random(0)
    words = 3_650_000
    text = " ".join(rng.choices([f"w{i}" for i in range(5000)] + ["ocean", "tides", "volcano"], k=words))
    doc_mib = len(text) / 2**20
    assert 20 <= doc_mib < 21
    corpus = tmp_path / "huge.jsonl"
    corpus.write_text(json.dumps({"_id": "small", "text": "a small note on volcano ash"}) + "\n"
                      + json.dumps({"_id": "huge", "text": text}) + "\n", encoding="utf-8")
    del text
    proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(corpus), str(tmp_path / "idx")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["passages"] == 1 + len(range(0, words - 20, 180))
    assert result["chunk_growth"] < 5 * doc_mib, result
    assert result["build_growth"] < 12 * doc_mib, result
    pipe = SearchPipeline.from_config(bm25_pipeline_config(tmp_path / "idx"))
    assert {r.doc_id for r in pipe.query("volcano", top_k=5)} == {"small", "huge"}


def test_huge_text_is_analyzed_like_small_text(monkeypatch):
    """The sliced path for long texts gives exactly the terms of the one-piece path."""
    import index.analyzer as analyzer_module

    text = " ".join(["Running dogs", "東京", "مُحَمَّد", "x" * 100, "naïve café", "ΟΔΟΣ Σ"] * 50)
    expected = Analyzer().tokenize(text)
    monkeypatch.setattr(analyzer_module, "_SLICE_CHARS", 7)
    assert Analyzer().tokenize(text) == expected


def test_sample_corpus_still_reads_cleanly():
    stats = ReadStats()
    assert len(list(read_corpus(SAMPLE_CORPUS, stats=stats))) == stats.documents > 0
    assert stats.skipped_empty == 0


def test_empty_files_are_skipped_and_counted_like_empty_documents(tmp_path, caplog):
    """A zero-byte or whitespace-only file (or a page with no text and no title) is an empty document: skipped,
    counted, logged, never a hit titled by its file name; `corpus.on_empty: error` refuses it."""
    folder = tmp_path / "docs"
    folder.mkdir()
    _write(folder, "tides.txt", "the moon pulls the ocean")
    _write(folder, "zero.txt", b"")
    _write(folder, "blank.md", " \n\t\n")
    _write(folder, "bom-only.rst", "\ufeff\n")
    _write(folder, "script-only.html", "<html><head><script>var x;</script></head><body> </body></html>")
    with caplog.at_level(logging.WARNING, logger="index.documents"):
        report = build_index(folder, tmp_path / "idx", bm25_only(), show_progress=False)
    assert (report.documents, report.skipped_empty) == (1, 4)
    assert f"{folder}: skipped 4 documents with no title and no text" in caplog.text
    pipe = SearchPipeline.from_config(bm25_pipeline_config(tmp_path / "idx"))
    for query in ("zero", "blank", "script", "moon"):
        assert [r.doc_id for r in pipe.query(query, top_k=5)] == (["tides"] if query == "moon" else [])
    with pytest.raises(CorpusError, match=r"docs/blank\.md: document 'blank' has no title and no text"):
        list(read_corpus(folder, CorpusConfig(on_empty="error")))
    (folder / "tides.txt").unlink()
    with pytest.raises(CorpusError, match=r"docs: the corpus holds no documents with text"):
        list(read_corpus(folder))


def test_broken_links_and_links_to_folders_are_counted(tmp_path, caplog):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    _write(tmp_path / "elsewhere", "outside.txt", "never read: links to folders are not followed")
    _write(folder, "a.txt", "fine")
    _write(tmp_path, "target.txt", "a linked file is read")
    (folder / "linked.txt").symlink_to(tmp_path / "target.txt")
    (folder / "gone.txt").symlink_to(tmp_path / "no-such-file.txt")
    (folder / "sub" / "gone.pdf").symlink_to(tmp_path / "no-such-file.pdf")
    (folder / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    os.mkfifo(folder / "pipe.txt")  # never opened: reading a pipe nobody writes to would wait forever
    stats = ReadStats()
    with caplog.at_level(logging.WARNING, logger="index.documents"):
        assert sorted(d.doc_id for d in read_corpus(folder, stats=stats)) == ["a", "linked"]
    assert stats.skipped_files == {"broken link": 2, "link to a folder": 1, "special file": 1}
    assert "skipped 4 files: 2 broken links, 1 link to a folder, 1 special file (read: " in caplog.text


def test_hidden_files_and_folders_are_neither_read_nor_counted(tmp_path, caplog):
    folder = tmp_path / "docs"
    (folder / ".git" / "objects").mkdir(parents=True)
    _write(folder / ".git", "description.txt", "a git file")
    _write(folder / ".git" / "objects", "pack", b"\x00binary")
    _write(folder, ".hidden.md", "# Hidden\nnot a document")
    _write(folder, ".DS_Store", b"\x00\x01")
    _write(folder, "visible.txt", "the only document")
    stats = ReadStats()
    with caplog.at_level(logging.WARNING, logger="index.documents"):
        assert [d.doc_id for d in read_corpus(folder, stats=stats)] == ["visible"]
    assert stats.skipped_files == {}
    assert caplog.text == ""


def test_a_folder_with_nothing_readable_says_what_it_skipped(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    _write(folder, "paper.pdf", b"%PDF-1.4")
    _write(folder, ".notes.txt", "hidden")
    with pytest.raises(CorpusError, match=r"docs: no \.txt or \.md files found, nor \.html/\.htm/\.rst \(and no "
                       r"corpus\.jsonl for a BEIR folder\); skipped 1 file: 1 \.pdf \(read: \.txt \.md"):
        list(read_corpus(folder))
