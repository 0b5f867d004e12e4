"""SPLADE as a third first-stage retriever: scores equal SparseEncoder.similarity, fusion in any combination, and
the bad inputs (no SPLADE in the index, a model that is not a sparse encoder, another vocabulary) refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from index.builder import build_index
from index.documents import model_text
from index.manifest import IndexDirError
from index.runtime.models import ModelNotAvailableError
from retrieval.config import load_config
from retrieval.pipeline import SearchPipeline
from tests.conftest import SAMPLE_CORPUS, _copy_tokenizer, _tiny_bert_config, pipeline_config

QUERIES = ["solar energy panels", "the history of tea", "neural networks learn", "zzz qqq"]


def _tiny_splade(path: Path, seed: int = 0, extra_tokens: tuple[str, ...] = ()) -> Path:
    """A random 2-layer BERT masked-LM with SPLADE pooling, saved as a SparseEncoder."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sentence_transformer.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import AutoTokenizer, BertForMaskedLM

    torch.manual_seed(seed)
    raw = path.with_name(path.name + "-raw")
    raw.mkdir(parents=True)
    _copy_tokenizer(raw)
    tokenizer = AutoTokenizer.from_pretrained(str(raw))
    if extra_tokens:
        tokenizer.add_tokens(list(extra_tokens))
        tokenizer.save_pretrained(str(raw))
    config = _tiny_bert_config()
    config.vocab_size = len(tokenizer)
    mlm = BertForMaskedLM(config)
    with torch.no_grad():  # logits x10 and a negative bias: ~1% of the vocabulary active per text, as in SPLADE
        mlm.cls.predictions.transform.LayerNorm.weight.mul_(10)
        mlm.cls.predictions.bias.fill_(-3.0)
    mlm.save_pretrained(raw)
    mlm = Transformer(str(raw), max_seq_length=128, transformer_task="fill-mask")
    SparseEncoder(modules=[mlm, SpladePooling("max", activation_function="log1p_relu")]).save(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_splade(tmp_path_factory) -> Path:
    return _tiny_splade(tmp_path_factory.mktemp("splade") / "model")


def _config(index: Path, bi_encoder: Path, splade_model: Path, **first_stage) -> dict:
    first_stage["splade"] = {"model": str(splade_model), "top_k": 20, **first_stage.get("splade", {})}
    return pipeline_config(index, bi_encoder, **first_stage)


@pytest.fixture(scope="module")
def splade_index(tmp_path_factory, tiny_bi_encoder, tiny_splade) -> Path:
    out = tmp_path_factory.mktemp("splade-index") / "idx"
    build_index(SAMPLE_CORPUS, out, load_config(_config(out, tiny_bi_encoder, tiny_splade)).build_config(),
                show_progress=False)
    return out


def test_scores_equal_sparse_encoder_similarity(splade_index, tiny_bi_encoder, tiny_splade, sample_docs):
    from sentence_transformers import SparseEncoder

    pipe = SearchPipeline.from_config(_config(splade_index, tiny_bi_encoder, tiny_splade, splade={"top_k": 100}))
    assert pipe.stages == ["bm25", "dense", "splade", "hybrid"]
    model = SparseEncoder(str(tiny_splade), device="cpu")
    texts = {d["_id"]: model_text(d.get("title", ""), d["text"]) for d in sample_docs}
    ids = list(texts)
    docs = model.encode_document([texts[i] for i in ids], convert_to_tensor=True)
    for query, ranked in zip(QUERIES, pipe.retrieve(QUERIES, stage="splade")):
        expected = model.similarity(model.encode_query([query], convert_to_tensor=True), docs)[0].numpy()
        assert ranked, query
        got = dict(ranked)
        np.testing.assert_allclose([got[d] for d in got], [expected[ids.index(d)] for d in got], rtol=0, atol=1e-4)
        # every document sharing a term with the query is ranked (top_k 100 > the sample's 24), best first
        assert sorted(got) == sorted(d for d, s in zip(ids, expected) if s > 0)
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)


@pytest.mark.parametrize("first_stage", [
    {"bm25": {"enabled": False}, "dense": {"enabled": False}},  # splade alone
    {"dense": {"enabled": False}},  # bm25 + splade, rrf
    {"bm25": {"enabled": False}, "fusion": {"method": "weighted"}},  # dense + splade, equal weights
    {"fusion": {"method": "weighted", "weights": {"bm25": 0.2, "dense": 0.3, "splade": 0.5}}},  # all three
    {"fusion": {"method": "rrf", "weights": {"splade": 2.0, "bm25": 1.0}}},  # dense weighted 0
])
def test_splade_fuses_with_bm25_and_dense_in_any_combination(splade_index, tiny_bi_encoder, tiny_splade,
                                                             first_stage):
    from retrieval.fusion import rrf, weighted

    config = load_config(_config(splade_index, tiny_bi_encoder, tiny_splade, **first_stage))
    pipe = SearchPipeline(config)
    names = [r.name for r in pipe.retrievers]
    assert "splade" in names and pipe.stages[: len(names)] == names
    results = pipe.query(QUERIES[0], top_k=5)
    assert results and all("splade" in r.stages for r in results[:1])
    if len(names) == 1:
        assert pipe.stages == ["splade"]
        return
    lists = {n: pipe.retrieve([QUERIES[0]], stage=n)[0] for n in names}
    fusion = config.first_stage.fusion
    if fusion.method == "rrf":
        expected = rrf(lists, fusion.k, fusion.weights or None)
    else:
        expected = weighted(lists, fusion.weights or dict.fromkeys(names, 1 / len(names)), fusion.normalization)
    assert pipe.retrieve([QUERIES[0]], stage="hybrid")[0] == expected[: fusion.top_k]
    assert [r.doc_id for r in results] == [d for d, _ in expected[:5]]


def test_splade_on_an_index_built_without_it_is_refused(sample_index, tiny_bi_encoder, tiny_splade):
    with pytest.raises(IndexDirError, match=r"the config enables splade but .* was built without it; rebuild the "
                                            r"index or set first_stage.splade.enabled: false \(rebuild it with: "
                                            r"python scripts/build_index.py"):
        SearchPipeline.from_config(_config(sample_index, tiny_bi_encoder, tiny_splade))


def test_a_model_that_is_not_a_sparse_encoder_is_refused(tmp_path, tiny_bi_encoder):
    config = load_config(_config(tmp_path / "idx", tiny_bi_encoder, tiny_bi_encoder))
    with pytest.raises(ModelNotAvailableError, match=r"is not a sparse encoder over its vocabulary \(its output has "
                                                     r"\d+ dimensions, its tokenizer 30522 terms\); "
                                                     r"first_stage.splade.model needs a SparseEncoder"):
        build_index(SAMPLE_CORPUS, tmp_path / "idx", config.build_config(), show_progress=False)
    assert not (tmp_path / "idx").exists()


def test_a_sparse_model_with_another_vocabulary_is_refused(tmp_path, tiny_bi_encoder, tiny_splade):
    model = shutil.copytree(tiny_splade, tmp_path / "model")
    config = _config(tmp_path / "idx", tiny_bi_encoder, model)
    build_index(SAMPLE_CORPUS, tmp_path / "idx", load_config(config).build_config(), show_progress=False)
    shutil.rmtree(model)
    _tiny_splade(model, extra_tokens=("twostagetoken",))  # the same path, retrained with one more term
    with pytest.raises(IndexDirError, match=r"has another vocabulary \(30523 terms, sha256 [0-9a-f]{12}\) than the "
                                            r"one .* was built with \(30522 terms\).*rebuild it with: python "
                                            r"scripts/build_index.py .*first_stage.splade.model"):
        SearchPipeline.from_config(config)


def test_splade_settings_are_part_of_the_index(splade_index, tiny_bi_encoder, tiny_splade):
    # query-time knobs change nothing; max_length decides what was encoded, so it must match the index
    same = _config(splade_index, tiny_bi_encoder, tiny_splade, splade={"batch_size": 2, "top_k": 5})
    assert SearchPipeline.from_config(same).retrieve(["tea"], stage="splade")[0]
    other = _config(splade_index, tiny_bi_encoder, tiny_splade, splade={"max_length": 16})
    with pytest.raises(IndexDirError, match=r"was built with first_stage.splade.max_length: null but the config has "
                                            r"first_stage.splade.max_length: 16"):
        SearchPipeline.from_config(other)


def test_an_index_without_splade_has_no_splade_key(sample_index, splade_index):
    import json

    assert "splade" not in json.loads((sample_index / "manifest.json").read_text())["config"]
    manifest = json.loads((splade_index / "manifest.json").read_text())
    assert manifest["components"] == ["bm25", "dense", "splade"] and manifest["config"]["splade"]["model"]
    assert manifest["vocabularies"]["splade"]["size"] == 30522
