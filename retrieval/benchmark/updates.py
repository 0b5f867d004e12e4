"""Updating an index in place (`index.writer.IndexWriter`): what adding, deleting and merging cost, and what
unmerged segments cost queries.

Two parts. SciFact with the config's bi-encoder (bundled all-MiniLM-L6-v2 when the config has no dense stage) and
BM25: an index of the corpus less `updates_held_out` documents, then the held-out documents added (seconds per
phase of the commit, against encoding those same documents alone with the same encoder: the claim checked is
"adding 100 costs encoding 100 plus under 1 s"), deleted, and the segments merged. A synthetic corpus
(`synthetic_docs` documents, Zipfian vocabulary, generated in memory with a fixed seed) with BM25 and random unit
vectors from a stand-in encoder (`HashEncoder`, no model): 90% built, the rest added as `synthetic_segments`
commits, then query p50 (BM25 alone, dense alone, one query per call) on the unmerged index against a merged copy
of it, the two timed query by query in turn so that a shared CPU's load falls on both alike.

The synthetic corpus, its queries and the stand-in encoder serve the `filters` section too.

Example:
    >>> from retrieval.benchmark.updates import section_updates
    >>> section_updates(config, Settings(dataset, sections=("updates",))).report["scifact"]["add_s"]  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.benchmark.measure import load_average, median, pct, progress
from retrieval.benchmark.report import Section, Settings, Table

SEED = 13
VOCABULARY = 50_000  # distinct synthetic words
ZIPF_EXPONENT = 1.0
QUERY_MIN_RANK = 50  # query words skip the 50 most frequent ranks (a query's stopwords, in effect)
DIM = 384  # all-MiniLM-L6-v2's
BUCKETS = 10_000  # `bucket` metadata: 0 .. BUCKETS-1, each value on n / BUCKETS documents
RATIO_TARGET = 1.3  # segmented query p50 within this factor of merged
ADD_CLAIM_S = 1.0  # adding n documents costs encoding them plus under this many seconds

# Consonant-vowel syllables without e, s or y: the English stemmer leaves the words whole, and no word is an English
# stopword.
_SYLLABLES = [c + v for c in "bdfgklmnprtvz" for v in "aiou"]


# -- the synthetic corpus ----------------------------------------------------------------------------------------


def synthetic_word(rank: int) -> str:
    """The word of frequency rank `rank`: three syllables (52**3 > VOCABULARY), so every word is distinct."""
    base = len(_SYLLABLES)
    return "".join(_SYLLABLES[(rank // base**i) % base] for i in range(3))


@functools.lru_cache(maxsize=1)
def _words() -> np.ndarray:
    return np.array([synthetic_word(r) for r in range(VOCABULARY)], dtype=object)


def _zipf(ranks: int) -> np.ndarray:
    p = 1.0 / np.arange(1, ranks + 1, dtype=np.float64) ** ZIPF_EXPONENT
    return p / p.sum()


@functools.lru_cache(maxsize=1)
def synthetic_corpus(n: int) -> tuple[dict[str, Any], ...]:
    """`n` documents (`_id`, `text`, `bucket`), the same for the same `n`: words drawn from a Zipf distribution
    over VOCABULARY ranks, lengths log-normal around 120 words clipped to [50, 250], and `bucket` in
    0..BUCKETS-1, each value on as many documents, shuffled (so `bucket < b` selects b / BUCKETS of them, spread
    over the corpus; at least one document for b >= 1)."""
    rng = np.random.default_rng(SEED)
    texts = synthetic_texts(rng, n)
    buckets = rng.permutation(n) * BUCKETS // n
    return tuple({"_id": f"syn{i:06d}", "text": text, "bucket": int(buckets[i])} for i, text in enumerate(texts))


def synthetic_texts(rng: np.random.Generator, n: int) -> list[str]:
    """`n` texts drawn from `rng`: lengths log-normal around 120 words clipped to [50, 250], words from the Zipf
    distribution over VOCABULARY ranks."""
    lengths = np.clip(np.rint(rng.lognormal(np.log(120), 0.45, n)), 50, 250).astype(np.int64)
    cdf = np.cumsum(_zipf(VOCABULARY))
    tokens = np.minimum(np.searchsorted(cdf, rng.random(int(lengths.sum())), side="right"), VOCABULARY - 1)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    words = _words()
    return [" ".join(words[tokens[bounds[i] : bounds[i + 1]]]) for i in range(n)]


def synthetic_queries(n: int) -> list[str]:
    """`n` queries of 2 to 5 words, drawn from the corpus's Zipf distribution less its QUERY_MIN_RANK most frequent
    words (a fixed seed: the same queries every run)."""
    rng = np.random.default_rng(SEED + 1)
    p = _zipf(VOCABULARY)[QUERY_MIN_RANK:]
    words = _words()
    return [" ".join(words[QUERY_MIN_RANK + rng.choice(len(p), size=int(rng.integers(2, 6)), p=p / p.sum())])
            for _ in range(n)]


def write_jsonl(docs: Iterable[Any], path: Path) -> Path:
    """Documents (dicts, or `index.documents.Document`s with their metadata flattened) as a JSONL corpus."""
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            if not isinstance(d, dict):
                d = {"_id": d.doc_id, "title": d.title, "text": d.text, **d.metadata}
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    return path


class HashEncoder:
    """A stand-in bi-encoder: each text's vector is a random unit vector seeded by the text's hash alone, so a
    rebuild, an update and a query agree without a model (what `build_index`, `IndexWriter` and
    `SearchPipeline` take as `models={"dense": encoder}`)."""

    def __init__(self, dim: int = DIM, name: str = f"synthetic:hash-{DIM}") -> None:
        from index.config import DenseConfig

        self.dim = dim
        self.name = name
        self.config = DenseConfig(model=name)

    def _vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
        return np.random.default_rng(seed).standard_normal(self.dim, dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.empty((0, self.dim), dtype=np.float32)
        out = np.stack([self._vector(t) for t in texts])
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def encode_documents(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray:
        return self.encode(texts)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.encode(queries)


# -- helpers shared with the filters section ---------------------------------------------------------------------


def synthetic_build_config(bm25: Any | None, faiss_type: str, encoder: HashEncoder) -> Any:
    """BM25 (None: off) and the stand-in's dense part with a `faiss_type` index, no chunking."""
    from index.config import BuildConfig

    return BuildConfig.model_validate({
        "bm25": bm25.model_dump(mode="json") if bm25 is not None else {"enabled": False},
        "dense": {"model": encoder.name, "faiss": {"type": faiss_type}}})


def open_pipeline(path: Path, build: Any, k: int, models: dict[str, Any]) -> Any:
    """A `SearchPipeline` over the index at `path` (built with `build`), each retriever `k` deep."""
    from retrieval.config import load_config
    from retrieval.pipeline import SearchPipeline

    first_stage: dict[str, Any] = {}
    for name in ("bm25", "dense"):
        cfg = getattr(build, name)
        first_stage[name] = {**cfg.model_dump(mode="json"), "top_k": k} if cfg.enabled else {"enabled": False}
    config = load_config({"index": {"path": str(path)}, "first_stage": first_stage, "output": {"top_k": k}})
    return SearchPipeline(config, models=models)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def timed_retrieve(pipe: Any, query: str, stage: str, k: int,
                   flt: dict[str, Any] | None = None) -> tuple[float, list[tuple[str, float]]]:
    """Seconds of one `retrieve` call for one query, and its ranked `(doc_id, score)` list."""
    start = time.perf_counter()
    hits = pipe.retrieve([query], stage=stage, top_k=k, filter=flt)
    return time.perf_counter() - start, hits[0]


def bm25_settings(config: Any) -> Any:
    """The config's BM25 settings, or the defaults when its BM25 stage is off."""
    from index.config import BM25Config

    cfg = config.first_stage.bm25
    return cfg if cfg.enabled else BM25Config()


# -- SciFact: add, delete, merge ---------------------------------------------------------------------------------


def _phase_rows(label: str, runs: list[Any]) -> list[dict[str, Any]]:
    """One row for the median run's total, then one per phase (median over runs; `other`: the rest of the commit,
    mostly reloading the committed index)."""
    totals = [r.seconds for r in runs]
    rows = [{"step": label, "seconds": median(totals), "min s": min(totals), "max s": max(totals),
             "runs": len(runs)}]
    names = list(dict.fromkeys(k for r in runs for k in r.phases))
    for name in names:
        values = [r.phases.get(name, 0.0) for r in runs]
        rows.append({"step": f"  of which {name}", "seconds": median(values), "min s": min(values),
                     "max s": max(values), "runs": len(runs)})
    other = [r.seconds - sum(r.phases.values()) for r in runs]
    rows.append({"step": "  of which other (reload, clean-up)", "seconds": median(other), "min s": min(other),
                 "max s": max(other), "runs": len(runs)})
    return rows


def _dense_settings(config: Any) -> Any:
    from index.config import DenseConfig

    cfg = config.first_stage.dense
    return cfg if cfg.enabled else DenseConfig()


def scifact_updates(config: Any, settings: Settings, work: Path) -> tuple[dict[str, Any], list[Table]]:
    """Build SciFact less the held-out documents, then time adds, deletes and the merge (see the module)."""
    from index.builder import build_index
    from index.config import BuildConfig
    from index.dense import Encoder
    from index.documents import model_text, read_corpus
    from index.writer import IndexWriter

    docs = list(read_corpus(settings.dataset))
    if settings.updates_docs:
        docs = docs[: settings.updates_docs]
    held = settings.updates_held_out
    if held * 2 >= len(docs):
        raise ValueError(f"updates: {held} held-out documents need a corpus of more than {2 * held}; {len(docs)} "
                         "were read: lower --updates-held-out or raise --updates-docs (0: the whole corpus)")
    rng = np.random.default_rng(SEED)
    held_rows = set(rng.choice(len(docs), size=held, replace=False).tolist())
    held_docs = [d for i, d in enumerate(docs) if i in held_rows]
    base_docs = [d for i, d in enumerate(docs) if i not in held_rows]
    held_ids = [d.doc_id for d in held_docs]
    # What the base loses in the last round: as many of its own documents, also drawn with the seed.
    base_victims = [base_docs[i].doc_id for i in rng.choice(len(base_docs), size=held, replace=False)]

    dense = _dense_settings(config)
    build = BuildConfig(bm25=bm25_settings(config), dense=dense)
    encoder = Encoder(dense.model, dense)
    models = {"dense": encoder}
    texts = [model_text(d.title, d.text) for d in held_docs]  # what the dense component encodes for them
    encoder.encode_documents(texts[:8], show_progress=False)  # warm-up: first calls pay for lazy set-up

    corpus = write_jsonl(base_docs, work / "scifact-base.jsonl")
    path = work / "scifact"
    build_s, built = timed(lambda: build_index(corpus, path, build, models=models, show_progress=not settings.quiet))
    encode_runs: list[float] = []
    adds, deletes, base_delete = [], [], None
    with IndexWriter(path, models=models) as writer:
        for round_ in progress(range(settings.updates_rounds + 1), "updates: rounds", settings.quiet):
            # Encoding alone right before each add: the two see the same load on a shared CPU.
            encode_runs.append(timed(lambda: encoder.encode_documents(texts, show_progress=False))[0])
            writer.add(held_docs)
            adds.append(writer.commit())
            if round_ < settings.updates_rounds:
                writer.delete(held_ids, strict=True)
                deletes.append(writer.commit())
        writer.delete(base_victims, strict=True)
        base_delete = writer.commit()
        segments = len(writer.index.segments)
        merged = writer.merge()
    expected = len(docs) - held
    if merged.documents != expected:
        raise RuntimeError(f"updates: the merged SciFact index holds {merged.documents} documents, {expected} "
                           "expected; the writer lost or kept documents it should not have")
    add_s, encode_s = median([r.seconds for r in adds]), median(encode_runs)
    holds = add_s - encode_s < ADD_CLAIM_S
    out = {
        "documents": len(docs), "base_documents": len(base_docs), "held_out": held, "model": dense.model,
        "faiss": dense.faiss.type, "encoder_backend": f"{encoder.backend} {encoder.precision}",
        "build_s": build_s, "build_phases": built.phases, "rounds": settings.updates_rounds,
        "encode_alone_runs_s": encode_runs, "encode_s": encode_s,
        "add_runs": [r.to_dict() for r in adds], "add_s": add_s, "add_minus_encode_s": add_s - encode_s,
        "claim": f"adding {held} costs encoding {held} plus under {ADD_CLAIM_S:g} s", "claim_holds": holds,
        "delete_runs": [r.to_dict() for r in deletes], "delete_s": median([r.seconds for r in deletes]),
        "delete_from_base": base_delete.to_dict(), "merge": {**merged.to_dict(), "segments_before": segments},
    }
    rows = [{"step": f"build the base: {len(base_docs):,} documents (build_index)", "seconds": build_s, "runs": 1},
            {"step": f"encode the {held} alone (Encoder.encode_documents)", "seconds": encode_s,
             "min s": min(encode_runs), "max s": max(encode_runs), "runs": len(encode_runs)}]
    rows += _phase_rows(f"add the {held} + commit (IndexWriter)", adds)
    rows.append({"step": "add + commit minus encoding alone", "seconds": add_s - encode_s, "runs": len(adds)})
    if deletes:
        rows += [{"step": f"delete the {held} just added + commit", "seconds": out["delete_s"],
                  "min s": min(r.seconds for r in deletes), "max s": max(r.seconds for r in deletes),
                  "runs": len(deletes)}]
    rows.append({"step": f"delete {held} of the base + commit", "seconds": base_delete.seconds, "runs": 1})
    rows += _phase_rows(f"merge: {segments} segments -> 1 ({merged.documents:,} documents)", [merged])
    note = (f"{dense.model} ({encoder.backend} {encoder.precision}, batch {dense.batch_size}), FAISS "
            f"{dense.faiss.type}, BM25 {build.bm25.variant}; {settings.updates_rounds + 1} rounds of: encode the "
            f"{held} held-out documents alone, add them (one commit){', delete them (one commit)' if deletes else ''}"
            f"; then {held} base documents deleted and every segment merged. Claim \"{out['claim']}\": "
            f"{'holds' if holds else 'does NOT hold'} ({add_s - encode_s:+.2f} s)")
    title = f"Updates: SciFact, {len(base_docs):,} documents built, {held} added, deleted, merged"
    return out, [Table(title, rows, note)]


# -- synthetic: segmented against merged query latency ----------------------------------------------------------


def compare_queries(pipes: dict[str, Any], stages: Sequence[str], queries: Sequence[str], k: int,
                    quiet: bool) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[list[str]]]]]:
    """Per stage: each pipeline's per-call latency p50/p95 (ms), one query per `retrieve` call, the pipelines
    timed in turn per query (which goes first alternates, so neither gains from the other warming a cache), and on
    how many queries they return the same top-k ids. Also the ids found: stage -> pipeline -> one list per query."""
    warm = list(queries[: min(10, len(queries))])
    for pipe in pipes.values():
        for stage in stages:
            for q in warm:
                pipe.retrieve([q], stage=stage, top_k=k)
    out: dict[str, dict[str, Any]] = {}
    found: dict[str, dict[str, list[list[str]]]] = {}
    names = list(pipes)
    for stage in stages:
        times: dict[str, list[float]] = {name: [] for name in names}
        ids: dict[str, list[list[str]]] = {name: [] for name in names}
        for i, q in enumerate(progress(queries, f"queries ({stage})", quiet)):
            for name in names if i % 2 == 0 else names[::-1]:
                secs, hits = timed_retrieve(pipes[name], q, stage, k)
                times[name].append(secs)
                ids[name].append([d for d, _ in hits])
        out[stage] = {f"{name}_p50_ms": pct(v, 50) * 1e3 for name, v in times.items()}
        out[stage].update({f"{name}_p95_ms": pct(v, 95) * 1e3 for name, v in times.items()})
        out[stage]["identical_top_k"] = sum(all(ids[n][i] == ids[names[0]][i] for n in names)
                                            for i in range(len(queries)))
        out[stage]["queries"] = len(queries)
        found[stage] = ids
    return out, found


def exact_dense_ids(pipe: Any, queries: Sequence[str], k: int) -> list[set[str]]:
    """The true top-k document ids of each query by inner product over every live vector of `pipe`'s index."""
    dense = pipe.dense
    vectors = np.asarray(dense.embeddings, dtype=np.float32)
    row_doc = pipe.index.store.row_doc_ids
    out = []
    for q in dense.encoder.encode_queries(list(queries)):
        scores = vectors @ q
        top = np.argpartition(-scores, min(k, len(scores)) - 1)[:k]
        out.append({row_doc[int(r)] for r in top})
    return out


def recall(found: list[list[str]], truth: list[set[str]], k: int) -> float:
    return float(np.mean([len(set(f) & t) / min(k, len(t)) for f, t in zip(found, truth)])) if truth else 1.0


def postings_per_query(pipe: Any, queries: Sequence[str]) -> float:
    """Median over queries of the postings BM25 reads (the document frequencies of the terms it scores)."""
    retriever = pipe.bm25
    stats = retriever.scorer.stats
    df = stats.doc_freq
    return median([float(sum(df[stats.term_ids[t]] for t in set(retriever.scorer.scored_tokens(
        retriever.analyzer.tokenize(q))))) for q in queries])


def synthetic_updates(config: Any, settings: Settings, work: Path) -> tuple[dict[str, Any], list[Table]]:
    """Per FAISS type: build 90%, add the rest as `synthetic_segments` commits, copy, merge the copy, then
    query both (BM25 on the first type only: it does not depend on the dense index)."""
    from index.builder import build_index
    from index.writer import IndexWriter

    n = settings.synthetic_docs
    docs = synthetic_corpus(n)
    base_n = int(n * 0.9)
    parts = np.array_split(np.arange(base_n, n), settings.synthetic_segments)
    if base_n == 0 or any(len(p) == 0 for p in parts):
        raise ValueError(f"updates: {n} synthetic documents cannot make a 90% base and {settings.synthetic_segments}"
                         " non-empty delta segments; raise --synthetic-docs or lower --synthetic-segments")
    queries = synthetic_queries(settings.synthetic_queries)
    encoder = HashEncoder()
    models = {"dense": encoder}
    corpus = write_jsonl(docs[:base_n], work / "synthetic-base.jsonl")
    k = settings.k
    out: dict[str, Any] = {"documents": n, "base_documents": base_n, "delta_segments": len(parts),
                           "queries": len(queries), "k": k, "vocabulary": VOCABULARY, "zipf_exponent": ZIPF_EXPONENT,
                           "dim": DIM, "types": {}}
    rows, upkeep = [], []
    for i, faiss_type in enumerate(settings.synthetic_faiss):
        bm25 = bm25_settings(config) if i == 0 else None
        build = synthetic_build_config(bm25, faiss_type, encoder)
        path, copy = work / f"synthetic-{faiss_type}", work / f"synthetic-{faiss_type}-merged"
        build_s, _ = timed(lambda b=build, p=path: build_index(corpus, p, b, models=models,
                                                                 show_progress=not settings.quiet))
        commits = []
        with IndexWriter(path, models=models) as writer:
            for rows_ in progress(parts, f"updates: {faiss_type} delta commits", settings.quiet):
                writer.add(docs[int(rows_[0]) : int(rows_[-1]) + 1])
                commits.append(writer.commit())
            advice = writer.index.maintenance()
        shutil.copytree(path, copy)
        with IndexWriter(copy, models=models) as writer:
            merged = writer.merge()
        pipes = {"segmented": open_pipeline(path, build, k, models), "merged": open_pipeline(copy, build, k, models)}
        segments = len(pipes["segmented"].index.segments)
        stages = [s for s in ("bm25", "dense") if pipes["segmented"].retriever(s) is not None]
        measured, found = compare_queries(pipes, stages, queries, k, settings.quiet)
        for stage, m in measured.items():
            m["ratio"] = m["segmented_p50_ms"] / m["merged_p50_ms"]
            m["within_target"] = m["ratio"] <= RATIO_TARGET
            row = {"stage": stage if stage == "bm25" else f"dense ({faiss_type})", "segments": segments,
                   "segmented p50 ms": m["segmented_p50_ms"], "merged p50 ms": m["merged_p50_ms"],
                   "ratio": m["ratio"], f"<= {RATIO_TARGET}x": "yes" if m["within_target"] else "NO",
                   "same top-k": f"{m['identical_top_k']}/{m['queries']}"}
            if stage == "dense":
                truth = exact_dense_ids(pipes["merged"], queries, k)
                m["recall_at_k_vs_exact"] = {name: recall(ids, truth, k) for name, ids in found[stage].items()}
                row["recall@k seg / merged"] = "{segmented:.3f} / {merged:.3f}".format(**m["recall_at_k_vs_exact"])
            else:
                m["postings_per_query_p50"] = postings_per_query(pipes["merged"], queries)
            rows.append(row)
        commit_s = [c.seconds for c in commits]
        out["types"][faiss_type] = {"bm25": bm25 is not None, "build_s": build_s, "segments": segments,
                                    "delta_commit_runs_s": commit_s, "delta_commit_s": median(commit_s),
                                    "merge": merged.to_dict(), "advice": advice, "stages": measured}
        what = "BM25 + dense" if bm25 is not None else "dense only"
        upkeep += [{"index": f"{faiss_type} ({what})", "step": f"build the base: {base_n:,} documents",
                    "seconds": build_s},
                   {"index": f"{faiss_type} ({what})",
                    "step": f"commit {len(parts[0]):,} added documents (median of {len(commits)})",
                    "seconds": median(commit_s)},
                   {"index": f"{faiss_type} ({what})", "step": f"merge {segments} segments -> 1",
                    "seconds": merged.seconds}]
        del pipes  # their memory-mapped files, before the directories go
        shutil.rmtree(copy, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
    bm25_reads = next((t["stages"]["bm25"]["postings_per_query_p50"] for t in out["types"].values()
                       if "bm25" in t["stages"]), None)
    note = (f"{len(queries)} synthetic queries of 2-5 words, one per retrieve() call, top-{k}; the segmented index "
            "and a merged copy timed in turn per query; "
            + (f"BM25 reads {bm25_reads:,.0f} postings per query (median); " if bm25_reads is not None else "")
            + f"dense: random unit vectors (dim {DIM}) from a hash of the text (recall@k against exact search over "
            "the same vectors: random vectors are a hard case for HNSW). "
            f"Target: segmented p50 within {RATIO_TARGET}x of merged")
    title = (f"Updates: query p50 with {len(parts)} unmerged delta segments vs merged, synthetic {n:,} documents "
             f"({base_n:,} built + {len(parts)} commits)")
    tables = [Table(title, rows, note),
              Table(f"Updates: synthetic {n:,} documents, build, commits and merge (stand-in encoder: no model time)",
                    upkeep)]
    return out, tables


def section_updates(config: Any, settings: Settings) -> Section:
    """SciFact adds/deletes/merge against encoding alone, then segmented vs merged query p50 on the synthetic
    corpus (see the module). Indexes are built in a temporary directory, removed at the end."""
    report: dict[str, Any] = {"load_average_at_start": load_average()}
    tables: list[Table] = []
    with tempfile.TemporaryDirectory(prefix="twostage-bench-updates-") as tmp:
        work = Path(tmp)
        report["scifact"], found = scifact_updates(config, settings, work)
        tables += found
        report["synthetic"], found = synthetic_updates(config, settings, work)
        tables += found
    report["load_average_at_end"] = load_average()
    notes = [f"\n(load average {report['load_average_at_start']} at the start of the updates section, "
             f"{report['load_average_at_end']} at its end)"]
    return Section(report, tables, notes)
