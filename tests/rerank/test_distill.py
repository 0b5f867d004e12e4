"""Distilling a cross-encoder into fewer layers (rerank/distill.py) and `twostage distill-reranker`."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import yaml
from sentence_transformers import CrossEncoder

from rerank.distill import DistillConfig, agreement, distill, kept_layers, make_student, save_student, teacher_scores
from retrieval import cli

_VOCAB = ("tide moon ocean gravity plant light sugar cell virus vaccine immune river delta wind storm pressure wing "
          "flow shock boundary layer heat metal crystal acid enzyme protein signal neuron brain")
WORDS = _VOCAB.split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def teacher4(tmp_path_factory, tiny_cross_encoder):
    """A random 4-layer tiny cross-encoder whose head is scaled up, so its logits spread (a student cut from it
    starts visibly off its scores)."""
    import torch
    from transformers import BertForSequenceClassification

    from tests.conftest import _copy_tokenizer, _tiny_bert_config

    torch.manual_seed(3)
    cfg = _tiny_bert_config(1)
    cfg.num_hidden_layers = 4
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.mul_(60.0)
    out = tmp_path_factory.mktemp("teacher4")
    model.save_pretrained(out)
    _copy_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    rng = random.Random(0)
    return [(_text(rng, 3), _text(rng, 12)) for _ in range(96)]


def test_kept_layers():
    assert kept_layers(6, 2) == [0, 1]
    assert kept_layers(6, 4) == [0, 1, 2, 3]
    assert kept_layers(6, 3, "spread") == [1, 3, 5]
    assert kept_layers(6, 6, "spread") == list(range(6))
    with pytest.raises(ValueError, match="1 to 6 layers"):
        kept_layers(6, 7)


@pytest.mark.parametrize("choice, expected", [("first", [0, 1]), ("spread", [1, 3])])
def test_student_keeps_the_chosen_layers_and_the_head(teacher4, choice, expected):
    import torch

    teacher = CrossEncoder(str(teacher4), device="cpu")
    student, keep = make_student(str(teacher4), 2, choice)
    assert keep == expected
    assert len(student.model.bert.encoder.layer) == 2
    assert student.model.config.num_hidden_layers == 2
    t, s = teacher.model.state_dict(), student.model.state_dict()
    for name in ("classifier.weight", "bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight"):
        assert torch.equal(t[name], s[name])
    for i, j in enumerate(expected):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(t[key.format(j)], s[key.format(i)])


def _rule_scores(pairs: list[tuple[str, str]]) -> np.ndarray:
    """A teacher with a known rule (a random tiny BERT's logits barely vary): 4 + the query words the passage holds."""
    return np.array([4.0 + sum(w in p.split() for w in q.split()) for q, p in pairs], dtype=np.float32)


def test_distilling_moves_the_student_toward_the_teacher_and_saves_a_card(teacher4, pairs, tmp_path):
    scores = _rule_scores(pairs)
    groups = [i // 8 for i in range(len(pairs))]
    cfg = DistillConfig(max_steps=30, batch_size=16, learning_rate=3e-3, max_length=64, bf16=False,
                        logging_steps=5, warmup_ratio=0.0)
    result = distill(str(teacher4), 2, pairs, tmp_path / "out", scores=scores, config=cfg, dev_pairs=pairs,
                     dev_scores=scores, dev_groups=groups)
    assert result.steps == 30 and result.kept_layers == [0, 1]
    assert result.dev["mse after"] < 0.5 * result.dev["mse before"]
    assert result.losses[-1] < result.losses[0]
    out = save_student(result, tmp_path / "student", str(teacher4), "test pairs", cfg, len(pairs))
    loaded = CrossEncoder(str(out), device="cpu")
    assert loaded.model.config.num_hidden_layers == 2
    card = (out / "README.md").read_text()
    assert "Distilled with `scripts/distill_reranker.py`" in card and str(teacher4) in card
    assert "MSE on the teacher's raw logits" in card and "layers [0, 1]" in card
    info = json.loads((out / "training_info.json").read_text())
    assert info["steps"] == 30 and info["config"]["learning_rate"] == 3e-3
    assert not (out / "checkpoints").exists()
    import torch

    from rerank.distill import raw_scores

    saved = raw_scores(loaded, pairs, bf16=False)  # fp16 on disk: close to the trained student, not equal
    assert agreement(saved, raw_scores(result.model, pairs, bf16=False))["pearson"] > 0.99
    assert torch.is_tensor(next(loaded.model.parameters()))


def test_teacher_scores_are_cached_for_the_same_pairs_only(teacher4, pairs, tmp_path):
    cache = tmp_path / "scores.json"
    first = teacher_scores(str(teacher4), pairs[:10], cache, max_length=64, backend="torch", show_progress=False)
    stored = json.loads(cache.read_text())
    stored["scores"] = [s + 100.0 for s in stored["scores"]]  # marks what came from the cache
    cache.write_text(json.dumps(stored))
    again = teacher_scores(str(teacher4), pairs[:10], cache, max_length=64, backend="torch", show_progress=False)
    np.testing.assert_allclose(again, first + 100.0, atol=1e-3)
    other = teacher_scores(str(teacher4), pairs[10:20], cache, max_length=64, backend="torch", show_progress=False)
    assert np.all(np.abs(other) < 100.0) and len(json.loads(cache.read_text())["scores"]) == 10


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    """A BM25-only index of a small corpus, its config as YAML, and a BEIR folder with train and test qrels."""
    from index.builder import build_index
    from retrieval.config import load_config

    root = tmp_path_factory.mktemp("distill-index")
    rng = random.Random(1)
    docs = [{"_id": f"d{i}", "title": f"study of {_text(rng, 3)}", "text": ". ".join(
        _text(rng, 10).capitalize() for _ in range(5)) + "."} for i in range(30)]
    data = root / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": _text(rng, 3)}) + "\n"
                                                for i in range(8)))
    for split in ("train", "test"):
        rows = "".join(f"q{i}\td{i}\t1\n" for i in range(8) if (i < 6) == (split == "train"))
        (data / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    raw = {"index": {"path": str(root / "idx")},
           "first_stage": {"bm25": {"top_k": 20}, "dense": {"enabled": False}}}
    config = load_config(raw)
    build_index(data / "corpus.jsonl", root / "idx", config.build_config(), show_progress=False,
                pipeline=config.stored())
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    return root


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        cli.main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_distils_and_writes_a_student(tiny_index, teacher4, tmp_path, capsys):
    code, out, err = _run(["distill-reranker", "--quiet", "--index", str(tiny_index / "idx"), "--dataset",
                           str(tiny_index / "beir"), "--config", str(tiny_index / "config.yaml"), "--stage", "bm25",
                           "--teacher", str(teacher4), "--layers", "2", "--pseudo-queries", "10", "--depth", "5",
                           "--max-steps", "4", "--batch-size", "8", "--max-length", "64", "--fp32",
                           "--output", str(tmp_path / "l2"), "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 4 and summary["kept_layers"] == [0, 1] and summary["dev_pairs"] > 0
    assert CrossEncoder(str(tmp_path / "l2"), device="cpu").model.config.num_hidden_layers == 2
    card = (tmp_path / "l2" / "README.md").read_text()
    assert "6 train-split queries" in card and "pseudo-queries" in card
    assert (tmp_path / "teacher-scores.json").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--layers", "9"], "a student keeps 1 to 4 layers of its teacher, not 9"),
    (["--layers", "2", "--split", "test"], "never come from a test split"),
    (["--layers", "2", "--stage", "dense"], "--stage dense: the index's pipeline has stages"),
    (["--layers", "2", "--teacher", "bundled:nope"], "no bundled model named 'nope'"),
])
def test_bad_inputs_are_one_error_line(tiny_index, teacher4, tmp_path, capsys, extra, message):
    argv = ["distill-reranker", "--quiet", "--index", str(tiny_index / "idx"), "--dataset", str(tiny_index / "beir"),
            "--config", str(tiny_index / "config.yaml"), "--teacher", str(teacher4), "--stage", "bm25",
            "--output", str(tmp_path / "m"), *extra]
    code, _, err = _run(argv, capsys)
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "m").exists()


def test_missing_index_is_one_error_line(teacher4, tmp_path, capsys):
    code, _, err = _run(["distill-reranker", "--quiet", "--index", str(tmp_path / "nope"), "--teacher", str(teacher4),
                         "--layers", "2", "--output", str(tmp_path / "m")], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "--index" in err and "nope" in err
