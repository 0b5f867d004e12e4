"""Fine-tuning a cross-encoder with sentence-transformers' `CrossEncoderTrainer`.

The caller supplies queries, judgments and first-stage candidates (hard negatives come from the project's own
first stage, mined by `scripts/train_reranker.py`); this module turns them into training examples, carves a dev
split, trains, scores the dev split, and writes a normal CrossEncoder directory with a model card.

Label-free adaptation to a corpus (`twostage train-reranker --adapt INDEX_DIR`) uses `corpus_pseudo_queries`
(titles, sentences and leads of the indexed documents as queries for the rest of their document) and
`adaptation_examples` (hard negatives from the first stage's ranking of each pseudo-query, the source document
excluded).

Example:
    >>> from rerank.training import TrainingConfig, build_examples, train_cross_encoder
    >>> examples = build_examples(queries, qrels, candidates, doc_text, negatives=3)  # doctest: +SKIP
    >>> model = train_cross_encoder(examples, "bundled:all-MiniLM-L6-v2", "/tmp/my-reranker")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from index.documents import Document, model_text
from index.extras import require
from index.runtime.models import load_model

logger = logging.getLogger(__name__)

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
# Adaptation splits any-case text too: some corpora (Cranfield) are lower-cased with " . " between sentences, where
# `_SENTENCE` finds no boundary at all and a corpus would yield title queries only.
_ANY_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")
_LEAD_WORDS = 12  # a lead query of a document without a usable title or sentence: its first sentence or words


@dataclass
class Example:
    query: str
    positive: str
    negatives: list[str]


@dataclass
class TrainingConfig:
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 7e-5
    warmup_ratio: float = 0.1
    max_length: int = 256
    loss: Literal["mnrl", "bce"] = "mnrl"
    scale: float = 10.0
    in_batch_negatives: int = 1  # mnrl: other queries' positives used as extra negatives
    seed: int = 42
    bf16: bool = True
    max_steps: int = -1
    logging_steps: int = 20


@dataclass
class ModelCard:
    base_model: str
    training_data: str
    examples: int
    steps: int
    loss: str
    config: dict[str, Any]
    dev_metrics: dict[str, Any] = field(default_factory=dict)
    new_head: bool = True  # False when the base already was a cross-encoder (its head is trained further)
    dev_title: str = "Dev-split metrics (carved from the training split; never the test split)"
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def split_dev(query_ids: Iterable[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded, reproducible train/dev split of query ids (the dev part is used for model selection only)."""
    ids = sorted(query_ids, key=lambda q: (len(q), q))  # numeric ids in numeric order
    rng = random.Random(seed)
    dev = set(rng.sample(ids, k=round(fraction * len(ids)))) if fraction > 0 else set()
    return [q for q in ids if q not in dev], [q for q in ids if q in dev]


def pseudo_queries(docs: Iterable[Document], seed: int, titles: bool = True,
                   sentences: bool = True) -> list[tuple[str, str, str]]:
    """Label-free training signal from any corpus: `(query, doc_id, positive_text)` triples.

    A title is a query for its own text; one sentence from the second half of a text is a query for the rest.
    """
    rng = random.Random(seed)
    out: list[tuple[str, str, str]] = []
    for doc in docs:
        if titles and doc.title.strip() and len(doc.text.split()) >= 30:
            out.append((doc.title.strip(), doc.doc_id, doc.text))
        if sentences:
            parts = [s for s in _SENTENCE.split(doc.text) if 8 <= len(s.split()) <= 45]
            if len(parts) >= 3:
                sentence = rng.choice(parts[len(parts) // 2:])
                rest = doc.text.replace(sentence, " ").strip()
                out.append((sentence, doc.doc_id, model_text(doc.title, rest)))
    return out


@dataclass(frozen=True)
class PseudoQuery:
    """A label-free training query: `query` taken out of document `doc_id`, whose `positive` is the document's
    text without it (so the pair cannot be solved by copying); `kind` is title, sentence or lead."""

    query: str
    doc_id: str
    positive: str
    kind: Literal["title", "sentence", "lead"]


def _squash(text: str) -> str:
    return " ".join(text.split())


def _without(text: str, part: str) -> str:
    """`text` with every occurrence of `part` cut out (case- and whitespace-insensitive), squashed."""
    text, part = _squash(text), _squash(part)
    if not part:
        return text
    return _squash(re.sub(re.escape(part), " ", text, flags=re.IGNORECASE))


def corpus_pseudo_queries(docs: Iterable[Document], seed: int, min_words: int = 20) -> list[PseudoQuery]:
    """Pseudo-queries for adapting a reranker to a corpus with no judgments, up to two per document:

    - title: the title (3 to 30 words) for the text, the title cut out of the text where it repeats it;
    - sentence: a sentence (8 to 45 words) from the second half of a text of 3 or more sentences, for the title
      and the rest of the text;
    - lead: only for a document that yields neither (no title, too few sentences), its first sentence (or its first
      12 words) for the rest, so untitled corpora still yield queries.

    A document whose remaining text is under `min_words` words yields none; a query text that several documents
    yield (duplicate titles) is dropped, since its other documents would be false negatives.

    Example:
        >>> from index.documents import Document
        >>> text = "Tides rise twice a day on most coasts of the world. " * 3
        >>> [q.kind for q in corpus_pseudo_queries([Document("d1", text)], seed=0, min_words=5)]
        ['lead']
    """
    rng = random.Random(seed)
    out: list[PseudoQuery] = []
    for doc in docs:
        text, title = _squash(doc.text), _squash(doc.title)
        found: list[PseudoQuery] = []
        if title and 3 <= len(title.split()) <= 30:
            body = _without(text, title)
            if len(body.split()) >= min_words:
                found.append(PseudoQuery(title, doc.doc_id, body, "title"))
        sentences = _ANY_SENTENCE.split(text)
        parts = [s for s in sentences if 8 <= len(s.split()) <= 45]
        if len(sentences) >= 3 and parts:
            second_half = [s for s in parts if text.find(s) >= len(text) // 2] or parts[-1:]
            sentence = rng.choice(second_half)
            rest = _without(text, sentence)
            if len(rest.split()) >= min_words and _squash(sentence).lower() != title.lower():
                found.append(PseudoQuery(sentence, doc.doc_id, model_text(title, rest), "sentence"))
        if not found:
            first = _ANY_SENTENCE.split(text, maxsplit=1)[0]
            for lead in (first, " ".join(text.split()[:_LEAD_WORDS])):
                rest = _without(text, lead)
                if 4 <= len(lead.split()) <= 45 and len(rest.split()) >= min_words:
                    found.append(PseudoQuery(lead, doc.doc_id, model_text(title, rest), "lead"))
                    break
        out += found
    counts: dict[str, int] = {}
    for q in out:
        counts[q.query.lower()] = counts.get(q.query.lower(), 0) + 1
    return [q for q in out if counts[q.query.lower()] == 1]


def shown_text(kind: str, doc: Document) -> str:
    """How a document is shown to the reranker beside a pseudo-query of `kind` that it is not the source of: without
    its title for a title query (whose positive has lost its title), else as the models read it (`model_text`)."""
    if kind == "title":
        return _without(doc.text, doc.title) if doc.title else _squash(doc.text)
    return model_text(doc.title, doc.text)


def adaptation_examples(pseudo: Sequence[PseudoQuery], candidates: Sequence[Sequence[str]],
                        docs: Mapping[str, Document], negatives: int, seed: int,
                        skip_top: int = 0) -> list[Example]:
    """Training examples from pseudo-queries: `candidates[i]` is the first stage's ranking (doc ids) for
    `pseudo[i]`; hard negatives are sampled below its first `skip_top` other documents (short pools are filled from
    the other queries' candidates, as `build_examples` does), never the source document, nor another document of
    the same text (a duplicate is no negative).

    Negatives are shown as the positive is (`shown_text`): a title query's documents without their titles (its
    positive has lost its title, so titled negatives would teach "a title means not relevant").
    """
    by_text: dict[str, list[str]] = {}
    for doc_id, doc in docs.items():
        by_text.setdefault(_squash(doc.text), []).append(doc_id)
    out: list[Example] = []
    for kind in ("title", "sentence", "lead"):
        chosen = [i for i, q in enumerate(pseudo) if q.kind == kind]
        if not chosen:
            continue
        keys = {i: f"{i:09d}" for i in chosen}
        out += build_examples({keys[i]: pseudo[i].query for i in chosen}, {keys[i]: [pseudo[i].doc_id] for i in chosen},
                              {keys[i]: list(candidates[i]) for i in chosen},
                              lambda d, kind=kind: shown_text(kind, docs[d]), negatives, seed,
                              positive_text={keys[i]: pseudo[i].positive for i in chosen}, skip_top=skip_top,
                              exclude={keys[i]: by_text[_squash(docs[pseudo[i].doc_id].text)] for i in chosen})
    random.Random(seed).shuffle(out)
    return out


def build_examples(queries: Mapping[str, str], positives: Mapping[str, Sequence[str]],
                   candidates: Mapping[str, Sequence[str]], doc_text: Callable[[str], str], negatives: int,
                   seed: int, positive_text: Mapping[str, str] | None = None,
                   skip_top: int = 0, exclude: Mapping[str, Sequence[str]] | None = None) -> list[Example]:
    """One example per (query, positive): hard negatives sampled from the query's first-stage candidates
    (judged positives and the query's `exclude` ids excluded, the first `skip_top` skipped to avoid unjudged
    relevant documents)."""
    rng = random.Random(seed)
    all_ids = sorted({d for c in candidates.values() for d in c})
    out = []
    for qid in sorted(queries):
        pos = list(positives.get(qid, []))
        if not pos:
            continue
        excluded = set(pos) | set(exclude.get(qid, ()) if exclude else ())
        pool = [d for d in candidates.get(qid, []) if d not in excluded][skip_top:]
        for p in pos:
            negs = rng.sample(pool, min(negatives, len(pool)))
            while len(negs) < negatives and all_ids:
                d = rng.choice(all_ids)
                if d not in excluded and d not in negs:
                    negs.append(d)
            text = positive_text[qid] if positive_text and qid in positive_text else doc_text(p)
            out.append(Example(queries[qid], text, [doc_text(d) for d in negs]))
    rng.shuffle(out)
    return out


def _dataset(examples: Sequence[Example], config: TrainingConfig):
    from datasets import Dataset

    if config.loss == "mnrl":
        n = min(len(e.negatives) for e in examples)
        cols: dict[str, list[str]] = {"query": [e.query for e in examples], "positive": [e.positive for e in examples]}
        for k in range(n):
            cols[f"negative_{k + 1}"] = [e.negatives[k] for e in examples]
        return Dataset.from_dict(cols)
    rows: dict[str, list[Any]] = {"query": [], "document": [], "label": []}
    for e in examples:
        for text, label in [(e.positive, 1.0)] + [(n, 0.0) for n in e.negatives]:
            rows["query"].append(e.query)
            rows["document"].append(text)
            rows["label"].append(label)
    return Dataset.from_dict(rows)


def train_cross_encoder(examples: Sequence[Example], base: str, output: str | Path,
                        config: TrainingConfig | None = None, init: Any | None = None):
    """Train from `base` (a CrossEncoder or a plain encoder body: a new 1-label head is added) and save."""
    for module in ("datasets", "accelerate"):  # sentence-transformers' trainer needs both, and says so late
        require(module, "train", "training a reranker")
    import torch
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        losses,
    )

    config = config or TrainingConfig()
    if not examples:
        raise ValueError("no training examples: the queries have no judged positives in this split")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model = init or load_model(base, "cross-encoder", CrossEncoder, num_labels=1, max_length=config.max_length,
                               device="cpu")
    model.max_length = config.max_length
    dataset = _dataset(examples, config)
    if config.loss == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model, num_negatives=config.in_batch_negatives,
                                                   scale=config.scale)
    else:
        negatives = max(1, len(examples[0].negatives))
        loss = losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(negatives)))
    output = Path(output)
    args = CrossEncoderTrainingArguments(
        output_dir=str(output / "checkpoints"), num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        bf16=config.bf16, logging_steps=config.logging_steps,
        save_strategy="no", seed=config.seed, data_seed=config.seed, report_to="none", dataloader_drop_last=True,
        use_cpu=not torch.cuda.is_available(),
        batch_sampler="no_duplicates" if config.loss == "mnrl" else "batch_sampler",
    )
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    trainer.train()
    model.training_steps = trainer.state.global_step
    model.training_loss = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return model


def save_fp16(model, output: str | Path) -> None:
    """Save as a CrossEncoder directory with fp16 safetensors (half the size; loaded back as fp32 on CPU)."""
    import torch

    output = Path(output)
    model.save_pretrained(str(output))
    from safetensors.torch import load_file, save_file

    for file in output.rglob("*.safetensors"):
        tensors = load_file(str(file))
        save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}, str(file),
                  metadata={"format": "pt"})
        # save_file leaves the file owner-only (0600): give it the usual umask-derived mode like every other file.
        umask = os.umask(0)
        os.umask(umask)
        file.chmod(0o666 & ~umask)
    for leftover in (output / "checkpoints",):
        if leftover.exists():
            import shutil

            shutil.rmtree(leftover)


def write_model_card(output: str | Path, card: ModelCard, extra_markdown: str = "") -> None:
    output = Path(output)
    (output / "training_info.json").write_text(json.dumps(asdict(card), indent=2, default=str), encoding="utf-8")
    dev = "\n".join(f"| {k} | {v} |" for k, v in card.dev_metrics.items())
    head = "a new one-label head on its encoder body" if card.new_head else "a cross-encoder, trained further"
    text = f"""---
library_name: sentence-transformers
pipeline_tag: text-ranking
tags: [cross-encoder, reranker]
base_model: {card.base_model}
---

# Cross-encoder reranker

Trained with `scripts/train_reranker.py` on {card.date}.

- Base model: `{card.base_model}` ({head})
- Training data: {card.training_data}
- Examples: {card.examples:,}; optimizer steps: {card.steps:,}; loss: {card.loss}
- Settings: `{json.dumps(card.config)}`

## {card.dev_title}

| metric | value |
|---|---|
{dev}
{extra_markdown}
"""
    (output / "README.md").write_text(text, encoding="utf-8")
