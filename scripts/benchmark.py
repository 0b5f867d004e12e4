"""Side-by-side speed (and quality) of every stage against the libraries users would pick instead of us.

    python scripts/benchmark.py --dataset ../shared/datasets/scifact --config configs/default.yaml \
        --index /tmp/idx/scifact-hybrid --json bench.json

Every comparison runs in this one process on the same inputs, reports medians of repeated runs (warm-up excluded)
and the ratio beside the absolute figures. Sections: end-to-end pipeline latency and peak RSS (run first, so the
RSS is the pipeline's), BM25 queries and indexing (ours vs rank-bm25 vs bm25s), dense (encoding, FAISS index types),
rerank (ours vs plain CrossEncoder.predict, nDCG@10 on a stated subset of the test split) and the rerank depth curve
(nDCG@10 and latency per top_n). A config without a `rerank:` block skips the rerank sections and says so.
Without --index the index is built once under --cache-dir and reused (as scripts/evaluate.py does).
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from retrieval import cli  # noqa: E402

SECTIONS = ("e2e", "bm25", "bm25-index", "dense", "rerank", "curve")
RERANK_VARIANTS = ("config", "torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8", "onnx-int8-partial",
                   "openvino-fp32", "openvino-bf16")
VARIANT_SETTINGS: dict[str, dict[str, Any]] = {
    "torch-fp32": {"backend": "torch", "precision": "fp32"},
    "torch-bf16": {"backend": "torch", "precision": "bf16"},
    "onnx-fp32": {"backend": "onnx", "precision": "auto", "quantization": "none"},
    "onnx-int8": {"backend": "onnx", "precision": "auto", "quantization": "int8"},
    "onnx-int8-partial": {"backend": "onnx", "precision": "auto", "quantization": "int8_partial"},
    "openvino-fp32": {"backend": "openvino", "precision": "fp32"},
    "openvino-bf16": {"backend": "openvino", "precision": "bf16"},
}


# -- measuring ----------------------------------------------------------------------------------------------------


def timed_runs(fn: Callable[[], Any], repeats: int, min_seconds: float = 0.2, warmup: int = 1) -> list[float]:
    """Seconds per call of `fn`, one figure per run; a run loops until `min_seconds` so fast calls are measurable."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        loops, start = 0, time.perf_counter()
        while True:
            fn()
            loops += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        out.append(elapsed / loops)
    return out


def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def machine() -> dict[str, Any]:
    import faiss
    import onnxruntime
    import sentence_transformers
    import torch

    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": model, "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
        "isa": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags],
        "torch_threads": torch.get_num_threads(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__, "onnxruntime": onnxruntime.__version__,
        "faiss": faiss.__version__, "numpy": np.__version__,
    }


# -- printing -----------------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"
    return str(value)


def table(title: str, rows: list[dict[str, Any]], note: str = "") -> None:
    """A Markdown table (aligned, so it reads as well in a terminal as pasted into the README)."""
    print(f"\n#### {title}\n")
    if note:
        print(f"{note}\n")
    if not rows:
        print("(nothing measured)")
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |")
    print("|" + "|".join(":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    for row in cells:
        print("| " + " | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
              + " |")


# -- sections -----------------------------------------------------------------------------------------------------


def section_e2e(pipe_factory: Callable[[], Any], queries: list[str], args) -> tuple[dict[str, Any], Any]:
    """p50/p95 per stage for one query at a time and for batches of 32; RSS before/after loading and querying."""
    before = {"peak_rss_mib": peak_rss_mib(), "rss_mib": current_rss_mib()}
    start = time.perf_counter()
    pipe = pipe_factory()
    load_seconds = time.perf_counter() - start
    loaded = {"peak_rss_mib": peak_rss_mib(), "rss_mib": current_rss_mib()}
    stages = pipe.stages
    final = pipe.final_stage
    for q in queries[:3]:  # warm-up: first calls pay for lazy initialisation
        pipe.query(q)
    single: dict[str, list[float]] = {s: [] for s in stages}
    single["query()"] = []
    todo = queries[: args.e2e_queries]
    for q in cli_progress(todo, "e2e single", args):
        for s in stages:
            if s == final:
                continue
            t0 = time.perf_counter()
            pipe.retrieve([q], stage=s)
            single[s].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pipe.query(q)
        single["query()"].append(time.perf_counter() - t0)
    del single[final]
    batch: dict[str, list[float]] = {s: [] for s in stages if s != final}
    batch["query_batch()"] = []
    size = args.batch_size
    batches = [queries[i : i + size] for i in range(0, len(queries), size)][: args.e2e_batches]
    for b in cli_progress(batches, "e2e batches", args):
        for s in batch:
            t0 = time.perf_counter()
            if s == "query_batch()":
                pipe.query_batch(b)
            else:
                pipe.retrieve(b, stage=s)
            batch[s].append(time.perf_counter() - t0)
    answered = {"peak_rss_mib": peak_rss_mib(), "rss_mib": current_rss_mib()}
    rows, out_single, out_batch = [], {}, {}
    for name, values in single.items():
        label = f"{name} (= {final}, all stages)" if name == "query()" else f"up to {name}"
        out_single[name] = {"p50_ms": pct(values, 50) * 1e3, "p95_ms": pct(values, 95) * 1e3, "n": len(values)}
        rows.append({"stage (one query)": label, "p50 ms": out_single[name]["p50_ms"],
                     "p95 ms": out_single[name]["p95_ms"], "queries": len(values)})
    table(f"End to end: SearchPipeline latency per stage ({args.config_name}, final stage {final})", rows,
          "Each row runs the pipeline up to that stage (retrieve(stage=...)); query() runs them all and fetches the "
          "documents.")
    rows = []
    for name, values in batch.items():
        label = f"{name} (= {final})" if name == "query_batch()" else f"up to {name}"
        per_q = [v / size for v in values]
        out_batch[name] = {"p50_ms_per_batch": pct(values, 50) * 1e3, "p95_ms_per_batch": pct(values, 95) * 1e3,
                           "ms_per_query": median(per_q) * 1e3, "batches": len(values)}
        rows.append({f"stage (batch of {size})": label, "p50 ms/batch": out_batch[name]["p50_ms_per_batch"],
                     "p95 ms/batch": out_batch[name]["p95_ms_per_batch"],
                     "ms/query": out_batch[name]["ms_per_query"], "batches": len(values)})
    table("End to end: query_batch", rows)
    memory = {"before_load": before, "after_load": loaded, "after_queries": answered, "load_seconds": load_seconds}
    table("Memory (this process; the pipeline is loaded before any other section runs)", [
        {"moment": "before loading (imports only)", "RSS MiB": before["rss_mib"],
         "peak RSS MiB": before["peak_rss_mib"]},
        {"moment": f"index + models loaded ({load_seconds:.1f} s)", "RSS MiB": loaded["rss_mib"],
         "peak RSS MiB": loaded["peak_rss_mib"]},
        {"moment": "after answering the queries", "RSS MiB": answered["rss_mib"],
         "peak RSS MiB": answered["peak_rss_mib"]},
    ])
    return {"stages": stages, "single": out_single, "batch": out_batch, "batch_size": size, "memory": memory}, pipe


def cli_progress(items: Sequence[Any], desc: str, args) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="it", leave=False, disable=args.quiet)


def bm25_tokens(pipe: Any, queries: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    from index.analyzer import Analyzer

    analyzer = Analyzer(pipe.index.build_config.bm25.analyzer)
    return pipe.index.bm25.doc_tokens(), [analyzer.tokenize(q) for q in queries]


def section_bm25(pipe: Any, queries: list[str], args) -> dict[str, Any]:
    """Query throughput on the same tokens: ours (single, batched) vs rank_bm25 get_top_n vs bm25s."""
    import bm25s
    import rank_bm25

    from index.bm25 import BM25Scorer

    cfg = pipe.config.first_stage.bm25
    if cfg.variant != "okapi":
        print(f"\nnote: the config's BM25 variant is {cfg.variant!r}; the comparison uses okapi (rank_bm25.BM25Okapi)")
        cfg = cfg.model_copy(update={"variant": "okapi"})
    docs, toks = bm25_tokens(pipe, queries[: args.bm25_queries])
    ours = BM25Scorer(pipe.index.bm25, cfg)
    ref = rank_bm25.BM25Okapi(docs, k1=cfg.k1, b=cfg.b, epsilon=cfg.epsilon)
    # bm25s "robertson" is the same Okapi formula as rank_bm25 except the epsilon floor for negative idf.
    other = bm25s.BM25(k1=cfg.k1, b=cfg.b, method="robertson")
    other.index(docs, show_progress=False)
    everyone = list(range(len(docs)))
    k = args.k
    runs = {
        "rank_bm25 get_top_n": timed_runs(lambda: [ref.get_top_n(t, everyone, n=k) for t in toks], args.repeats,
                                          warmup=0),
        "bm25s retrieve, one query per call": timed_runs(
            lambda: [other.retrieve([t], k=k, show_progress=False) for t in toks], args.repeats),
        "bm25s retrieve, all queries in one call": timed_runs(
            lambda: other.retrieve(toks, k=k, show_progress=False), args.repeats),
        "ours search, one query per call": timed_runs(lambda: [ours.search(t, k) for t in toks], args.repeats),
        "ours search_batch": timed_runs(lambda: ours.search_batch(toks, k), args.repeats),
    }
    identical = tie_only = 0
    for t in toks:
        ref_scores = ref.get_scores(t)
        top = np.argsort(ref_scores)[::-1][:k]  # exactly what get_top_n does with these scores
        rows_ = ours.search(t, k)[0]
        n = len(rows_)
        # Ours returns only documents holding a query term; rank_bm25 pads its top-k with score-0 documents.
        padded = n == len(top) or not np.any(ref_scores[top[n:]])
        if padded and rows_.tolist() == top[:n].tolist():
            identical += 1
        elif padded and sorted(ref_scores[top[:n]].tolist()) == sorted(ref_scores[rows_].tolist()):
            tie_only += 1  # the same scores; rank_bm25 orders exact ties by descending row, ours ascending
    overlap = np.mean([len(set(ours.search(t, k)[0].tolist()) & set(other.retrieve([t], k=k, show_progress=False)
                                                                        .documents[0].tolist())) / k
                       for t in toks if t])
    base = len(toks) / median(runs["rank_bm25 get_top_n"])
    rows, out = [], {}
    for name, secs in runs.items():
        qps = len(toks) / median(secs)
        out[name] = {"queries_per_s": qps, "x_rank_bm25": qps / base, "runs_s": secs}
        rows.append({"method": name, "queries/s": qps, "x rank_bm25": qps / base,
                     "ms/query": 1e3 * median(secs) / len(toks)})
    table(f"BM25 queries: {len(toks)} queries, top-{k}, {len(docs):,} documents, same tokens", rows,
          f"ours vs rank_bm25 top-{k}: {identical}/{len(toks)} identical"
          + (f", {tie_only} differ only in the order of exactly tied scores" if tie_only else "")
          + f"; bm25s (robertson) top-{k} overlap with ours {overlap:.3f}")
    return {"queries": len(toks), "k": k, "documents": len(docs), "methods": out,
            "identical_top_k_vs_rank_bm25": identical, "tie_order_only": tie_only, "bm25s_overlap": overlap}


def section_bm25_index(pipe: Any, args) -> dict[str, Any]:
    """Documents per second to build each library's index from the same pre-tokenized documents."""
    import bm25s
    import rank_bm25

    from index.analyzer import Analyzer
    from index.bm25 import BM25Scorer, BM25Stats
    from index.documents import read_corpus

    cfg = pipe.config.first_stage.bm25
    docs = pipe.index.bm25.doc_tokens()
    runs = {
        "rank_bm25.BM25Okapi(...)": timed_runs(lambda: rank_bm25.BM25Okapi(docs, k1=cfg.k1, b=cfg.b),
                                               args.repeats, warmup=0),
        "bm25s.BM25().index(...)": timed_runs(lambda: bm25s.BM25(k1=cfg.k1, b=cfg.b).index(docs, show_progress=False),
                                              args.repeats, warmup=0),
        "ours BM25Stats.build + BM25Scorer": timed_runs(lambda: BM25Scorer(BM25Stats.build(docs), cfg), args.repeats,
                                                        warmup=0),
    }
    base = len(docs) / median(runs["rank_bm25.BM25Okapi(...)"])
    rows, out = [], {}
    for name, secs in runs.items():
        rate = len(docs) / median(secs)
        out[name] = {"docs_per_s": rate, "x_rank_bm25": rate / base, "runs_s": secs}
        rows.append({"method": name, "docs/s": rate, "x rank_bm25": rate / base, "seconds": median(secs)})
    texts = [f"{d.title}\n{d.text}" if d.title else d.text for d in read_corpus(args.dataset)]
    analyzer = Analyzer(pipe.index.build_config.bm25.analyzer)
    secs = timed_runs(lambda: [analyzer.tokenize(t) for t in texts], 1, warmup=0)
    out["tokenize (our analyzer, not in the figures above)"] = {"docs_per_s": len(texts) / median(secs)}
    table(f"BM25 indexing: {len(docs):,} pre-tokenized documents", rows,
          f"(tokenizing them with our analyzer: {len(texts) / median(secs):,.0f} docs/s, common to all)")
    return {"documents": len(docs), "methods": out}


def section_dense(pipe: Any, queries: list[str], args) -> dict[str, Any]:
    """Encoding speed (plain sentence-transformers vs ours, fp32 and bf16), FAISS types: latency and recall@10."""
    import faiss
    import torch

    from index.config import FaissConfig
    from index.dense import Encoder, build_faiss, configure_search, search_faiss

    if pipe.dense is None or pipe.index.embeddings is None:
        print("\n#### Dense: skipped (the config or the index has no dense stage)")
        return {"skipped": "no dense stage"}
    encoder = pipe.dense.encoder
    store = pipe.index.store
    rows_ = list(range(min(args.dense_passages, len(store.passage_ids))))
    texts = list(store.passage_texts(rows_).values())
    model = encoder.model
    repeats = min(args.repeats, 3)  # encoding is slow and steady: 3 runs are enough
    model.encode(texts[:8], show_progress_bar=False)  # warm-up
    plain = timed_runs(lambda: model.encode(texts, batch_size=encoder.config.batch_size, show_progress_bar=False),
                       repeats, warmup=0)
    variants = {"plain SentenceTransformer.encode (fp32)": plain}
    plain_emb = model.encode(texts, batch_size=encoder.config.batch_size, normalize_embeddings=True,
                             show_progress_bar=False)
    embeddings = {}
    for backend, precision in (("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16")):
        if precision == "bf16" and not torch.cpu._is_avx512_bf16_supported():
            continue
        enc = Encoder(encoder.name, encoder.config.model_copy(update={"precision": precision, "backend": backend}))
        enc.encode_documents(texts[:8], show_progress=False)  # warm-up
        name = f"ours Encoder.encode_documents ({backend} {precision})"
        variants[name] = timed_runs(lambda e=enc: e.encode_documents(texts, show_progress=False), repeats, warmup=0)
        embeddings[name] = enc.encode_documents(texts, show_progress=False)
        del enc
    base = len(texts) / median(plain)
    rows, enc_out = [], {}
    for name, secs in variants.items():
        rate = len(texts) / median(secs)
        cosine = float((embeddings[name] * plain_emb).sum(axis=1).min()) if name in embeddings else 1.0
        enc_out[name] = {"passages_per_s": rate, "x_plain": rate / base, "runs_s": secs,
                         "min_cosine_vs_plain": cosine}
        rows.append({"encoder": name, "passages/s": rate, "x plain": rate / base, "min cos vs plain": cosine})
    qs = queries[: args.dense_queries]
    one = timed_runs(lambda: [encoder.encode_queries([q]) for q in qs], args.repeats)
    batched = timed_runs(lambda: [encoder.encode_queries(qs[i : i + args.batch_size])
                                  for i in range(0, len(qs), args.batch_size)], args.repeats)
    for name, secs in (("queries one at a time", one), (f"queries in batches of {args.batch_size}", batched)):
        rate = len(qs) / median(secs)
        enc_out[name] = {"queries_per_s": rate}
        rows.append({"encoder": f"ours encode_queries, {name}", "passages/s": rate})
    table(f"Dense encoding: {len(texts)} passages, {encoder.name}, batch {encoder.config.batch_size}, "
          f"torch threads {torch.get_num_threads()}", rows)

    emb = np.ascontiguousarray(pipe.index.embeddings, dtype=np.float32)
    qv = encoder.encode_queries(qs)
    k = args.k
    base_cfg = pipe.config.first_stage.dense.faiss
    types = {"flat": base_cfg.model_copy(update={"type": "flat", "rescore": 0}),
             "hnsw": base_cfg.model_copy(update={"type": "hnsw", "rescore": 0}),
             "ivf": base_cfg.model_copy(update={"type": "ivf", "rescore": 0}),
             "sq8": base_cfg.model_copy(update={"type": "sq8", "rescore": 0}),
             "sq8 + rescore 50": base_cfg.model_copy(update={"type": "sq8", "rescore": 50})}
    rows, faiss_out, truth = [], {}, None
    for name, fc in types.items():
        t0 = time.perf_counter()
        index = build_faiss(emb, FaissConfig.model_validate(fc.model_dump()))
        build_s = time.perf_counter() - t0
        configure_search(index, fc)
        vectors = emb if fc.rescore else None
        single = timed_runs(lambda i=index, c=fc, v=vectors: [search_faiss(i, qv[j : j + 1], k, c, v)
                                                              for j in range(len(qv))], args.repeats)
        batch = timed_runs(lambda i=index, c=fc, v=vectors: search_faiss(i, qv, k, c, v), args.repeats)
        ids, _ = search_faiss(index, qv, k, fc, vectors)
        if truth is None:
            truth = ids
        recall = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(ids, truth)]))
        faiss_out[name] = {"build_s": build_s, "ms_per_query_single": 1e3 * median(single) / len(qv),
                           "queries_per_s_batched": len(qv) / median(batch), "recall_at_k_vs_flat": recall,
                           "bytes": faiss.serialize_index(index).size}
        rows.append({"index": name, "build s": build_s, "ms/query (one)": faiss_out[name]["ms_per_query_single"],
                     "queries/s (batched)": faiss_out[name]["queries_per_s_batched"], f"recall@{k} vs flat": recall,
                     "MiB": faiss_out[name]["bytes"] / 2**20})
    table(f"FAISS: {len(emb):,} x {emb.shape[1]} vectors, {len(qv)} real queries, k={k} "
          f"(hnsw M={base_cfg.hnsw_m} efSearch={base_cfg.ef_search}; ivf nprobe={base_cfg.nprobe})", rows)
    return {"encoding": enc_out, "passages": len(texts), "faiss": faiss_out, "queries": len(qv)}


def first_stage_name(pipe: Any) -> str:
    return next(s for s in ("hybrid", "dense", "bm25") if s in pipe.stages)


def candidate_pairs(pipe: Any, qids: list[str], queries: dict[str, str],
                    depth: int) -> tuple[dict[str, list[str]], list[tuple[str, str]], str]:
    """The first stage's top-`depth` documents per query and the (query, title + text) pairs, query by query."""
    stage = first_stage_name(pipe)
    lists = pipe.retrieve([queries[q] for q in qids], stage=stage, top_k=depth)
    ranked = {q: [d for d, _ in lst] for q, lst in zip(qids, lists)}
    docs = pipe.index.store.get({d for ids in ranked.values() for d in ids})
    pairs = [(queries[q], f"{docs[d]['title']} {docs[d]['text']}".strip()) for q in qids for d in ranked[q]]
    return ranked, pairs, stage


def ndcg10(ranked: dict[str, list[str]], scores: np.ndarray | None, qrels: dict[str, dict[str, int]]) -> float:
    """nDCG@10 (pytrec_eval) of the first-stage order (scores None) or of the candidates re-sorted by `scores`."""
    from retrieval.evaluation import score_run

    run, pos = {}, 0
    for q, ids in ranked.items():
        if scores is None:
            run[q] = [(d, -float(i)) for i, d in enumerate(ids)]
        else:
            s = scores[pos : pos + len(ids)]
            order = np.argsort(-s, kind="stable")
            run[q] = [(ids[i], float(s[i])) for i in order]
        pos += len(ids)
    return float(score_run(run, {q: qrels[q] for q in ranked}, ["ndcg@10"])["ndcg@10"].mean())


def section_rerank(pipe: Any, data: Any, args) -> dict[str, Any]:
    """Ours (as configured, and each backend/precision) vs plain CrossEncoder.predict on the same real pairs."""
    import torch
    from scipy.stats import spearmanr
    from sentence_transformers import CrossEncoder

    from index.models import resolve_model
    from rerank.cross_encoder import CrossEncoderReranker

    cfg = pipe.config.rerank
    qids = list(data.queries)[: args.rerank_queries]
    ranked, pairs, stage = candidate_pairs(pipe, qids, data.queries, args.rerank_depth)
    chunks = np.array_split(np.arange(len(pairs)), max(1, min(args.rerank_chunks, len(pairs))))

    def run(predict: Callable[[list[tuple[str, str]]], np.ndarray], name: str) -> tuple[np.ndarray, list[float]]:
        predict(pairs[:8])  # warm-up
        scores, secs = np.empty(len(pairs), dtype=np.float32), []
        for idx in cli_progress(chunks, name, args):
            t0 = time.perf_counter()
            scores[idx] = predict([pairs[i] for i in idx])
            secs.append((time.perf_counter() - t0) / len(idx))
        return scores, secs

    kwargs = {"max_length": cfg.max_length} if cfg.max_length else {}
    plain = CrossEncoder(resolve_model(cfg.model), device="cpu", **kwargs)
    results = {"plain CrossEncoder.predict (fp32, batch 32)": run(
        lambda p: plain.predict(p, batch_size=32, show_progress_bar=False), "plain")}
    wanted = [v.strip() for v in args.rerank_variants.split(",") if v.strip()]
    # What the config resolves to here (backend auto, precision auto), so a variant equal to it is not run twice.
    configured = {"backend": pipe.reranker.backend, "precision": pipe.reranker.precision,
                  "quantization": cfg.quantization}
    for variant in wanted:
        if variant == "config":
            extra = f", {cfg.quantization}" if configured["backend"] == "onnx" else ""
            name = f"ours, as configured ({configured['backend']} {configured['precision']}{extra})"
            reranker = pipe.reranker
        else:
            settings = VARIANT_SETTINGS[variant]
            if "config" in wanted and all(configured.get(k) == v for k, v in settings.items()):
                continue  # the configured reranker already is this variant
            if settings.get("precision") == "bf16" and not torch.cpu._is_avx512_bf16_supported():
                print(f"note: {variant} skipped: this CPU has no AVX-512 BF16")
                continue
            name = f"ours, {variant}"
            reranker = CrossEncoderReranker(config=cfg, **settings)
        results[name] = run(lambda p, r=reranker: r.predict(p), variant)
    base_scores, base_secs = next(iter(results.values()))
    base_rate = 1 / median(base_secs)
    first_ndcg = ndcg10(ranked, None, data.qrels)
    rows, out = [], {}
    for name, (scores, secs) in results.items():
        rate = 1 / median(secs)
        item = {"pairs_per_s": rate, "x_plain": rate / base_rate, "ndcg@10": ndcg10(ranked, scores, data.qrels),
                "spearman_vs_plain": float(spearmanr(scores, base_scores)[0]),
                "max_abs_diff_vs_plain": float(np.abs(scores - base_scores).max()), "chunk_s_per_pair": secs}
        item["ndcg_diff_vs_plain"] = item["ndcg@10"] - ndcg10(ranked, base_scores, data.qrels)
        out[name] = item
        rows.append({"reranker": name, "pairs/s": rate, "x plain": item["x_plain"], "nDCG@10": item["ndcg@10"],
                     "d nDCG": item["ndcg_diff_vs_plain"], "Spearman": item["spearman_vs_plain"]})
    lengths = pipe.reranker.token_lengths(pairs)
    tokens = float(np.median(np.minimum(lengths, pipe.reranker.max_length)))
    truncated = float(np.mean(lengths > pipe.reranker.max_length))
    table(f"Rerank: {cfg.model}: {len(qids)} {data.split} queries x top-{args.rerank_depth} of {stage} = "
          f"{len(pairs)} pairs (median {tokens:.0f} tokens; {truncated:.0%} cut at max_length "
          f"{pipe.reranker.max_length})", rows,
          f"pairs/s: median over {len(chunks)} chunks of the same pairs; nDCG@10 on these {len(qids)} queries "
          f"(first stage alone: {first_ndcg:.4f}); reranker scores only (no interpolation).")
    return {"model": cfg.model, "queries": len(qids), "depth": args.rerank_depth, "pairs": len(pairs),
            "median_tokens": tokens, "truncated_share": truncated, "split": data.split, "first_stage": stage,
            "first_stage_ndcg@10": first_ndcg, "variants": out}


def curve_split(args) -> Any:
    """The depth curve's queries: a BEIR split, or `dev`: the training queries a reranker held out."""
    import random
    from dataclasses import replace

    from retrieval.evaluation import load_beir

    if args.curve_split != "dev":
        return load_beir(args.dataset, args.curve_split)
    train = load_beir(args.dataset, "train")
    # As the bundled reranker's card says: a seeded sample of the training queries, ids in numeric order.
    ids = sorted(train.queries, key=lambda q: (0, int(q), q) if q.isdigit() else (1, 0, q))
    dev = set(random.Random(args.dev_seed).sample(ids, k=round(args.dev_fraction * len(ids))))
    return replace(train, split="train (dev part)", queries={q: t for q, t in train.queries.items() if q in dev},
                   qrels={q: r for q, r in train.qrels.items() if q in dev})


def section_curve(pipe: Any, data: Any, args) -> dict[str, Any]:
    """nDCG@10 and per-query latency of the rerank stage (pipeline as configured) for each rerank depth."""
    from retrieval.evaluation import score_run

    cfg = pipe.config.rerank
    qids = list(data.queries)[: args.curve_queries]
    original = cfg.top_n
    depths = args.curve_depths
    rows, out = [], {}
    first = first_stage_name(pipe)
    try:
        for n in depths:
            pipe.config.rerank.top_n = n
            run, secs = {}, []
            for q in cli_progress(qids, f"top_n={n}", args):
                t0 = time.perf_counter()
                run[q] = pipe.retrieve([data.queries[q]], stage="rerank")[0]
                secs.append(time.perf_counter() - t0)
            ndcg = float(score_run(run, {q: data.qrels[q] for q in qids}, ["ndcg@10"])["ndcg@10"].mean())
            out[n] = {"ndcg@10": ndcg, "p50_ms": pct(secs, 50) * 1e3, "p95_ms": pct(secs, 95) * 1e3}
            rows.append({"top_n": n, "nDCG@10": ndcg, "p50 ms/query": out[n]["p50_ms"],
                         "p95 ms/query": out[n]["p95_ms"]})
    finally:
        pipe.config.rerank.top_n = original
    run = dict(zip(qids, pipe.retrieve([data.queries[q] for q in qids], stage=first)))
    first_ndcg = float(score_run(run, {q: data.qrels[q] for q in qids}, ["ndcg@10"])["ndcg@10"].mean())
    table(f"Rerank depth curve: {len(qids)} {data.split} queries, pipeline as configured (top_n now {original})",
          rows, f"latency = the whole pipeline up to rerank, one query at a time; {first} alone: nDCG@10 "
          f"{first_ndcg:.4f}")
    return {"split": data.split, "queries": len(qids), "first_stage_ndcg@10": first_ndcg, "configured_top_n": original,
            "depths": out}


# -- main ---------------------------------------------------------------------------------------------------------


def main(args) -> int:
    import logging

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    # The reranker logs truncation per call; the rerank table reports the share of truncated pairs instead.
    logging.getLogger("rerank.cross_encoder").setLevel(logging.WARNING)
    from retrieval import SearchPipeline
    from retrieval.config import load_config
    from retrieval.evaluation import cached_index, load_beir

    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    started = time.perf_counter()
    config = load_config(args.config)
    args.config_name = Path(args.config).name
    test = load_beir(args.dataset, "test")
    index = Path(args.index) if args.index else cached_index(args.dataset, config, args.cache_dir,
                                                             show_progress=not args.quiet)
    config.index.path = index.expanduser().resolve()
    report: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": machine(),
                              "config": str(args.config), "index": str(config.index.path),
                              "dataset": str(args.dataset)}
    m = report["machine"]
    print(f"# twostage benchmark: {m['cpu']}, {m['usable_cpus']} usable CPUs ({', '.join(m['isa'])}), "
          f"torch {m['torch']} with {m['torch_threads']} threads, load average {m['load_average_at_start']}")
    print(f"config {args.config}, index {config.index.path}, dataset {args.dataset}")
    queries = list(test.queries.values())
    pipe = None
    if "e2e" in wanted:
        report["e2e"], pipe = section_e2e(lambda: SearchPipeline(config), queries, args)
    if pipe is None:
        pipe = SearchPipeline(config)
    if "bm25" in wanted:
        report["bm25"] = section_bm25(pipe, queries, args) if pipe.bm25 else {"skipped": "no bm25 stage"}
    if "bm25-index" in wanted:
        report["bm25_index"] = section_bm25_index(pipe, args) if pipe.bm25 else {"skipped": "no bm25 stage"}
    if "dense" in wanted:
        report["dense"] = section_dense(pipe, queries, args)
    if {"rerank", "curve"} & set(wanted):
        if config.rerank is None:
            reason = f"{args.config} has no rerank: block"
            print(f"\n#### Rerank: skipped: {reason} (add one, e.g. from configs/msmarco.yaml, to measure it)")
            report["rerank"] = report["curve"] = {"skipped": reason}
        else:
            if "rerank" in wanted:
                report["rerank"] = section_rerank(pipe, test, args)
            if "curve" in wanted:
                split = test if args.curve_split == "test" else curve_split(args)
                report["curve"] = section_curve(pipe, split, args)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = time.perf_counter() - started
    print(f"\n{report['seconds']:.0f} s in all; load average at the end {report['machine']['load_average_at_end']} "
          f"(a load above {m['usable_cpus']} means other processes shared the CPU)")
    if args.json:
        out = Path(args.json).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(cli.to_json(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    p.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    p.add_argument("--index", help="an existing index of the dataset built with the config's build settings")
    p.add_argument("--cache-dir", default=str(ROOT / "indexes" / "eval"), help="where to build/reuse the index")
    p.add_argument("--json", help="also write every figure (and the machine) to this JSON file")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--repeats", type=cli.positive_int, default=5,
                   help="timed runs per measurement (the median is reported)")
    p.add_argument("--k", type=cli.positive_int, default=10, help="top-k for BM25 and FAISS comparisons")
    p.add_argument("--batch-size", type=cli.positive_int, default=32, help="queries per query_batch call")
    p.add_argument("--e2e-queries", type=cli.positive_int, default=30)
    p.add_argument("--e2e-batches", type=cli.positive_int, default=1)
    p.add_argument("--bm25-queries", type=cli.positive_int, default=300,
                   help="queries for the BM25 comparison (rank_bm25 is slow)")
    p.add_argument("--dense-passages", type=cli.positive_int, default=128, help="passages encoded per run")
    p.add_argument("--dense-queries", type=cli.positive_int, default=200)
    p.add_argument("--rerank-queries", type=cli.positive_int, default=50,
                   help="test queries whose candidates are reranked")
    p.add_argument("--rerank-depth", type=cli.positive_int, default=20,
                   help="candidates per query for the rerank comparison")
    p.add_argument("--rerank-chunks", type=cli.positive_int, default=5, help="timed chunks the pairs are split into")
    p.add_argument("--rerank-variants", default="config,torch-fp32,torch-bf16,onnx-int8,openvino-fp32",
                   help=f"comma-separated subset of {','.join(RERANK_VARIANTS)} (plain is always run)")
    p.add_argument("--curve-queries", type=cli.positive_int, default=12, help="queries for the rerank depth curve")
    p.add_argument("--curve-depths", type=cli.int_list(cli.positive_int), default=[10, 20, 50, 100],
                   help="rerank top_n values, comma-separated")
    p.add_argument("--curve-split", default="dev",
                   help="split for the depth curve, or dev: the training queries held out from the reranker "
                        "(choosing a depth is tuning: not test, whose queries only measure)")
    p.add_argument("--dev-fraction", type=cli.Bounded(float, low=0, high=1, low_open=True), default=0.2,
                   help="dev: share of the training queries held out")
    p.add_argument("--dev-seed", type=cli.seed, default=13, help="dev: seed of the sample (the bundled reranker's)")
    return p


if __name__ == "__main__":
    parsed = build_parser().parse_args()
    cli.run(main, parsed)
