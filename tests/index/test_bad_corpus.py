"""Bad corpus input: every case has one defined outcome (error naming file:line, skipped and counted, or indexed),
and a build that fails on bad input never touches the good index it would have replaced."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from pathlib import Path

import pytest

from index.analyzer import Analyzer
from index.builder import build_index
from index.config import CorpusConfig
from index.directory import IndexDirectory
from index.documents import CorpusError, ReadStats, read_corpus
from retrieval import SearchPipeline
from tests.conftest import ROOT, SAMPLE_CORPUS, pipeline_config
from tests.reliability import answers, bm25_only, bm25_pipeline_config, leftovers

GOOD = '{"_id": "a", "text": "a good first document"}\n'

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
