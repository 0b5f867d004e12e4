"""Dense retrieval: encoding speed (plain sentence-transformers vs our encoder on each backend and precision, with
how far the embeddings drift) and each FAISS index type's latency, size and recall against exact search.

Example:
    >>> from retrieval.benchmark.dense import section_dense
    >>> section_dense(pipe, queries, Settings(dataset)).report["faiss"]["hnsw"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from retrieval.benchmark.measure import median, timed_runs
from retrieval.benchmark.report import Section, Settings, Table


def section_dense(pipe: Any, queries: list[str], settings: Settings) -> Section:
    """Encoding speed (plain sentence-transformers vs ours, fp32 and bf16), FAISS types: latency and recall@10."""
    import faiss
    import torch

    from index.config import FaissConfig
    from index.dense import Encoder, build_faiss, configure_search, search_faiss

    if pipe.dense is None or pipe.index.embeddings is None:
        return Section({"skipped": "no dense stage"},
                       notes=["\n#### Dense: skipped (the config or the index has no dense stage)"])
    encoder = pipe.dense.encoder
    store = pipe.index.store
    rows_ = list(range(min(settings.dense_passages, len(store.passage_ids))))
    texts = list(store.passage_texts(rows_).values())
    model = encoder.model
    if encoder.backend != "torch":  # the pipeline's weights live in the exported graph: the baseline loads its own
        from sentence_transformers import SentenceTransformer

        from index.runtime.models import load_model

        model = load_model(encoder.name, "bi-encoder", SentenceTransformer, device="cpu",
                           trust_remote_code=encoder.config.trust_remote_code)
    repeats = min(settings.repeats, 3)  # encoding is slow and steady: 3 runs are enough
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
    qs = queries[: settings.dense_queries]
    size = settings.batch_size
    one = timed_runs(lambda: [encoder.encode_queries([q]) for q in qs], settings.repeats)
    batched = timed_runs(lambda: [encoder.encode_queries(qs[i : i + size]) for i in range(0, len(qs), size)],
                         settings.repeats)
    for name, secs in (("queries one at a time", one), (f"queries in batches of {size}", batched)):
        rate = len(qs) / median(secs)
        enc_out[name] = {"queries_per_s": rate}
        rows.append({"encoder": f"ours encode_queries, {name}", "passages/s": rate})
    tables = [Table(f"Dense encoding: {len(texts)} passages, {encoder.name}, batch {encoder.config.batch_size}, "
                    f"torch threads {torch.get_num_threads()}", rows)]

    emb = np.ascontiguousarray(pipe.index.embeddings, dtype=np.float32)
    qv = encoder.encode_queries(qs)
    k = settings.k
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
                                                              for j in range(len(qv))], settings.repeats)
        batch = timed_runs(lambda i=index, c=fc, v=vectors: search_faiss(i, qv, k, c, v), settings.repeats)
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
    tables.append(Table(f"FAISS: {len(emb):,} x {emb.shape[1]} vectors, {len(qv)} real queries, k={k} "
                        f"(hnsw M={base_cfg.hnsw_m} efSearch={base_cfg.ef_search}; ivf nprobe={base_cfg.nprobe})",
                        rows))
    return Section({"encoding": enc_out, "passages": len(texts), "faiss": faiss_out, "queries": len(qv)}, tables)
