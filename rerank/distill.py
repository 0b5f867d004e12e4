"""Distilling a cross-encoder into a shallower one: the student is the teacher with only some of its transformer
layers kept (the embeddings and the classification head stay), trained with MSE on the teacher's raw logits over
(query, passage) pairs.

Pairs come from the caller (`twostage distill-reranker` makes them from a dataset's training queries and
pseudo-queries of its corpus against the first stage's top candidates: never from a test split); the teacher's
scores are computed once and cached as JSON, so a second student or a rerun costs no teacher time.

Example:
    >>> from rerank.distill import DistillConfig, distill
    >>> pairs = [("what is bm25", "BM25 is a ranking function."), ("tides", "Paris is in France.")]
    >>> distill("bundled:minilm-l6-scifact", 2, pairs, "/tmp/minilm-l2")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from index.extras import require
from index.runtime.models import load_model, resolve_model

logger = logging.getLogger(__name__)

Pair = tuple[str, str]
LayerChoice = Literal["first", "spread"]


@dataclass
class DistillConfig:
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    max_length: int = 256
    seed: int = 42
    bf16: bool = True
    max_steps: int = -1
    logging_steps: int = 20
    layers: LayerChoice = "first"  # first: layers 0..N-1; spread: evenly spaced (every other layer for 6 -> 3)


@dataclass
class DistillResult:
    """What `distill` did: the student, its steps and logged losses, and the held-out agreement with the teacher."""

    model: Any
    steps: int
    kept_layers: list[int]
    losses: list[float] = field(default_factory=list)
    dev: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def kept_layers(total: int, keep: int, choice: LayerChoice = "first") -> list[int]:
    """Which of `total` layers a student of `keep` layers starts from: the first `keep`, or `keep` evenly spread
    from the first to the last (the last layer kept, since the head was trained on its output).

    Example:
        >>> kept_layers(6, 2), kept_layers(6, 3, "spread"), kept_layers(6, 2, "spread")
        ([0, 1], [1, 3, 5], [2, 5])
    """
    if not 1 <= keep <= total:
        raise ValueError(f"a student keeps 1 to {total} layers of its teacher, not {keep}")
    if choice == "first":
        return list(range(keep))
    if choice == "spread":
        step = total / keep
        return [round(total - 1 - step * (keep - 1 - i)) for i in range(keep)]
    raise ValueError(f"layer choice {choice!r}: use 'first' or 'spread'")


def _encoder_layers(model: Any) -> Any:
    """The transformer's `nn.ModuleList` of layers inside a CrossEncoder (BERT-like models: `<base>.encoder.layer`)."""
    hf = model.model
    base = getattr(hf, getattr(hf, "base_model_prefix", ""), None) or hf
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(f"{type(hf).__name__}: no encoder.layer list to cut (distillation supports BERT-like "
                         "cross-encoders)")
    return base.encoder


def make_student(teacher: str, layers: int, choice: LayerChoice = "first",
                 max_length: int = 256) -> tuple[Any, list[int]]:
    """The teacher loaded afresh with only `layers` of its transformer layers (`kept_layers`); returns the student
    and the indices kept. The embeddings, pooler and classification head are the teacher's."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    model = load_model(teacher, "cross-encoder", CrossEncoder, max_length=max_length, device="cpu")
    encoder = _encoder_layers(model)
    keep = kept_layers(len(encoder.layer), layers, choice)
    encoder.layer = torch.nn.ModuleList([encoder.layer[i] for i in keep])
    for i, layer in enumerate(encoder.layer):  # attention modules know their index (caches); renumber them
        attention = getattr(getattr(layer, "attention", None), "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = i
    model.model.config.num_hidden_layers = layers
    model.max_length = max_length
    return model, keep


def pairs_digest(teacher: str, pairs: Sequence[Pair], max_length: int) -> str:
    """What a cached score file was computed for: the teacher's weights (their file sizes and names), the pairs
    and the max_length; a cache whose digest differs is recomputed."""
    h = hashlib.sha256()
    folder = Path(resolve_model(teacher))
    for f in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    h.update(f"{teacher}|{max_length}".encode())
    for q, p in pairs:
        h.update(q.encode())
        h.update(b"\0")
        h.update(p.encode())
        h.update(b"\1")
    return h.hexdigest()[:16]


def teacher_scores(teacher: str, pairs: Sequence[Pair], cache: str | Path | None = None, max_length: int = 256,
                   backend: str = "auto", batch_size: int = 32, show_progress: bool = True) -> np.ndarray:
    """The teacher's raw logits (no sigmoid) for `pairs`, read from `cache` (JSON) when it holds them for the same
    teacher, pairs and max_length, else computed (through `CrossEncoderReranker`, OpenVINO bf16 by default on the
    CPU) and written there.

    Example:
        >>> teacher_scores("bundled:minilm-l6-scifact", [("q", "p")], "/tmp/t.json")  # doctest: +SKIP
        array([...], dtype=float32)
    """
    from rerank.cross_encoder import CrossEncoderReranker

    digest = pairs_digest(teacher, pairs, max_length)
    path = Path(cache) if cache else None
    if path is not None and path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("digest") == digest and len(stored.get("scores", [])) == len(pairs):
            logger.info("teacher scores of %d pairs read from %s", len(pairs), path)
            return np.asarray(stored["scores"], dtype=np.float32)
        logger.info("%s holds scores of other pairs or another teacher: recomputing", path)
    reranker = CrossEncoderReranker(teacher, backend=backend, max_length=max_length, batch_size=batch_size,
                                    activation="identity")
    started = time.perf_counter()
    scores = reranker.predict(list(pairs), show_progress=show_progress)
    seconds = time.perf_counter() - started
    logger.info("teacher scored %d pairs in %.0f s (%.1f pairs/s, %s %s)", len(pairs), seconds,
                len(pairs) / max(seconds, 1e-9), reranker.backend, reranker.precision)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"teacher": teacher, "digest": digest, "max_length": max_length,
                                    "backend": reranker.backend, "precision": reranker.precision,
                                    "pairs": len(pairs), "seconds": round(seconds, 1),
                                    "scores": [round(float(s), 5) for s in scores]}), encoding="utf-8")
    return scores


def agreement(student: np.ndarray, teacher: np.ndarray, groups: Sequence[int] | None = None) -> dict[str, float]:
    """How close a student's raw scores are to the teacher's: MSE, Pearson r and, with `groups` (the query index of
    each pair), the mean per-query Spearman rank correlation (what reranking cares about)."""
    student, teacher = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
    out = {"mse": float(np.mean((student - teacher) ** 2)), "pearson": float(np.corrcoef(student, teacher)[0, 1])}
    if groups is not None:
        from scipy.stats import spearmanr

        g = np.asarray(groups)
        rhos = []
        for key in np.unique(g):
            idx = np.flatnonzero(g == key)
            if len(idx) >= 3 and np.ptp(teacher[idx]) > 0 and np.ptp(student[idx]) > 0:
                rhos.append(spearmanr(student[idx], teacher[idx]).statistic)
        out["spearman_per_query"] = float(np.mean(rhos)) if rhos else float("nan")
    return {k: round(v, 4) for k, v in out.items()}


def raw_scores(model: Any, pairs: Sequence[Pair], batch_size: int = 64, bf16: bool = True) -> np.ndarray:
    """A CrossEncoder's raw logits (torch, CPU bf16 autocast unless `bf16` is False)."""
    import torch

    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return np.asarray(model.predict(list(pairs), batch_size=batch_size, show_progress_bar=False,
                                        activation_fn=torch.nn.Identity()), dtype=np.float32)


def distill(teacher: str, student_layers: int, pairs: Sequence[Pair], output: str | Path,
            scores: Sequence[float] | np.ndarray | None = None, config: DistillConfig | None = None,
            dev_pairs: Sequence[Pair] = (), dev_scores: Sequence[float] | np.ndarray | None = None,
            dev_groups: Sequence[int] | None = None, scores_cache: str | Path | None = None,
            on_log: Callable[[dict[str, float]], None] | None = None) -> DistillResult:
    """Train a `student_layers`-layer copy of `teacher` to match its raw logits on `pairs` (MSE) and return it
    (unsaved: `save_student` writes it with its card).

    Parameters:
        teacher: the teacher cross-encoder (a path, `bundled:<name>` or hub id).
        student_layers: layers the student keeps (`config.layers` says which).
        pairs: (query, passage) training pairs; never from a test split.
        output: where the trainer may write checkpoints (removed by `save_student`).
        scores: the teacher's raw logits for `pairs`; computed (and cached in `scores_cache`) when None.
        dev_pairs, dev_scores, dev_groups: held-out pairs, their teacher logits and query index, scored by the
            student before and after training (`agreement`).

    Example:
        >>> result = distill("bundled:minilm-l6-scifact", 2, pairs, "/tmp/l2")  # doctest: +SKIP
        >>> save_student(result, "/tmp/l2", card)  # doctest: +SKIP
    """
    for module in ("datasets", "accelerate"):
        require(module, "train", "distilling a reranker")
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments, losses
    from transformers import TrainerCallback

    config = config or DistillConfig()
    if not pairs:
        raise ValueError("no training pairs to distill on")
    if scores is None:
        scores = teacher_scores(teacher, pairs, scores_cache, max_length=config.max_length)
    if len(scores) != len(pairs):
        raise ValueError(f"{len(scores)} teacher scores for {len(pairs)} pairs")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model, keep = make_student(teacher, student_layers, config.layers, config.max_length)
    dev: dict[str, float] = {}
    if dev_pairs and dev_scores is not None:
        before = agreement(raw_scores(model, dev_pairs, bf16=config.bf16), np.asarray(dev_scores), dev_groups)
        dev.update({f"{k} before": v for k, v in before.items()})
    dataset = Dataset.from_dict({"query": [q for q, _ in pairs], "passage": [p for _, p in pairs],
                                 "label": [float(s) for s in scores]})
    output = Path(output)
    args = CrossEncoderTrainingArguments(
        output_dir=str(output / "checkpoints"), num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        bf16=config.bf16, logging_steps=config.logging_steps, save_strategy="no", seed=config.seed,
        data_seed=config.seed, report_to="none", dataloader_drop_last=True, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=on_log is not None,
    )
    callbacks = []
    if on_log is not None:
        class _Log(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - transformers' signature
                if logs:
                    on_log({"step": state.global_step, **logs})

        callbacks.append(_Log())
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset,
                                  loss=losses.MSELoss(model, activation_fn=torch.nn.Identity()), callbacks=callbacks)
    trainer.train()
    if dev_pairs and dev_scores is not None:
        after = agreement(raw_scores(model, dev_pairs, bf16=config.bf16), np.asarray(dev_scores), dev_groups)
        dev.update({f"{k} after": v for k, v in after.items()})
    return DistillResult(model=model, steps=trainer.state.global_step, kept_layers=keep,
                         losses=[h["loss"] for h in trainer.state.log_history if "loss" in h], dev=dev,
                         seconds=round(time.perf_counter() - started, 1))


def save_student(result: DistillResult, output: str | Path, teacher: str, training_data: str,
                 config: DistillConfig, pairs: int, extra: dict[str, Any] | None = None,
                 extra_markdown: str = "") -> Path:
    """Write the student as a CrossEncoder directory (fp16 safetensors) with `training_info.json` and a README.md
    model card saying how it was made."""
    from rerank.training import ModelCard, save_fp16, write_model_card

    output = Path(output)
    save_fp16(result.model, output)
    total = _teacher_layers(teacher)
    card = ModelCard(
        base_model=teacher, training_data=training_data, examples=pairs, steps=result.steps,
        loss="MSE on the teacher's raw logits",
        config={**asdict(config), "student_layers": len(result.kept_layers), "kept_layers": result.kept_layers,
                **(extra or {})},
        dev_metrics=result.dev, new_head=False,
        dev_title="Agreement with the teacher on held-out training pairs (raw logits; never the test split)")
    losses = ", ".join(f"{v:.3f}" for v in result.losses[:: max(1, len(result.losses) // 8)])
    write_model_card(output, card, extra_markdown=(
        f"\n## Distillation\n\nA {len(result.kept_layers)}-layer student of the {total}-layer cross-encoder "
        f"`{teacher}`: its embeddings, classification head and transformer layers {result.kept_layers} (0-based), "
        f"trained with `scripts/distill_reranker.py` to reproduce the teacher's raw logits (MSE) on {pairs:,} "
        f"(query, passage) pairs in {result.steps:,} steps ({result.seconds:.0f} s). Training loss along the run: "
        f"{losses or 'not logged'}.\n" + extra_markdown))
    text = (output / "README.md").read_text(encoding="utf-8")
    text = text.replace("Trained with `scripts/train_reranker.py`", "Distilled with `scripts/distill_reranker.py`")
    text = text.replace("(a cross-encoder, trained further)", "(the teacher: a cross-encoder, cut to fewer layers)")
    (output / "README.md").write_text(text, encoding="utf-8")
    return output


def _teacher_layers(teacher: str) -> int | str:
    try:
        cfg = json.loads((Path(resolve_model(teacher)) / "config.json").read_text(encoding="utf-8"))
        return int(cfg["num_hidden_layers"])
    except (OSError, ValueError, KeyError):
        return "?"


def pairs_per_second(models: dict[str, str], pairs: Sequence[Pair], backend: str = "auto", max_length: int = 256,
                     batch_size: int = 16, repeats: int = 2) -> dict[str, dict[str, Any]]:
    """Reranking throughput of each model on the same `pairs` and backend, one after the other in this process:
    a warm-up on the first 64 pairs, then the best of `repeats` timed passes over all of them.

    Example:
        >>> pairs_per_second({"L2": "/tmp/l2", "L6": "bundled:minilm-l6-scifact"}, pairs)  # doctest: +SKIP
        {'L2': {'pairs_per_s': ..., 'backend': 'openvino', 'precision': 'bf16', ...}, ...}
    """
    from rerank.cross_encoder import CrossEncoderReranker

    out: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        reranker = CrossEncoderReranker(model, backend=backend, max_length=max_length, batch_size=batch_size)
        reranker.predict(list(pairs[:64]))
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            reranker.predict(list(pairs))
            times.append(time.perf_counter() - started)
        best = min(times)
        out[name] = {"pairs_per_s": round(len(pairs) / best, 1), "seconds": round(best, 2), "pairs": len(pairs),
                     "backend": reranker.backend, "precision": reranker.precision}
        del reranker
    return out
