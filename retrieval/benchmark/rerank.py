"""The second stage: our reranker (as configured, and on each backend and precision) against plain
`CrossEncoder.predict` on the same real pairs, and the rerank depth curve (nDCG@10 and latency per top_n).

Pairs are what the pipeline would score: the first stage's candidates (`pipe.first_stage`) and the text a model
reads for each (`index.documents.model_text`). Re-ranked lists are ordered by `retrieval.scores.rerank_list`,
the pipeline's own second stage, and scored by pytrec_eval (`metrics.mean_metric`).

Example:
    >>> from retrieval.benchmark.rerank import section_curve
    >>> section_curve(pipe, dev_split, Settings(dataset)).report["depths"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from index.documents import model_text
from retrieval.benchmark.measure import median, pct, progress
from retrieval.benchmark.report import Section, Settings, Table
from retrieval.evaluation.metrics import Qrels, Run, mean_metric
from retrieval.scores import rerank_list

# Each of `report.RERANK_VARIANTS` but "config" (the reranker as configured): its CrossEncoderReranker settings.
VARIANT_SETTINGS: dict[str, dict[str, Any]] = {
    "torch-fp32": {"backend": "torch", "precision": "fp32"},
    "torch-bf16": {"backend": "torch", "precision": "bf16"},
    "onnx-fp32": {"backend": "onnx", "precision": "auto", "quantization": "none"},
    "onnx-int8": {"backend": "onnx", "precision": "auto", "quantization": "int8"},
    "onnx-int8-partial": {"backend": "onnx", "precision": "auto", "quantization": "int8_partial"},
    # quantization said outright: a config that sets int8 must not turn these into the int8 model.
    "openvino-fp32": {"backend": "openvino", "precision": "fp32", "quantization": "none"},
    "openvino-bf16": {"backend": "openvino", "precision": "bf16", "quantization": "none"},
    "openvino-int8": {"backend": "openvino", "precision": "auto", "quantization": "int8"},
}


def candidate_pairs(pipe: Any, qids: list[str], queries: dict[str, str],
                    depth: int) -> tuple[Run, list[tuple[str, str]]]:
    """The first stage's top-`depth` ranking per query and the (query, document text) pairs, query by query."""
    lists = pipe.retrieve([queries[q] for q in qids], stage=pipe.first_stage, top_k=depth)
    first = dict(zip(qids, lists))
    docs = pipe.index.store.get({d for ranked in first.values() for d, _ in ranked})
    pairs = [(queries[q], model_text(docs[d]["title"], docs[d]["text"])) for q in qids for d, _ in first[q]]
    return first, pairs


def reranked_ndcg10(first: Run, scores: np.ndarray | None, qrels: Qrels) -> float:
    """nDCG@10 of the first-stage order (`scores` None) or of every candidate re-ranked by `scores` (one per
    candidate, query by query) alone, as the pipeline ranks them with no interpolation."""
    run, pos = {}, 0
    for q, ranked in first.items():
        run[q] = ranked if scores is None else rerank_list(ranked, scores[pos : pos + len(ranked)])
        pos += len(ranked)
    return mean_metric(run, qrels, "ndcg@10")


def section_rerank(pipe: Any, data: Any, settings: Settings) -> Section:
    """Ours (as configured, and each backend/precision) vs plain CrossEncoder.predict on the same real pairs."""
    import torch
    from scipy.stats import spearmanr
    from sentence_transformers import CrossEncoder

    from index.runtime.models import resolve_model
    from rerank.cross_encoder import CrossEncoderReranker

    wanted = list(settings.rerank_variants)
    cfg = pipe.config.rerank
    qids = list(data.queries)[: settings.rerank_queries]
    first, pairs = candidate_pairs(pipe, qids, data.queries, settings.rerank_depth)
    stage = pipe.first_stage
    chunks = np.array_split(np.arange(len(pairs)), max(1, min(settings.rerank_chunks, len(pairs))))

    def run(predict: Callable[[list[tuple[str, str]]], np.ndarray], name: str) -> tuple[np.ndarray, list[float]]:
        predict(pairs[:8])  # warm-up
        scores, secs = np.empty(len(pairs), dtype=np.float32), []
        for idx in progress(chunks, name, settings.quiet):
            t0 = time.perf_counter()
            scores[idx] = predict([pairs[i] for i in idx])
            secs.append((time.perf_counter() - t0) / len(idx))
        return scores, secs

    kwargs = {"max_length": cfg.max_length} if cfg.max_length else {}
    plain = CrossEncoder(resolve_model(cfg.model), device="cpu", **kwargs)
    results = {"plain CrossEncoder.predict (fp32, batch 32)": run(
        lambda p: plain.predict(p, batch_size=32, show_progress_bar=False), "plain")}
    notes = []
    # What the config resolves to here (backend auto, precision auto), so a variant equal to it is not run twice.
    configured = {"backend": pipe.reranker.backend, "precision": pipe.reranker.precision,
                  "quantization": getattr(pipe.reranker, "quantization", cfg.quantization)}
    for variant in wanted:
        if variant == "config":
            extra = f", {configured['quantization']}" if configured["quantization"] != "none" else ""
            name = f"ours, as configured ({configured['backend']} {configured['precision']}{extra})"
            reranker = pipe.reranker
        else:
            variant_settings = VARIANT_SETTINGS[variant]
            if "config" in wanted and all(configured.get(k) == v for k, v in variant_settings.items()):
                continue  # the configured reranker already is this variant
            if variant_settings.get("precision") == "bf16" and not torch.cpu._is_avx512_bf16_supported():
                notes.append(f"note: {variant} skipped: this CPU has no AVX-512 BF16")
                continue
            name = f"ours, {variant}"
            reranker = CrossEncoderReranker(config=cfg, **variant_settings)
        results[name] = run(lambda p, r=reranker: r.predict(p), variant)
    for model in settings.rerank_models:
        reranker = CrossEncoderReranker(config=cfg.model_copy(update={"model": model}))
        name = f"{model} ({reranker.backend} {reranker.precision})"
        results[name] = run(lambda p, r=reranker: r.predict(p), Path(model).name or model)
    base_scores, base_secs = next(iter(results.values()))
    base_rate = 1 / median(base_secs)
    first_ndcg = reranked_ndcg10(first, None, data.qrels)
    base_ndcg = reranked_ndcg10(first, base_scores, data.qrels)
    rows, out = [], {}
    for name, (scores, secs) in results.items():
        rate = 1 / median(secs)
        item = {"pairs_per_s": rate, "x_plain": rate / base_rate, "ndcg@10": reranked_ndcg10(first, scores, data.qrels),
                "spearman_vs_plain": float(spearmanr(scores, base_scores)[0]),
                "max_abs_diff_vs_plain": float(np.abs(scores - base_scores).max()), "chunk_s_per_pair": secs}
        item["ndcg_diff_vs_plain"] = item["ndcg@10"] - base_ndcg
        out[name] = item
        rows.append({"reranker": name, "pairs/s": rate, "x plain": item["x_plain"], "nDCG@10": item["ndcg@10"],
                     "d nDCG": item["ndcg_diff_vs_plain"], "Spearman": item["spearman_vs_plain"]})
    lengths = pipe.reranker.token_lengths(pairs)
    tokens = float(np.median(np.minimum(lengths, pipe.reranker.max_length)))
    truncated = float(np.mean(lengths > pipe.reranker.max_length))
    table = Table(f"Rerank: {cfg.model}: {len(qids)} {data.split} queries x top-{settings.rerank_depth} of {stage} = "
                  f"{len(pairs)} pairs (median {tokens:.0f} tokens; {truncated:.0%} cut at max_length "
                  f"{pipe.reranker.max_length})", rows,
                  f"pairs/s: median over {len(chunks)} chunks of the same pairs; nDCG@10 on these {len(qids)} queries "
                  f"(first stage alone: {first_ndcg:.4f}); reranker scores only (no interpolation).")
    report = {"model": cfg.model, "queries": len(qids), "depth": settings.rerank_depth, "pairs": len(pairs),
              "median_tokens": tokens, "truncated_share": truncated, "split": data.split, "first_stage": stage,
              "first_stage_ndcg@10": first_ndcg, "variants": out}
    return Section(report, [table], notes)


def curve_split(settings: Settings) -> Any:
    """The depth curve's queries: a BEIR split, or `dev`: the training queries a reranker held out."""
    import random
    from dataclasses import replace

    from retrieval.evaluation.beir import load_beir

    if settings.curve_split != "dev":
        return load_beir(settings.dataset, settings.curve_split)
    train = load_beir(settings.dataset, "train")
    # As the bundled reranker's card says: a seeded sample of the training queries, ids in numeric order.
    ids = sorted(train.queries, key=lambda q: (0, int(q), q) if q.isdigit() else (1, 0, q))
    dev = set(random.Random(settings.dev_seed).sample(ids, k=round(settings.dev_fraction * len(ids))))
    return replace(train, split="train (dev part)", queries={q: t for q, t in train.queries.items() if q in dev},
                   qrels={q: r for q, r in train.qrels.items() if q in dev})


def section_curve(pipe: Any, data: Any, settings: Settings) -> Section:
    """nDCG@10 and per-query latency of the rerank stage (pipeline as configured) for each rerank depth."""
    cfg = pipe.config.rerank
    qids = list(data.queries)[: settings.curve_queries]
    original = cfg.top_n
    rows, out = [], {}
    first = pipe.first_stage
    try:
        for n in settings.curve_depths:
            pipe.config.rerank.top_n = n
            run, secs = {}, []
            for q in progress(qids, f"top_n={n}", settings.quiet):
                t0 = time.perf_counter()
                run[q] = pipe.retrieve([data.queries[q]], stage="rerank")[0]
                secs.append(time.perf_counter() - t0)
            ndcg = mean_metric(run, data.qrels, "ndcg@10")
            out[n] = {"ndcg@10": ndcg, "p50_ms": pct(secs, 50) * 1e3, "p95_ms": pct(secs, 95) * 1e3}
            rows.append({"top_n": n, "nDCG@10": ndcg, "p50 ms/query": out[n]["p50_ms"],
                         "p95 ms/query": out[n]["p95_ms"]})
    finally:
        pipe.config.rerank.top_n = original
    run = dict(zip(qids, pipe.retrieve([data.queries[q] for q in qids], stage=first)))
    first_ndcg = mean_metric(run, data.qrels, "ndcg@10")
    table = Table(f"Rerank depth curve: {len(qids)} {data.split} queries, pipeline as configured (top_n now "
                  f"{original})", rows, f"latency = the whole pipeline up to rerank, one query at a time; {first} "
                  f"alone: nDCG@10 {first_ndcg:.4f}")
    report = {"split": data.split, "queries": len(qids), "first_stage_ndcg@10": first_ndcg,
              "configured_top_n": original, "depths": out}
    return Section(report, [table])
