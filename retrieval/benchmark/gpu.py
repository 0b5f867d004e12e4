"""The cross-encoder reranker on a CUDA GPU: throughput (pairs/s) per precision and batch size, and whether the GPU's
scores rank the same pairs as CPU fp32 does (Spearman rank correlation, threshold `MIN_SPEARMAN`).

Pairs come from a BEIR folder (`beir_pairs`): each judged query of a split, in file order, with its judged documents
and then seeded random documents of the corpus, the same number per query, cut at the number asked for. Judged and
random documents together give scores that spread (relevant and not), which a rank correlation needs.

Every figure is `CrossEncoderReranker.predict` as the pipeline calls it (tokenization, length-sorted batches, the
fp16 cast of `index.runtime.device`): `--pairs` pairs per call, the median of `repeats` timed calls after one
warm-up call, whose scores are the ones checked. `scripts/gpu_check.py` (`twostage gpu-check`) is its command line.

Example:
    >>> from retrieval.benchmark.gpu import beir_pairs, measure, require_cuda
    >>> gpu_name = require_cuda("cuda")  # doctest: +SKIP
    >>> pairs = beir_pairs("../shared/datasets/scifact", 2000)  # doctest: +SKIP
    >>> section = measure(pairs, "bundled:minilm-l6-scifact", max_length=256)  # doctest: +SKIP
    >>> section.report["passed"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from index.documents import model_text, read_corpus
from index.progress import bar
from index.runtime.models import ModelNotAvailableError
from retrieval.benchmark.measure import median, timed_runs
from retrieval.benchmark.report import Section, Table

if TYPE_CHECKING:
    from rerank.cross_encoder import CrossEncoderReranker

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
BATCH_SIZES = (32, 64, 128, 256)
# A GPU precision passes when its scores rank the pairs as CPU fp32 does, up to this rank correlation.
MIN_SPEARMAN = 0.999


def require_cuda(device: str = "cuda") -> str:
    """The name of the GPU `device` (`cuda`, `cuda:1`) names; `ModelNotAvailableError`, one line saying so and
    what to do, when torch sees no CUDA GPU or not that one."""
    import torch

    if not device.startswith("cuda"):
        raise ValueError(f"device {device!r} is not a CUDA device; give cuda or cuda:N")
    with warnings.catch_warnings(record=True) as caught:  # "CUDA initialization: ..." says why, as a warning
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if not available:
        why = (f"torch {torch.__version__} is built without CUDA" if torch.version.cuda is None
               else f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no device")
        if caught:
            why += f": {' '.join(str(caught[0].message).split())[:160]}"
        raise ModelNotAvailableError(f"no CUDA GPU visible ({why}); run this on a machine with a GPU")
    index = torch.device(device).index or 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ModelNotAvailableError(f"device {device} asked for, but torch sees {count} CUDA GPU(s); "
                                     f"give cuda:0 to cuda:{count - 1}")
    return torch.cuda.get_device_name(index)


def beir_pairs(dataset: str | Path, n_pairs: int, split: str = "test", seed: int = 0) -> list[tuple[str, str]]:
    """`n_pairs` (query, document text) pairs: each judged query of `split` (file order) with its judged documents,
    then random other documents (seeded) up to ceil(n_pairs / queries) per query; cut at `n_pairs` (fewer when
    the corpus is too small to fill them)."""
    from retrieval.evaluation import load_beir

    data = load_beir(dataset, split, check_corpus=False)
    docs = {d.doc_id: model_text(d.title, d.text) for d in read_corpus(Path(dataset).expanduser())}
    ids = list(docs)
    per_query = min(math.ceil(n_pairs / len(data.queries)), len(ids))
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    for q, text in data.queries.items():
        judged = [d for d in data.qrels.get(q, {}) if d in docs][:per_query]
        seen = set(judged)
        # Rejection sampling: per_query is a handful against thousands of documents, so misses are rare.
        while len(judged) < per_query:
            d = ids[rng.randrange(len(ids))]
            if d not in seen:
                seen.add(d)
                judged.append(d)
        pairs.extend((text, docs[d]) for d in judged)
        if len(pairs) >= n_pairs:
            break
    return pairs[:n_pairs]


def load_reranker(model: str, device: str, precision: str, max_length: int | None,
                  activation: str = "auto") -> CrossEncoderReranker:
    """The project's reranker on the torch backend, as the pipeline would build it for this device and precision."""
    from rerank.config import RerankConfig
    from rerank.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(config=RerankConfig(model=model, device=device, precision=precision, backend="torch",
                                                    max_length=max_length, activation=activation))


def _peak_mib(device: str, reset: bool = False) -> float:
    """Peak memory torch allocated on a CUDA `device` since the last reset (nan elsewhere)."""
    if not device.startswith("cuda"):
        return float("nan")
    import torch

    if reset:
        torch.cuda.reset_peak_memory_stats(device)
        return float("nan")
    return torch.cuda.max_memory_allocated(device) / 2**20


def _free(device: str) -> None:
    """Hand a dropped model's GPU memory back, so the next model's peak is its own."""
    if device.startswith("cuda"):
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def measure(pairs: Sequence[tuple[str, str]], model: str, max_length: int | None = 256, device: str = "cuda",
            precisions: Sequence[str] = PRECISIONS, batch_sizes: Sequence[int] = BATCH_SIZES, repeats: int = 3,
            activation: str = "auto", min_spearman: float = MIN_SPEARMAN, quiet: bool = False) -> Section:
    """Throughput of the reranker on `device` per precision and batch size, and each run's scores against CPU fp32
    scores of the same pairs (Spearman >= `min_spearman` passes). `report["passed"]` is every run passing.

    Parameters:
        pairs: (query, document text) pairs, e.g. from `beir_pairs`.
        model: a model name or path, as `rerank.model` takes it (`bundled:minilm-l6-scifact`).
        max_length: tokens per pair (None: the model's own limit).
        device: the CUDA device the GPU rows run on.
        precisions: torch precisions to measure (fp16, fp32, bf16).
        batch_sizes: pairs per forward pass.
        repeats: timed `predict` calls per row (the median is reported), after one warm-up call.
        activation: the reranker's `activation` (auto: the model's own, as the pipeline scores).
        min_spearman: the rank correlation with CPU fp32 a run must reach.
        quiet: no progress bar.
    """
    from scipy.stats import spearmanr

    pairs = list(pairs)
    if not pairs:
        raise ValueError("no (query, document) pairs to score; give a dataset with judged queries and documents")
    cpu = load_reranker(model, "cpu", "fp32", max_length, activation)
    lengths = cpu.token_lengths(pairs)
    cut_at = cpu.max_length
    cpu_scores: list[np.ndarray] = []
    # One timed run: CPU fp32 is the reference, not a contender; its speed is shown as a scale for the GPU rows.
    cpu_secs = timed_runs(lambda: cpu_scores.append(cpu.predict(pairs, batch_size=32)), repeats=1, min_seconds=0,
                          warmup=0)
    reference = cpu_scores[0]
    cpu_rate = len(pairs) / median(cpu_secs)
    cpu = None
    nan = float("nan")
    rows = [{"device": "cpu", "precision": "fp32", "batch": 32, "pairs/s": cpu_rate, "x CPU fp32": 1.0,
             "peak MiB": nan, "Spearman": nan, "max abs diff": nan, "check": "reference"}]
    runs: dict[str, dict[str, Any]] = {}
    steps = bar([(p, b) for p in precisions for b in batch_sizes], "gpu check", "run", show=not quiet)
    reranker: CrossEncoderReranker | None = None
    for precision, batch in steps:
        if reranker is None or reranker.config.precision != precision:
            if reranker is not None:
                dropped, reranker = reranker.device, None
                _free(dropped)
            reranker = load_reranker(model, device, precision, max_length, activation)
        steps.set_postfix_str(f"{precision} batch {batch}")
        _peak_mib(reranker.device, reset=True)
        scores = reranker.predict(pairs, batch_size=batch)  # the warm-up call, whose scores are checked
        # predict returns numpy, so each timed call ends when the GPU's work is done (no synchronize needed).
        secs = timed_runs(lambda r=reranker, b=batch: r.predict(pairs, batch_size=b), repeats=repeats, min_seconds=0,
                          warmup=0)
        rate = len(pairs) / median(secs)
        finite = bool(np.isfinite(scores).all())
        rho = float(spearmanr(scores, reference)[0]) if finite else nan
        passed = finite and rho >= min_spearman
        diff = float(np.abs(scores - reference).max()) if finite else nan
        run = {"device": reranker.device, "precision": reranker.precision, "batch_size": batch, "pairs_per_s": rate,
               "x_cpu_fp32": rate / cpu_rate, "seconds_per_call": secs, "peak_mib": _peak_mib(reranker.device),
               "spearman_vs_cpu_fp32": rho, "max_abs_diff_vs_cpu_fp32": diff, "finite": finite, "passed": passed}
        runs[f"{reranker.precision}/{batch}"] = run
        rows.append({"device": reranker.device, "precision": reranker.precision, "batch": batch, "pairs/s": rate,
                     "x CPU fp32": run["x_cpu_fp32"], "peak MiB": run["peak_mib"], "Spearman": rho,
                     "max abs diff": diff, "check": "ok" if passed else ("FAIL: non-finite" if not finite else "FAIL")})
    if reranker is not None:
        dropped, reranker = reranker.device, None
        _free(dropped)
    tokens = float(np.median(np.minimum(lengths, cut_at)))
    truncated = float(np.mean(lengths > cut_at))
    passed = all(r["passed"] for r in runs.values())
    table = Table(f"Reranker throughput: {model}, {len(pairs)} pairs (median {tokens:.0f} tokens; {truncated:.0%} "
                  f"cut at max_length {cut_at})", rows,
                  f"pairs/s: {len(pairs)} pairs per predict() call (tokenization included), median of {repeats} timed "
                  f"calls after one warm-up; CPU fp32: one call. Spearman: rank correlation of the warm-up call's "
                  f"scores with CPU fp32 scores of the same pairs (ok: >= {min_spearman}). peak MiB: torch's peak "
                  f"GPU allocation during the row, weights included.")
    notes = [] if passed else [f"check FAILED: {sum(not r['passed'] for r in runs.values())} of {len(runs)} GPU runs "
                               f"rank the pairs differently from CPU fp32 (Spearman < {min_spearman} or non-finite "
                               f"scores)"]
    report = {"model": model, "pairs": len(pairs), "max_length": cut_at, "median_tokens": tokens,
              "truncated_share": truncated, "activation": activation, "min_spearman": min_spearman,
              "repeats": repeats, "cpu_fp32": {"pairs_per_s": cpu_rate, "seconds_per_call": cpu_secs},
              "runs": runs, "passed": passed}
    return Section(report, [table], notes)
