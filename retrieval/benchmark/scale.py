"""Scale: a million synthetic passages on one machine (the `scale` section of `scripts/benchmark.py`).

BM25: a corpus of `scale_passages` synthetic passages (the Zipfian words and log-normal lengths of the `updates`
section's generator, written block by block to a temporary JSONL file, never held whole) is built into a
BM25-only index in a child process, whose peak RSS (`wait4`) and seconds are reported; a second child opens the
index (seconds, RSS after open) and times `scale_queries` typical queries (2 to 5 words, the 50 most frequent
ranks left out) one per call, p50/p95, and its RSS after them.

Dense: `scale_passages` x 384 synthetic unit vectors of intrinsic dimension 64 (`synthetic_vectors`: encoding a
million passages is out of reach on this CPU) in each FAISS type of `scale_faiss`, built with
`index.dense.build_faiss`: build seconds, the index's bytes, single-query p50 at the config's search settings,
and recall@10 against the exact top-10. Beside them, recall@10 on the real embeddings of the index given to the
benchmark and on synthetic vectors of the same count (`calibrate`): how much harder the synthetic vectors are.

Example:
    >>> from retrieval.benchmark.scale import section_scale
    >>> section_scale(config, Settings(dataset, sections=("scale",), scale_passages=100_000))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.benchmark.measure import current_rss_mib, load_average, pct, progress
from retrieval.benchmark.report import Section, Settings, Table
from retrieval.benchmark.updates import BUCKETS, DIM, SEED, bm25_settings, synthetic_queries, synthetic_texts

BLOCK = 50_000  # passages generated (and vectors drawn) at a time
LATENT_DIM = 64
NOISE = 0.1
RECALL_K = 10


def write_synthetic_corpus(n: int, path: Path, quiet: bool = True) -> Path:
    """`n` synthetic passages as JSONL (`_id`, `text`, `bucket`), generated and written BLOCK at a time: the words
    and lengths of `retrieval.benchmark.updates.synthetic_corpus`, each block from its own seed."""
    with open(path, "w", encoding="utf-8") as fh:
        for start in progress(range(0, n, BLOCK), "scale: writing passages", quiet):
            rng = np.random.default_rng([SEED, start])
            count = min(BLOCK, n - start)
            texts = synthetic_texts(rng, count)
            buckets = rng.integers(0, BUCKETS, count)
            fh.writelines(json.dumps({"_id": f"p{start + i:07d}", "text": text, "bucket": int(buckets[i])}) + "\n"
                          for i, text in enumerate(texts))
    return path


def synthetic_vectors(n: int, dim: int = DIM, seed: int = SEED) -> np.ndarray:
    """`n` unit vectors of intrinsic dimension LATENT_DIM (Gaussian points of that dimension through one fixed
    random projection to `dim`, plus a little isotropic noise), float32, drawn BLOCK at a time. Sentence
    embeddings live near such a low-dimensional set, which is what approximate indexes exploit; uniform random
    vectors in 384 dimensions have no near neighbours to find."""
    projection = np.random.default_rng(SEED).standard_normal((LATENT_DIM, dim), dtype=np.float32)
    rng = np.random.default_rng([seed, 1])
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        block = rng.standard_normal((stop - start, LATENT_DIM), dtype=np.float32) @ projection
        block += NOISE * np.sqrt(LATENT_DIM, dtype=np.float32) * rng.standard_normal(block.shape, dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The exact top-k rows by inner product per query (the recall reference): `index.dense.exact_top_k` over
    BLOCK rows at a time, merged."""
    from index.dense import exact_top_k

    ids = np.empty((len(queries), 0), dtype=np.int64)
    scores = np.empty((len(queries), 0), dtype=np.float32)
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start : start + BLOCK]
        block_ids, block_scores = exact_top_k(block, np.arange(len(block)), queries, k)
        ids = np.concatenate([ids, np.where(block_ids >= 0, block_ids + start, -1)], axis=1)
        scores = np.concatenate([scores, block_scores], axis=1)
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        ids, scores = np.take_along_axis(ids, keep, axis=1), np.take_along_axis(scores, keep, axis=1)
    return ids


def recall(found: Any, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-RECALL_K among the rows found for it."""
    return float(np.mean([len(set(np.asarray(a).tolist()) & set(b.tolist())) / RECALL_K
                          for a, b in zip(found, exact)]))


def faiss_settings(config: Any, settings: Settings, faiss_type: str) -> Any:
    """The config's `dense.faiss` (defaults without a dense stage) as `faiss_type`, at the section's hnsw build
    effort."""
    from index.config import FaissConfig

    base = config.first_stage.dense.faiss if config.first_stage.dense is not None else FaissConfig()
    return base.model_copy(update={"type": faiss_type, "ef_construction": settings.scale_ef_construction})


def built_faiss(vectors: np.ndarray, cfg: Any) -> Any:
    """`index.dense.build_faiss`, then its search settings, as loading an index sets them (ef_search, nprobe)."""
    from index.dense import build_faiss, configure_search

    index = build_faiss(np.ascontiguousarray(vectors), cfg)
    configure_search(index, cfg)
    return index


def synthetic_model(dim: int) -> str:
    """The name a hybrid index built by `SyntheticEncoder` of `dim` dimensions records as its dense model."""
    return f"synthetic:scale-{dim}"


class SyntheticEncoder:
    """The million-passage hybrid index's stand-in passage encoder: `synthetic_vectors` of the query encoder's
    dimension `dim`, a new seed per call (what `build_index` takes as `models={"dense": encoder}`; queries are
    encoded by the real bi-encoder)."""

    def __init__(self, dim: int = DIM) -> None:
        from index.config import DenseConfig

        self.dim = dim
        self.config = DenseConfig(model=synthetic_model(dim))
        self.calls = 0

    def encode_documents(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        self.calls += 1
        if not texts:
            return np.empty((0, self.dim), np.float32)
        return synthetic_vectors(len(texts), dim=self.dim, seed=SEED + 2 + self.calls)


def _hybrid_build(args: list[str]) -> Any:
    from index.config import BuildConfig

    bm25, faiss_type, ef_construction, dim = args
    return BuildConfig.model_validate({"bm25": json.loads(bm25), "dense": {
        "model": synthetic_model(int(dim)), "faiss": {"type": faiss_type, "ef_construction": int(ef_construction)}}})


def _child_hybrid(what: str, args: list[str]) -> None:
    """`build-hybrid CORPUS INDEX BM25_JSON FAISS_TYPE EF_CONSTRUCTION DIM` or `search-hybrid INDEX BM25_JSON
    FAISS_TYPE EF_CONSTRUCTION DIM QUERIES K QUERY_MODEL`."""
    from index.builder import build_index

    if what == "build-hybrid":
        corpus, index, *rest = args
        report = build_index(corpus, index, _hybrid_build(rest), show_progress=False,
                             models={"dense": SyntheticEncoder(int(rest[-1]))})
        print(json.dumps({"seconds": report.seconds, "phases": report.phases, "bytes": report.bytes_on_disk,
                          "passages": report.passages}))
        return
    from index.dense import Encoder
    from retrieval.benchmark.updates import open_pipeline

    index, bm25, faiss_type, ef_construction, dim, queries_file, k, query_model = args
    build = _hybrid_build([bm25, faiss_type, ef_construction, dim])
    queries = json.loads(Path(queries_file).read_text(encoding="utf-8"))
    rss_start = current_rss_mib()
    encoder = Encoder(query_model, build.dense)
    encoder.encode_queries(queries[:4])
    rss_before = current_rss_mib()
    start = time.perf_counter()
    pipe = open_pipeline(Path(index), build, int(k), {"dense": encoder})
    open_s = time.perf_counter() - start
    rss_open = current_rss_mib()
    out: dict[str, Any] = {"open_s": open_s, "rss_start_mib": rss_start, "rss_encoder_mib": rss_before,
                           "rss_open_mib": rss_open, "queries": len(queries), "passages": pipe.index.num_rows}
    for stage in ("bm25", "dense", "hybrid"):
        for q in queries[:20]:
            pipe.retrieve([q], stage=stage, top_k=int(k))
        times = []
        for q in queries:
            t = time.perf_counter()
            pipe.retrieve([q], stage=stage, top_k=int(k))
            times.append(time.perf_counter() - t)
        out[stage] = {"p50_ms": pct(times, 50) * 1e3, "p95_ms": pct(times, 95) * 1e3}
    out["rss_after_queries_mib"] = current_rss_mib()
    from index.directory import IndexDirectory

    start = time.perf_counter()  # a second open without the sha256 checks (`index.verify: false`)
    IndexDirectory.load(Path(index), verify=False)
    out["open_unverified_s"] = time.perf_counter() - start
    print(json.dumps(out))


def _child(argv: list[str]) -> None:
    """The child processes' side: `build CORPUS INDEX BM25_JSON` or `search INDEX BM25_JSON QUERIES K`; one JSON
    line on stdout."""
    from index.builder import build_index
    from index.config import BuildConfig

    what, *args = argv
    if what.endswith("-hybrid"):
        _child_hybrid(what, args)
        return
    build = BuildConfig.model_validate({"bm25": json.loads(args[2 if what == "build" else 1]),
                                        "dense": {"enabled": False}})
    if what == "build":
        corpus, index, _ = args
        rss_start = current_rss_mib()
        report = build_index(corpus, index, build, show_progress=False)
        print(json.dumps({"seconds": report.seconds, "phases": report.phases, "bytes": report.bytes_on_disk,
                          "passages": report.passages, "rss_start_mib": rss_start}))
        return
    from retrieval.benchmark.updates import open_pipeline

    index, _, queries_file, k = args
    queries = json.loads(Path(queries_file).read_text(encoding="utf-8"))
    rss_before = current_rss_mib()
    start = time.perf_counter()
    pipe = open_pipeline(Path(index), build, int(k), {})
    open_s = time.perf_counter() - start
    rss_open = current_rss_mib()
    for q in queries[:20]:
        pipe.retrieve([q], stage="bm25", top_k=int(k))
    times = []
    for q in queries:
        t = time.perf_counter()
        pipe.retrieve([q], stage="bm25", top_k=int(k))
        times.append(time.perf_counter() - t)
    print(json.dumps({"open_s": open_s, "rss_before_mib": rss_before, "rss_open_mib": rss_open,
                      "rss_after_queries_mib": current_rss_mib(), "p50_ms": pct(times, 50) * 1e3,
                      "p95_ms": pct(times, 95) * 1e3, "queries": len(times), "passages": pipe.index.num_rows}))


def _run_child(args: list[str]) -> tuple[dict[str, Any], float]:
    """(the child's JSON line, its peak RSS in MiB)."""
    code = "import sys; from retrieval.benchmark.scale import _child; _child(sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out = proc.stdout.read() if proc.stdout is not None else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"scale: the child process {args[0]} failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def measure_bm25(config: Any, settings: Settings, work: Path) -> dict[str, Any]:
    n = settings.scale_passages
    bm25 = json.dumps(bm25_settings(config).model_dump(mode="json"))
    start = time.perf_counter()
    corpus = write_synthetic_corpus(n, work / "scale.jsonl", settings.quiet)
    generate_s = time.perf_counter() - start
    index = work / "scale-bm25"
    built, build_peak = _run_child(["build", str(corpus), str(index), bm25])
    corpus.unlink()
    queries = work / "queries.json"
    queries.write_text(json.dumps(synthetic_queries(settings.scale_queries)), encoding="utf-8")
    searched, search_peak = _run_child(["search", str(index), bm25, str(queries), str(settings.k)])
    return {"passages": n, "generate_s": generate_s, "build_s": built["seconds"], "build_phases": built["phases"],
            "build_peak_rss_mib": build_peak, "build_rss_start_mib": built["rss_start_mib"],
            "index_bytes": built["bytes"], **searched,
            "search_peak_rss_mib": search_peak}


def query_dim(model: str) -> int:
    """The dimension of `model`'s embeddings, read from the model (loaded here, in the parent, so neither child's
    memory counts it twice)."""
    from index.config import DenseConfig
    from index.dense import Encoder

    return Encoder(model, DenseConfig(model=model)).dim


def measure_hybrid(config: Any, settings: Settings, work: Path) -> dict[str, Any]:
    """A BM25 + dense index of `scale_passages` synthetic passages (passage vectors from `SyntheticEncoder`, FAISS
    type `scale_hybrid`), built in one child and searched in another with the config's real query encoder."""
    n = settings.scale_passages
    bm25 = json.dumps(bm25_settings(config).model_dump(mode="json"))
    corpus = write_synthetic_corpus(n, work / "hybrid.jsonl", settings.quiet)
    index = work / "scale-hybrid"
    model = config.first_stage.dense.model if config.first_stage.dense is not None else "bundled:all-MiniLM-L6-v2"
    faiss = [settings.scale_hybrid, str(settings.scale_ef_construction), str(query_dim(model))]
    built, build_peak = _run_child(["build-hybrid", str(corpus), str(index), bm25, *faiss])
    corpus.unlink()
    queries = work / "hybrid-queries.json"
    queries.write_text(json.dumps(synthetic_queries(settings.scale_queries)), encoding="utf-8")
    searched, search_peak = _run_child(["search-hybrid", str(index), bm25, *faiss, str(queries), str(settings.k),
                                        model])
    return {"faiss": settings.scale_hybrid, "build_s": built["seconds"], "build_phases": built["phases"],
            "build_peak_rss_mib": build_peak, "index_bytes": built["bytes"], "query_model": model, **searched,
            "search_peak_rss_mib": search_peak}


def measure_faiss(config: Any, settings: Settings) -> dict[str, Any]:
    import faiss

    from index.dense import search_faiss

    n, k = settings.scale_passages, RECALL_K
    vectors = synthetic_vectors(n)
    queries = synthetic_vectors(settings.scale_queries, seed=SEED + 1)
    out: dict[str, Any] = {}
    exact = exact_top(vectors, queries, k)
    for faiss_type in progress(settings.scale_faiss, "scale: FAISS types", settings.quiet):
        cfg = faiss_settings(config, settings, faiss_type)
        start = time.perf_counter()
        index = built_faiss(vectors, cfg)
        build_s = time.perf_counter() - start
        size = int(faiss.serialize_index(index).nbytes)
        for q in queries[:10]:
            search_faiss(index, q[None], k, cfg)
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            ids, _ = search_faiss(index, q[None], k, cfg)
            times.append(time.perf_counter() - t)
            found.append(ids[0])
        out[faiss_type] = {"build_s": build_s, "index_mib": size / 2**20, "p50_ms": pct(times, 50) * 1e3,
                           "p95_ms": pct(times, 95) * 1e3, "recall_at_10": recall(found, exact),
                           "settings": {key: getattr(cfg, key) for key in ("hnsw_m", "ef_construction", "ef_search",
                                                                           "nlist", "nprobe")}}
        del index
    return out


def calibrate(config: Any, settings: Settings) -> dict[str, Any] | None:
    """Recall@10 of each approximate type on the real embeddings of the index given to the benchmark (its
    passages less `scale_queries` held out as queries) beside synthetic vectors of the same count: how much
    harder than real embeddings the synthetic ones are for each index type. None without a dense index."""
    from index.dense import search_faiss

    path = Path(config.index.path) / "embeddings.npy"
    if not path.is_file():
        return None
    real = np.load(path, mmap_mode="r")
    held = np.random.default_rng(SEED).choice(len(real), size=min(settings.scale_queries, len(real) // 10),
                                              replace=False)
    base = np.delete(np.asarray(real), held, axis=0)
    sets = {"real": (base, np.asarray(real[held])),
            "synthetic": (synthetic_vectors(len(base)), synthetic_vectors(len(held), seed=SEED + 1))}
    out: dict[str, Any] = {"passages": len(base), "queries": len(held), "types": {}}
    for faiss_type in [t for t in settings.scale_faiss if t != "flat"]:
        cfg = faiss_settings(config, settings, faiss_type)
        out["types"][faiss_type] = {
            name: recall(search_faiss(built_faiss(v, cfg), q, RECALL_K, cfg)[0], exact_top(v, q, RECALL_K))
            for name, (v, q) in sets.items()}
    return out


def section_scale(config: Any, settings: Settings) -> Section:
    """The BM25 and FAISS tables at `scale_passages` (see the module)."""
    report: dict[str, Any] = {"load_average_at_start": load_average(), "passages": settings.scale_passages}
    tables = []
    with tempfile.TemporaryDirectory(prefix="twostage-bench-scale-") as tmp:
        bm25 = measure_bm25(config, settings, Path(tmp))
    report["bm25"] = bm25
    tables.append(Table(f"Scale: BM25 over {bm25['passages']:,} synthetic passages", [{
        "build s": bm25["build_s"], "build RSS at start MiB": bm25["build_rss_start_mib"],
        "build peak RSS MiB": bm25["build_peak_rss_mib"],
        "index MiB": bm25["index_bytes"] / 2**20, "open s": bm25["open_s"],
        "RSS after open MiB": bm25["rss_open_mib"], "query p50 ms": bm25["p50_ms"], "query p95 ms": bm25["p95_ms"],
        "RSS after queries MiB": bm25["rss_after_queries_mib"]}],
        f"built in a child process (peak RSS from wait4), opened and queried in another ({bm25['queries']} queries "
        f"of 2-5 words, one per call, top-{settings.k}); generating the corpus took {bm25['generate_s']:.1f} s"))
    if settings.scale_faiss:
        dense = measure_faiss(config, settings)
        report["faiss"] = dense
        rows = [{"type": t, "build s": m["build_s"], "index MiB": m["index_mib"], "query p50 ms": m["p50_ms"],
                 "query p95 ms": m["p95_ms"], "recall@10 vs flat": m["recall_at_10"]} for t, m in dense.items()]
        title = (f"Scale: FAISS over {settings.scale_passages:,} x {DIM} synthetic unit vectors (intrinsic "
                 f"dimension {LATENT_DIM})")
        tables.append(Table(title, rows,
                            f"one query per search; hnsw built with ef_construction {settings.scale_ef_construction}; "
                            "search settings from the config's dense.faiss"))
        found = calibrate(config, settings)
        if found is not None:
            report["faiss_calibration"] = found
            rows = [{"type": t, "real embeddings": r["real"], "synthetic vectors": r["synthetic"]}
                    for t, r in found["types"].items()]
            tables.append(Table(f"Scale: recall@10 at {found['passages']:,} vectors, the index's real embeddings "
                                "against synthetic ones", rows,
                                f"{found['queries']} of the index's passages held out as queries; the synthetic "
                                "vectors are those of the table above, at this count"))
    if settings.scale_hybrid:
        with tempfile.TemporaryDirectory(prefix="twostage-bench-scale-hybrid-") as tmp:
            hybrid = measure_hybrid(config, settings, Path(tmp))
        report["hybrid"] = hybrid
        tables.append(Table(f"Scale: BM25 + dense ({hybrid['faiss']}) over {settings.scale_passages:,} synthetic "
                            "passages, one index", [{
                                "build s": hybrid["build_s"], "build peak RSS MiB": hybrid["build_peak_rss_mib"],
                                "index MiB": hybrid["index_bytes"] / 2**20, "open s": hybrid["open_s"],
                                "open s, no sha256": hybrid["open_unverified_s"],
                                "RSS with query encoder MiB": hybrid["rss_encoder_mib"],
                                "RSS after open MiB": hybrid["rss_open_mib"],
                                "bm25 p50 ms": hybrid["bm25"]["p50_ms"], "dense p50 ms": hybrid["dense"]["p50_ms"],
                                "hybrid p50 ms": hybrid["hybrid"]["p50_ms"],
                                "hybrid p95 ms": hybrid["hybrid"]["p95_ms"],
                                "RSS after queries MiB": hybrid["rss_after_queries_mib"]}],
                            f"passage vectors from the synthetic generator (no encoder can embed a million passages "
                            f"here), queries encoded by {hybrid['query_model']}; {hybrid['queries']} queries, one per "
                            "call, each stage timed on its own; the FAISS file memory-mapped at open"))
    report["load_average_at_end"] = load_average()
    return Section(report, tables)
