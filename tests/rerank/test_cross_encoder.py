from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sentence_transformers import CrossEncoder

from index.runtime.device import pick_device, pick_dtype
from index.runtime.models import ModelNotAvailableError
from rerank.cross_encoder import CrossEncoderReranker

QUERY = "how do tides work"
DOCS = [
    "Tides are caused by the Moon.",
    "A much longer passage about coffee brewing, grind size, water temperature and extraction time " * 3,
    "Short.",
    "Medium length text about plate tectonics and earthquakes along boundaries.",
    "Yet another passage, this one about bees and their waggle dance that tells where food is.",
]


@pytest.fixture(scope="module")
def reranker(tiny_cross_encoder):
    return CrossEncoderReranker(str(tiny_cross_encoder), batch_size=2)


@pytest.fixture(scope="module")
def plain(tiny_cross_encoder):
    return CrossEncoder(str(tiny_cross_encoder), device="cpu")


def test_length_sorted_batches_restore_input_order(reranker, plain):
    pairs = [(QUERY, d) for d in DOCS]
    ours = reranker.predict(pairs)
    one_by_one = np.array([plain.predict([p], batch_size=1)[0] for p in pairs])
    np.testing.assert_allclose(ours, one_by_one, atol=1e-5)


def test_rank_contract_matches_sentence_transformers(reranker, plain):
    ours = reranker.rank(QUERY, DOCS, top_k=3, return_documents=True)
    theirs = plain.rank(QUERY, DOCS, top_k=3, return_documents=True)
    assert [r["corpus_id"] for r in ours] == [r["corpus_id"] for r in theirs]
    assert [r["text"] for r in ours] == [r["text"] for r in theirs]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in theirs], atol=1e-5)
    assert set(reranker.rank(QUERY, DOCS)[0]) == {"corpus_id", "score"}


def test_activation_choice(tiny_cross_encoder):
    raw = CrossEncoderReranker(str(tiny_cross_encoder), activation="identity").predict([(QUERY, d) for d in DOCS])
    sig = CrossEncoderReranker(str(tiny_cross_encoder), activation="sigmoid").predict([(QUERY, d) for d in DOCS])
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-raw)), atol=1e-6)
    assert not np.allclose(raw, sig)


def test_multi_label_model_ranks_by_chosen_label(tiny_nli_cross_encoder):
    pairs = [(QUERY, d) for d in DOCS]
    plain = CrossEncoder(str(tiny_nli_cross_encoder), device="cpu").predict(pairs, activation_fn=torch.nn.Identity())
    by_name = CrossEncoderReranker(str(tiny_nli_cross_encoder), label="entailment", activation="identity")
    by_index = CrossEncoderReranker(str(tiny_nli_cross_encoder), label=2, activation="identity")
    np.testing.assert_allclose(by_name.predict(pairs), plain[:, 1], atol=1e-5)
    np.testing.assert_allclose(by_index.predict(pairs), plain[:, 2], atol=1e-5)
    with pytest.raises(ValueError, match="not among the model's labels"):
        CrossEncoderReranker(str(tiny_nli_cross_encoder), label="maybe")
    with pytest.raises(ValueError, match="out of range"):
        CrossEncoderReranker(str(tiny_nli_cross_encoder), label=3)


def test_maxp_scores_a_document_by_its_best_passage(reranker):
    docs = [[DOCS[0], DOCS[1]], [DOCS[2]], [], [DOCS[3], DOCS[4], DOCS[0]]]
    flat = reranker.predict([(QUERY, p) for d in docs for p in d])
    got = reranker.score_documents(QUERY, docs)
    assert got[0] == pytest.approx(max(flat[0], flat[1]))
    assert got[1] == pytest.approx(flat[2])
    assert got[2] == -np.inf
    assert got[3] == pytest.approx(max(flat[3:6]))


def test_truncation_is_counted_and_logged(tiny_cross_encoder, caplog):
    rr = CrossEncoderReranker(str(tiny_cross_encoder), max_length=16)
    pairs = [(QUERY, d) for d in DOCS]
    with caplog.at_level(logging.INFO, logger="rerank.cross_encoder"):
        rr.predict(pairs)
    assert not caplog.text  # quiet per call: a command reports the total once (notes())
    with caplog.at_level(logging.DEBUG, logger="rerank.cross_encoder"):
        rr.predict(pairs)
    assert rr.last_truncated == int((rr.token_lengths(pairs) > 16).sum())
    assert rr.last_truncated >= 3
    assert f"{rr.last_truncated} of 5 pairs were longer than max_length=16" in caplog.text
    assert rr.pairs_scored == 10 and rr.pairs_truncated == 2 * rr.last_truncated
    assert rr.notes() == [f"reranker: {rr.pairs_truncated} of 10 (query, passage) pairs "
                          f"({rr.pairs_truncated / 10:.0%}) were longer than max_length=16 tokens and were cut to it "
                          "(rerank.max_length sets it)"]


def test_empty_input(reranker):
    assert reranker.predict([]).shape == (0,)
    assert reranker.rank(QUERY, []) == []


def test_device_and_precision_selection_with_cuda_mocked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"
    assert pick_dtype("auto", "cuda") == torch.float16
    assert pick_dtype("bf16", "cuda") == torch.bfloat16
    assert pick_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    with pytest.raises(ModelNotAvailableError, match="CUDA is not available"):
        pick_device("cuda:0")


def test_bf16_autocast_on_cpu_is_close_to_fp32(tiny_cross_encoder):
    pairs = [(QUERY, d) for d in DOCS]
    fp32 = CrossEncoderReranker(str(tiny_cross_encoder), precision="fp32", activation="identity").predict(pairs)
    bf16 = CrossEncoderReranker(str(tiny_cross_encoder), precision="bf16", activation="identity").predict(pairs)
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_hub_id_offline_names_the_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="could not be fetched from the Hugging Face hub"):
        CrossEncoderReranker("cross-encoder/does-not-exist-anywhere")
