"""`train-reranker --adapt INDEX_DIR`: label-free adaptation on pseudo-queries from an index's own documents."""

from __future__ import annotations

import json
import random
import runpy
import sys

import pytest
from sentence_transformers import CrossEncoder

from index.documents import Document
from rerank.training import adaptation_examples, corpus_pseudo_queries, shown_text
from retrieval import cli
from tests.conftest import ROOT

_VOCAB = ("tide moon ocean gravity plant light sugar cell virus vaccine immune river delta wind storm pressure wing "
          "flow shock boundary layer heat metal crystal acid enzyme protein signal neuron brain")
WORDS = _VOCAB.split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(9, 14))).capitalize() + "."


def _corpus(n: int = 16) -> list[Document]:
    rng = random.Random(0)
    docs = []
    for i in range(n):
        text = " ".join(_sentence(rng) for _ in range(5))
        title = f"study {i} of {rng.choice(WORDS)} and {rng.choice(WORDS)}" if i % 2 else ""  # half untitled
        docs.append(Document(f"d{i}", text, title))
    return docs


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    """A BM25-only index (with its pipeline stored) of a small corpus, half of it without titles."""
    from index.builder import build_index
    from retrieval.config import load_config

    root = tmp_path_factory.mktemp("adapt")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n"
                              for d in _corpus()))
    config = load_config({"index": {"path": str(root / "idx")}, "first_stage": {"bm25": {"top_k": 20},
                                                                                "dense": {"enabled": False}}})
    build_index(corpus, root / "idx", config.build_config(), show_progress=False, pipeline=config.stored())
    return root / "idx"


def test_every_document_yields_a_query_that_is_not_in_its_positive():
    untitled = Document("u", " ".join(f"The wing stalls early at {a} angles of attack in tunnel {a}." for a in
                                      ("high", "low", "mid", "odd")))
    repeated = Document("r", " ".join(["The wing stalls early at high angles of attack in the tunnel."] * 4))
    short_untitled = Document("s", "A brief note on boundary layer transition over a flat plate at speed, measured "
                                   "with hot wires over twenty five stations along the plate span")
    lowercase = Document("c", "flow past a cone . " + " . ".join(
        f"the measured pressure on station {i} agrees with the linear theory of slender bodies" for i in range(6)),
        title="flow past a cone .")
    found = corpus_pseudo_queries([untitled, short_untitled, lowercase, repeated], seed=0, min_words=8)
    by_doc = {d: [q for q in found if q.doc_id == d] for d in "uscr"}
    assert not by_doc["r"]  # one sentence four times: any query of it is left in its positive
    assert by_doc["u"] and by_doc["s"] and [q.kind for q in by_doc["s"]] == ["lead"]  # no title: still queries
    assert {q.kind for q in by_doc["c"]} == {"title", "sentence"}  # lower-cased " . " sentences are split too
    for q in found:
        assert q.query.lower() not in q.positive.lower(), q  # the title repeated in the text is cut out as well


def test_duplicate_query_texts_are_dropped():
    text = " ".join(_sentence(random.Random(1)) for _ in range(4))
    found = corpus_pseudo_queries([Document("a", text, "same title here"), Document("b", text + " More.",
                                                                                      "same title here")], seed=0)
    assert not [q for q in found if q.kind == "title"]


def test_the_source_document_and_its_duplicates_are_never_negatives():
    docs = {d.doc_id: d for d in _corpus(12)}
    docs["dup"] = Document("dup", docs["d1"].text, "another title")  # same text as d1 under another id
    pseudo = corpus_pseudo_queries(docs.values(), seed=0)
    # the source and its duplicate ranked first, as a first stage would rank them; few candidates force the fill
    candidates = [[q.doc_id, "dup", "d1", *sorted(docs)[:4]] for q in pseudo]
    examples = adaptation_examples(pseudo, candidates, docs, negatives=5, seed=3, skip_top=1)
    assert len(examples) == len(pseudo) and all(len(e.negatives) == 5 for e in examples)
    for q in pseudo:
        (example,) = [e for e in examples if e.query == q.query]
        assert example.positive == q.positive
        source = {shown_text(kind, docs[q.doc_id]) for kind in ("title", "sentence")}
        assert not source & set(example.negatives), q
        if q.doc_id in ("d1", "dup"):
            assert not {shown_text(q.kind, docs["d1"]), shown_text(q.kind, docs["dup"])} & set(example.negatives)
        if q.kind == "title":  # shown without titles, as its positive is
            assert not any(n.startswith("study ") for n in example.negatives)


def _script(*args: str, capsys) -> tuple[int, str, str]:
    argv = sys.argv
    sys.argv = [str(ROOT / "scripts" / "train_reranker.py"), *args]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def test_a_short_adapt_run_writes_a_loadable_model_and_card(tmp_path, tiny_index, tiny_cross_encoder, capsys):
    out = tmp_path / "adapted"
    code, printed, err = _script("--adapt", str(tiny_index), "--base", str(tiny_cross_encoder), "--output", str(out),
                                 "--max-steps", "2", "--batch-size", "2", "--negatives", "2", "--max-length", "64",
                                 "--dev-fraction", "0.25", "--eval-top-n", "5", "--fp32", "--json", "--quiet",
                                 capsys=capsys)
    assert code == 0, err[-3000:]
    summary = json.loads(printed)
    assert summary["steps"] == 2 and summary["examples"] > 0
    dev = summary["dev"]
    assert dev["held-out documents"] == 4 and dev["held-out pseudo-queries"] >= 4
    for name in ("bm25 (first stage)", "base reranker", "adapted reranker", "adapted reranker (interpolation 0.5)"):
        assert 0.0 <= dev[f"mrr@10 {name}"] <= 1.0 and 0.0 <= dev[f"ndcg@10 {name}"] <= 1.0
    info = json.loads((out / "training_info.json").read_text())
    assert info["base_model"] == str(tiny_cross_encoder) and info["steps"] == 2 and not info["new_head"]
    assert "no relevance judgments" in info["training_data"] and info["config"]["skip_top"] == 2
    card = (out / "README.md").read_text()
    assert "pseudo-query self-check" in card and "a cross-encoder, trained further" in card
    split = json.loads((out / "dev_split.json").read_text())
    assert {q["doc_id"] for q in split["pseudo_queries"]} == set(split["doc_ids"])
    assert CrossEncoder(str(out), device="cpu").predict([("a", "b")]).shape == (1,)


def test_missing_index_dir_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train-reranker", "--quiet", "--adapt", str(tmp_path / "nope"), "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "nope" in err, err


@pytest.mark.parametrize(("args", "message"), [
    (["--adapt", "{index}", "--dataset", "{tmp}"], "not allowed with argument"),
    ([], "one of the arguments --dataset --adapt is required"),
])
def test_adapt_and_dataset_are_one_or_the_other(tmp_path, tiny_index, capsys, args, message):
    filled = [a.format(index=tiny_index, tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exc:
        cli.main(["train-reranker", *filled, "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "m").exists()


def test_adapt_with_index_is_one_error_line(tmp_path, tiny_index, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train-reranker", "--quiet", "--adapt", str(tiny_index), "--index", str(tiny_index),
                  "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: --index is for --dataset") and err.count("\n") == 1, err


def test_mnrl_without_in_batch_negatives_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # the index does not exist: the option is checked first
        cli.main(["train-reranker", "--quiet", "--adapt", str(tmp_path / "nope"), "--in-batch-negatives", "0",
                  "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: --in-batch-negatives 0") and err.count("\n") == 1, err
