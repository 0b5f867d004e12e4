from __future__ import annotations

import pytest

from retrieval.evaluation import EvaluationError, load_beir
from tests.beir_data import QUERIES, write_beir


def test_load_beir_keeps_grades_and_skips_unjudged(tmp_path, caplog):
    data = load_beir(write_beir(tmp_path, unjudged=2))
    assert list(data.queries) == list(QUERIES)
    assert data.qrels["q2"] == {"vaccines": 2, "antibiotics": 1}
    assert data.qrels["q1"]["black-holes"] == 0
    assert data.issues["unjudged_queries"] == 2
    assert data.issues["qrels_rows"] == sum(len(docs) for _, docs in QUERIES.values())
    assert data.issues["unknown_query_rows"] == data.issues["unknown_document_rows"] == 0
    assert data.name == tmp_path.name and data.split == "test"
    assert len(load_beir(tmp_path, max_queries=2).qrels) == 2


def test_load_beir_counts_unknown_ids_without_failing(tmp_path, caplog):
    write_beir(tmp_path, extra_qrels="nope\ttides\t1\nnope\tcoffee\t1\nq1\tno-such-doc\t1\nq4\tcoffee\t2\n")
    with caplog.at_level("WARNING"):
        data = load_beir(tmp_path)
    assert data.issues["unknown_query_rows"] == 2
    assert data.issues["unknown_document_rows"] == 1
    assert data.issues["duplicate_rows"] == 1
    assert "nope" not in data.qrels
    assert data.qrels["q1"]["no-such-doc"] == 1  # still judged: it counts against recall
    assert data.qrels["q4"]["coffee"] == 2
    assert "not in queries.jsonl" in caplog.text and "not in the corpus" in caplog.text


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: (p / "qrels" / "test.tsv").unlink(), r"no qrels/test\.tsv for split 'test'; splits available: "
                                                        r"dev"),
        (lambda p: (p / "queries.jsonl").unlink(), r"is not a BEIR dataset folder: no queries\.jsonl"),
        (lambda p: (p / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"), r"has no judgments"),
        (lambda p: (p / "qrels" / "test.tsv").write_text("zz\ttides\t1\n"), r"none of its 1 rows names a query"),
        (lambda p: (p / "qrels" / "test.tsv").write_text("h\th\th\nq1\ttides\thigh\n"), r"test\.tsv:2: relevance"),
        (lambda p: (p / "qrels" / "test.tsv").write_text("q1\ttides\n"), r"test\.tsv:1: expected 3 tab-separated"),
        (lambda p: (p / "queries.jsonl").write_text('{"_id": "q1"}\n'), r"queries\.jsonl:1: a query needs"),
    ],
)
def test_load_beir_bad_input(tmp_path, setup, message):
    write_beir(tmp_path)
    (tmp_path / "qrels" / "dev.tsv").write_text("q1\ttides\t1\n")
    setup(tmp_path)
    with pytest.raises(EvaluationError, match=message):
        load_beir(tmp_path)


def test_load_beir_not_a_folder(tmp_path):
    with pytest.raises(EvaluationError, match="no such folder"):
        load_beir(tmp_path / "missing")
    (tmp_path / "file.jsonl").write_text("{}\n")
    with pytest.raises(EvaluationError, match="is a file, not a BEIR dataset folder"):
        load_beir(tmp_path / "file.jsonl")
    with pytest.raises(EvaluationError, match="no corpus.jsonl and no queries.jsonl and no qrels"):
        load_beir(tmp_path)
