from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from sentence_transformers import CrossEncoder

from index.documents import Document
from rerank.training import (
    Example,
    TrainingConfig,
    build_examples,
    pseudo_queries,
    save_fp16,
    split_dev,
    train_cross_encoder,
)


def test_split_dev_is_seeded_and_disjoint():
    ids = [str(i) for i in range(50)]
    train, dev = split_dev(ids, 0.2, seed=3)
    assert len(dev) == 10 and not set(train) & set(dev) and sorted(train + dev) == sorted(ids)
    assert split_dev(ids, 0.2, seed=3) == (train, dev)
    assert split_dev(ids, 0.2, seed=4)[1] != dev


def test_build_examples_excludes_positives_and_fills_short_pools():
    texts = {d: f"text of {d}" for d in "abcdefg"}
    ex = build_examples({"q": "query"}, {"q": ["a"]}, {"q": ["a", "b", "c"]}, texts.__getitem__, negatives=2, seed=0)
    assert len(ex) == 1 and ex[0].positive == "text of a"
    assert sorted(ex[0].negatives) == ["text of b", "text of c"]
    ex = build_examples({"q": "query"}, {"q": ["a"]}, {"q": ["a", "b"], "r": ["d", "e"]}, texts.__getitem__,
                        negatives=3, seed=0)
    assert len(ex[0].negatives) == 3 and "text of a" not in ex[0].negatives
    assert build_examples({"q": "x"}, {}, {"q": ["a"]}, texts.__getitem__, 1, 0) == []


def test_pseudo_queries_from_titles_and_sentences():
    text = ("Background sentence number one is here for context. Another sentence explains the method we used. "
            "The third sentence reports that the treatment reduced mortality by half. "
            "A fourth sentence concludes that further randomized trials are warranted now.")
    (title_q, sent_q) = pseudo_queries([Document("d1", text, title="A Title")], seed=0)
    assert title_q == ("A Title", "d1", text)
    assert sent_q[1] == "d1" and sent_q[0] not in sent_q[2] and sent_q[2].startswith("A Title")


@pytest.mark.parametrize("loss", ["mnrl", "bce"])
def test_short_training_run_writes_a_loadable_fp16_model(tmp_path, tiny_cross_encoder, loss):
    examples = [Example(f"query {i}", f"relevant passage {i}", [f"other passage {i}", f"noise {i}"])
                for i in range(12)]
    cfg = TrainingConfig(max_steps=3, batch_size=4, loss=loss, max_length=32, bf16=False, logging_steps=1)
    model = train_cross_encoder(examples, str(tiny_cross_encoder), tmp_path / "out", cfg)
    assert model.training_steps == 3 and model.training_loss
    save_fp16(model, tmp_path / "out")
    (weights,) = list((tmp_path / "out").rglob("*.safetensors"))
    with safe_open(str(weights), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}  # noqa: SIM118
    reloaded = CrossEncoder(str(tmp_path / "out"), device="cpu")
    scores = reloaded.predict([("query 1", "relevant passage 1")])
    assert np.isfinite(scores).all()
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert len(json.loads((tmp_path / "out" / "config.json").read_text())["id2label"]) == 1
