"""Evaluation on BEIR-format benchmarks: load a split, run every query through each stage, score with pytrec_eval.

Metrics are pytrec_eval's (trec_eval's code), never computed by hand: `ndcg@k` (graded gains), `mrr@k`
(reciprocal rank of a run cut at k), `recall@k`, `map@k`, `p@k`. Per-query scores are kept, so two stages can be
compared with a paired significance test.

Example:
    >>> from retrieval import SearchPipeline
    >>> from retrieval.evaluation import evaluate, load_beir
    >>> data = load_beir("../shared/datasets/scifact", split="test")  # doctest: +SKIP
    >>> pipe = SearchPipeline.from_yaml("configs/hybrid.yaml", index_path="/tmp/idx/scifact")  # doctest: +SKIP
    >>> result = evaluate(pipe, data)  # doctest: +SKIP
    >>> result.table()  # doctest: +SKIP
    >>> result.compare("bm25", "hybrid", metric="ndcg@10")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import logging
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pytrec_eval
from pydantic import ValidationError
from tqdm.auto import tqdm

from index.config import BuildConfig
from index.documents import read_corpus
from index.manifest import IndexDirError, read_manifest

if TYPE_CHECKING:
    from retrieval.config import PipelineConfig
    from retrieval.pipeline import SearchPipeline

logger = logging.getLogger(__name__)

Run = dict[str, list[tuple[str, float]]]  # query id -> ranked (doc_id, score), best first
Qrels = dict[str, dict[str, int]]  # query id -> doc id -> graded relevance (0 = judged not relevant)

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000", "map@100", "p@10")
# Our metric name -> pytrec_eval measure family ("mrr" is recip_rank over the run cut at k).
_FAMILIES = {"ndcg": "ndcg_cut", "recall": "recall", "map": "map_cut", "p": "P", "mrr": "recip_rank"}
_METRIC = re.compile(r"^(ndcg|recall|map|p|mrr)@([1-9][0-9]*)$")


class EvaluationError(ValueError):
    """The dataset or the request cannot be evaluated; the message says what is wrong and how to fix it."""


# -- loading --------------------------------------------------------------------------------------------------


@dataclass
class BeirDataset:
    """One split of a BEIR folder: the judged queries (file order), graded qrels, and what loading found wrong."""

    path: Path
    split: str
    queries: dict[str, str]
    qrels: Qrels
    doc_ids: frozenset[str] | None = None
    issues: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.resolve().name


def load_beir(path: str | Path, split: str = "test", *, max_queries: int | None = None,
              check_corpus: bool = True) -> BeirDataset:
    """Load `queries.jsonl` and `qrels/<split>.tsv` (and, with `check_corpus`, the ids of `corpus.jsonl`).

    As BEIR does, queries without judgments in the split are skipped (counted in `issues["unjudged_queries"]`).
    Qrels rows naming an unknown query are dropped and rows naming a document missing from the corpus are kept
    (nobody can retrieve it); both are counted and logged. `max_queries` keeps the first N judged queries.
    """
    root = Path(path).expanduser()
    _check_beir_folder(root, split)
    if max_queries is not None and (isinstance(max_queries, bool) or max_queries < 1):
        raise EvaluationError(f"max_queries must be a positive integer, got {max_queries!r}")
    qrels_file = root / "qrels" / f"{split}.tsv"
    rows, duplicates = _read_qrels(qrels_file)
    if not rows:
        raise EvaluationError(f"{qrels_file}: the {split!r} split has no judgments (the file holds no rows)")
    all_queries = _read_queries(root / "queries.jsonl")
    issues = {"qrels_rows": len(rows), "duplicate_rows": duplicates, "unknown_query_rows": 0,
              "unknown_document_rows": 0, "unjudged_queries": 0}
    unknown_q = sorted({q for q, _, _ in rows if q not in all_queries})
    if unknown_q:
        issues["unknown_query_rows"] = sum(1 for q, _, _ in rows if q not in all_queries)
        logger.warning("%s: %d rows name %d queries that are not in queries.jsonl (e.g. %s); they are ignored",
                       qrels_file, issues["unknown_query_rows"], len(unknown_q), ", ".join(map(repr, unknown_q[:3])))
    doc_ids: frozenset[str] | None = None
    if check_corpus:
        doc_ids = frozenset(doc.doc_id for doc in read_corpus(root))
        missing = sorted({d for _, d, _ in rows if d not in doc_ids})
        if missing:
            issues["unknown_document_rows"] = sum(1 for _, d, _ in rows if d not in doc_ids)
            logger.warning("%s: %d rows name %d documents that are not in the corpus or have no text (e.g. %s); "
                           "they stay in the qrels (as in BEIR): a relevant one is a document nobody can find",
                           qrels_file, issues["unknown_document_rows"], len(missing),
                           ", ".join(map(repr, missing[:3])))
    qrels: Qrels = {}
    for q, d, score in rows:
        if q in all_queries:
            qrels.setdefault(q, {})[d] = score
    queries = {q: text for q, text in all_queries.items() if q in qrels}
    issues["unjudged_queries"] = len(all_queries) - len(queries)
    if issues["unjudged_queries"]:
        logger.info("%s: %d of %d queries have no judgments in %r; skipped (as BEIR does)",
                    root, issues["unjudged_queries"], len(all_queries), split)
    if not queries:
        raise EvaluationError(f"{qrels_file}: none of its {len(rows)} rows names a query in queries.jsonl; "
                              "check that the query ids match")
    if max_queries is not None and max_queries < len(queries):
        queries = dict(list(queries.items())[:max_queries])
        qrels = {q: qrels[q] for q in queries}
    return BeirDataset(root, split, queries, qrels, doc_ids, issues)


def _check_beir_folder(root: Path, split: str) -> None:
    layout = "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
    if not root.exists():
        raise EvaluationError(f"{root}: no such folder; pass a BEIR dataset folder ({layout})")
    if not root.is_dir():
        raise EvaluationError(f"{root} is a file, not a BEIR dataset folder ({layout})")
    missing = [n for n in ("corpus.jsonl", "queries.jsonl", "qrels") if not (root / n).exists()]
    if missing:
        raise EvaluationError(f"{root} is not a BEIR dataset folder: no {' and no '.join(missing)} ({layout})")
    if not (root / "qrels" / f"{split}.tsv").is_file():
        splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise EvaluationError(f"{root}: no qrels/{split}.tsv for split {split!r}; splits available: "
                              f"{', '.join(splits) or 'none'}")


def _read_qrels(path: Path) -> tuple[list[tuple[str, str, int]], int]:
    """Rows `query-id, corpus-id, score` (a header line is optional); the last of duplicate rows wins."""
    out: dict[tuple[str, str], int] = {}
    duplicates = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 3:
                    raise EvaluationError(f"{path}:{lineno}: expected 3 tab-separated columns "
                                          f"(query-id, corpus-id, score), got {len(row)}: {row!r}")
                q, d, raw = (c.strip() for c in row[:3])
                try:
                    score = int(float(raw))
                except ValueError:
                    if lineno == 1:
                        continue  # the header
                    raise EvaluationError(f"{path}:{lineno}: relevance score {raw!r} is not a number") from None
                if (q, d) in out:
                    duplicates += 1
                out[(q, d)] = score
    except UnicodeDecodeError:
        raise EvaluationError(f"{path}: not valid UTF-8; re-encode the file as UTF-8") from None
    if duplicates:
        logger.warning("%s: %d duplicate (query, document) rows; the last one of each wins", path, duplicates)
    return [(q, d, s) for (q, d), s in out.items()], duplicates


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvaluationError(f"{path}:{lineno}: invalid JSON ({exc.msg}); each line must be one JSON "
                                          'object like {"_id": "q1", "text": "..."}') from None
                if not isinstance(record, dict) or record.get("_id", record.get("id")) is None \
                        or not isinstance(record.get("text"), str):
                    raise EvaluationError(f"{path}:{lineno}: a query needs an \"_id\" and a string \"text\"")
                queries[str(record.get("_id", record.get("id"))).strip()] = record["text"]
    except UnicodeDecodeError:
        raise EvaluationError(f"{path}: not valid UTF-8; re-encode the file as UTF-8") from None
    return queries


# -- metrics (pytrec_eval) ------------------------------------------------------------------------------------


def _parse_metric(name: str) -> tuple[str, int]:
    match = _METRIC.match(name.lower())
    if not match:
        raise EvaluationError(f"unknown metric {name!r}; use ndcg@k, mrr@k, recall@k, map@k or p@k")
    return match.group(1), int(match.group(2))


def trec_scores(ranked: Sequence[tuple[str, float]]) -> dict[str, float]:
    """A ranked list as trec_eval sees it: scores made strictly decreasing in float32 (pytrec_eval's precision;
    ties nudged down by one float32 step), so trec_eval ranks exactly as the pipeline did instead of breaking
    ties by document id."""
    out: dict[str, float] = {}
    prev = np.float32(np.inf)
    for doc_id, score in ranked:
        if doc_id in out:
            continue
        value = np.float32(score)
        if not value < prev:
            value = np.nextafter(prev, np.float32(-np.inf))
        prev = value
        out[doc_id] = float(value)
    return out


def score_run(run: Run, qrels: Qrels, metrics: Iterable[str] = DEFAULT_METRICS, *,
              ignore_identical_ids: bool = False) -> pd.DataFrame:
    """Per-query metrics by pytrec_eval: one row per judged query (index = query id), one column per metric.

    A judged query missing from `run` (or with an empty ranking) scores 0 everywhere, like `trec_eval -c`.
    `ignore_identical_ids` drops documents whose id equals the query id (BEIR's default, for datasets whose
    queries are also documents).
    """
    metrics = list(dict.fromkeys(metrics))
    parsed = {m: _parse_metric(m) for m in metrics}
    trec_run: dict[str, dict[str, float]] = {}
    for q, ranked in run.items():
        if ignore_identical_ids:
            ranked = [(d, s) for d, s in ranked if d != q]
        scores = trec_scores(ranked)
        if scores:
            trec_run[q] = scores
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if docs}
    table = pd.DataFrame(0.0, index=pd.Index(list(judged), name="query_id"), columns=metrics)
    cutoffs: dict[str, list[int]] = {}
    for family, k in parsed.values():
        if family != "mrr":
            cutoffs.setdefault(_FAMILIES[family], []).append(k)
    if cutoffs:
        measures = {f"{fam}.{','.join(map(str, sorted(set(ks))))}" for fam, ks in cutoffs.items()}
        results = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(trec_run)
        for m, (family, k) in parsed.items():
            if family != "mrr":
                key = f"{_FAMILIES[family]}_{k}"
                for q, values in results.items():
                    table.at[q, m] = values[key]
    for m, (family, k) in parsed.items():
        if family == "mrr":  # MRR@k: trec_eval's recip_rank over the top k only
            cut = {q: dict(sorted(s.items(), key=lambda x: -x[1])[:k]) for q, s in trec_run.items()}
            results = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(cut)
            for q, values in results.items():
                table.at[q, m] = values["recip_rank"]
    return table


@dataclass
class Significance:
    """A paired test of `b` against `a` on one metric over the same queries."""

    a: str
    b: str
    metric: str
    method: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    p_value: float
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def __str__(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (f"{self.b} vs {self.a} on {self.metric}: {self.mean_b:.4f} vs {self.mean_a:.4f} "
                f"({self.diff:+.4f}), p={self.p_value:.3g} ({self.method}, n={self.n}): {verdict} at {self.alpha}")


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                method: Literal["t-test", "randomization"] = "t-test", *, n_resamples: int = 10_000,
                seed: int = 0) -> float:
    """Two-sided p-value for "b and a have the same mean" over paired per-query scores (scipy)."""
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired scores must be two 1-d arrays of equal length, got {x.shape} and {y.shape}")
    if len(x) < 2 or np.allclose(x, y, rtol=0, atol=1e-12):
        return 1.0
    if method == "t-test":
        p = stats.ttest_rel(y, x).pvalue
    elif method == "randomization":
        p = stats.permutation_test((y, x), lambda u, v, axis: np.mean(u - v, axis=axis), vectorized=True,
                                   permutation_type="samples", n_resamples=n_resamples,
                                   random_state=np.random.default_rng(seed)).pvalue
    else:
        raise ValueError(f"unknown test {method!r}; use 't-test' or 'randomization'")
    return 1.0 if math.isnan(p) else float(p)


# -- running a pipeline ---------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """Per-query scores and runs of each evaluated stage; `table()` gives one row per stage."""

    dataset: str
    split: str
    per_query: dict[str, pd.DataFrame]
    runs: dict[str, Run]
    qrels: Qrels
    seconds: dict[str, float] = field(default_factory=dict)
    issues: dict[str, int] = field(default_factory=dict)
    ignore_identical_ids: bool = False

    @property
    def stages(self) -> list[str]:
        return list(self.per_query)

    @property
    def num_queries(self) -> int:
        return len(next(iter(self.per_query.values()))) if self.per_query else 0

    def table(self) -> pd.DataFrame:
        """Mean of each metric, one row per stage (NaN where the stage's ranking is too short for the metric)."""
        rows = {s: df.mean() for s, df in self.per_query.items()}
        out = pd.DataFrame(rows).T
        out.index.name = "stage"
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: dataset, split, num_queries, stages -> metric -> mean, seconds, issues."""
        stages = {s: {m: round(float(v), 6) for m, v in row.items() if not pd.isna(v)}
                  for s, row in self.table().iterrows()}
        return {"dataset": self.dataset, "split": self.split, "num_queries": self.num_queries, "stages": stages,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}, "issues": dict(self.issues)}

    def compare(self, a: str, b: str, metric: str = "ndcg@10",
                method: Literal["t-test", "randomization"] = "t-test", alpha: float = 0.05) -> Significance:
        """Paired test of stage `b` against stage `a` on `metric` over the same queries."""
        for stage in (a, b):
            if stage not in self.per_query:
                raise EvaluationError(f"stage {stage!r} was not evaluated; evaluated: {', '.join(self.stages)}")
            if metric not in self.per_query[stage]:
                raise EvaluationError(f"metric {metric!r} was not computed; computed: "
                                      f"{', '.join(self.per_query[stage].columns)}")
        x, y = self.per_query[a][metric], self.per_query[b][metric]
        if x.isna().any() or y.isna().any():
            raise EvaluationError(f"{metric} is not available for both {a} and {b} (ranking too short)")
        p = paired_test(x.to_numpy(), y.loc[x.index].to_numpy(), method)
        return Significance(a, b, metric, method, len(x), float(x.mean()), float(y.mean()),
                            float(y.mean() - x.mean()), p, alpha)

    def significance(self, baseline: str | None = None, metric: str = "ndcg@10",
                     method: Literal["t-test", "randomization"] = "t-test", alpha: float = 0.05) -> pd.DataFrame:
        """Each other stage against `baseline` (default: the first stage), one row per stage."""
        baseline = baseline or self.stages[0]
        rows = [asdict(self.compare(baseline, s, metric, method, alpha)) for s in self.stages if s != baseline]
        out = pd.DataFrame(rows, columns=[f.name for f in Significance.__dataclass_fields__.values()])
        out["significant"] = out["p_value"] < alpha
        return out.set_index("b")

    def recall_curve(self, ks: Sequence[int] = (1, 2, 5, 10, 20, 50, 100)) -> pd.DataFrame:
        """Mean recall@k by pytrec_eval for each stage (rows) and k (columns)."""
        rows = {}
        for stage, run in self.runs.items():
            per_q = score_run(run, self.qrels, [f"recall@{k}" for k in ks],
                              ignore_identical_ids=self.ignore_identical_ids).mean()
            rows[stage] = [per_q[f"recall@{k}"] for k in ks]
        out = pd.DataFrame(rows, index=pd.Index(list(ks), name="k")).T
        out.index.name = "stage"
        return out

    def write_runs(self, directory: str | Path, tag: str | None = None) -> list[Path]:
        """One TREC run file per stage (`qid Q0 docid rank score tag`), readable by trec_eval.

        The format's columns are separated by whitespace, so an id (or tag) holding any (a space, tab, newline)
        or an empty one cannot be written: a `ValueError` names it before any file is written.
        """
        for stage, run in self.runs.items():
            for kind, value in [("tag", tag or stage)] + [("query id", q) for q in run] + [
                    ("document id", d) for ranked in run.values() for d, _ in ranked]:
                if not value or any(c.isspace() for c in value):
                    reason = "contains whitespace" if value else "is empty"
                    raise ValueError(f"cannot write a TREC run: {kind} {value!r} {reason}, and the format's columns "
                                     "are whitespace-separated; rename it in the dataset")
        out_dir = Path(directory).expanduser()
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for stage, run in self.runs.items():
            path = out_dir / f"{self.dataset}-{self.split}-{stage}.trec"
            write_trec_run(run, path, tag or stage)
            written.append(path)
        return written


def write_trec_run(run: Run, path: str | Path, tag: str = "twostage") -> Path:
    """Write `run` in TREC format with the same tie-free scores that were evaluated."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as fh:
        for q, ranked in run.items():
            for rank, (d, s) in enumerate(trec_scores(ranked).items(), start=1):
                fh.write(f"{q} Q0 {d} {rank} {s!r} {tag}\n")
    return path


def _stage_depth(pipeline: SearchPipeline, stage: str, run: Run) -> int:
    """How many documents a stage ranks per query (its configured top_k), so recall@k is reported only when k
    fits; for a stage this module does not know, the longest ranking it returned."""
    fs = pipeline.config.first_stage
    # A fused list is at least as deep as the deeper of its two inputs (and at most fusion.top_k).
    known = {"bm25": fs.bm25.top_k, "dense": fs.dense.top_k,
             "hybrid": min(fs.fusion.top_k, max(fs.bm25.top_k, fs.dense.top_k))}
    if stage == "rerank":
        first = [s for s in ("hybrid", "dense", "bm25") if s in pipeline.stages]
        return known[first[0]] if first else 0
    if stage in known:
        return known[stage]
    return max((len(r) for r in run.values()), default=0)


def _check_index_holds_corpus(pipeline: SearchPipeline, dataset: BeirDataset) -> None:
    """Scores are only meaningful over the dataset's own corpus: refuse an index that holds other documents.
    Needs the dataset's ids (`load_beir(check_corpus=True)`) and the index's (a `DocumentStore`'s `row_doc_ids`;
    a stand-in pipeline without them is not checked)."""
    row_doc_ids = getattr(pipeline.index.store, "row_doc_ids", None)
    if dataset.doc_ids is None or row_doc_ids is None:
        return
    held = set(row_doc_ids)
    missing, extra = dataset.doc_ids - held, held - dataset.doc_ids
    if not missing and not extra:
        return

    def some(ids: set[str]) -> str:
        return f" (e.g. {', '.join(map(repr, heapq.nsmallest(3, ids)))})" if ids else ""

    raise EvaluationError(
        f"the index {pipeline.index.path} does not hold the corpus of {dataset.path}: {len(missing)} of its "
        f"{len(dataset.doc_ids)} documents are not in the index{some(missing)} and {len(extra)} of the index's "
        f"{len(held)} documents are not in its corpus{some(extra)}; evaluate with an index built from "
        f"{dataset.path / 'corpus.jsonl'} (scripts/evaluate.py builds one when --index is left out)")


def evaluate(pipeline: SearchPipeline, dataset: BeirDataset, stages: Sequence[str] | None = None, *,
             metrics: Sequence[str] = DEFAULT_METRICS, batch_size: int = 64, ignore_identical_ids: bool = False,
             show_progress: bool = True) -> EvaluationResult:
    """Run every query of `dataset` through each stage of one pipeline (one index) and score it by pytrec_eval.

    Refuses (`EvaluationError`) an index that does not hold the dataset's corpus. `stages` defaults to
    `pipeline.stages`. Recall@k deeper than a stage ranks (recall@1000 with top_k 100) is
    left out for that stage (NaN in the table), unless the index holds no more documents than the stage ranks.
    """
    available = pipeline.stages
    stages = list(stages) if stages else list(available)
    unknown = [s for s in stages if s not in available]
    if unknown:
        hint = " (add a rerank: block to the config)" if "rerank" in unknown else ""
        raise EvaluationError(f"stage {', '.join(map(repr, unknown))} is not available in this pipeline{hint}; "
                              f"available: {', '.join(available)}")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    for m in metrics:
        _parse_metric(m)
    _check_index_holds_corpus(pipeline, dataset)
    num_docs = len(pipeline.index.store.passage_ids)
    qids = list(dataset.queries)
    result = EvaluationResult(dataset.name, dataset.split, {}, {}, dataset.qrels, issues=dict(dataset.issues),
                              ignore_identical_ids=ignore_identical_ids)
    for stage in stages:
        start = time.perf_counter()
        run: Run = {}
        with tqdm(total=len(qids), desc=stage, unit="query", disable=not show_progress) as bar:
            for i in range(0, len(qids), batch_size):
                batch = qids[i: i + batch_size]
                lists = pipeline.retrieve([dataset.queries[q] for q in batch], stage=stage)
                run.update(zip(batch, lists))
                bar.update(len(batch))
        result.seconds[stage] = time.perf_counter() - start
        depth = _stage_depth(pipeline, stage, run)
        kept = [m for m in metrics if _parse_metric(m)[0] != "recall" or _parse_metric(m)[1] <= depth
                or depth >= num_docs]
        dropped = [m for m in metrics if m not in kept]
        if dropped:
            logger.info("%s ranks %d documents per query: %s not reported (raise its top_k for them)",
                        stage, depth, ", ".join(dropped))
        per_q = score_run(run, dataset.qrels, kept, ignore_identical_ids=ignore_identical_ids)
        result.per_query[stage] = per_q.reindex(columns=list(metrics))
        result.runs[stage] = run
        logger.info("%s: %s (%.1f s)", stage, ", ".join(f"{m}={per_q[m].mean():.4f}" for m in kept),
                    result.seconds[stage])
    return result


# -- index cache ----------------------------------------------------------------------------------------------

def index_settings(build_config: dict[str, Any]) -> dict[str, Any]:
    """The part of a build config (`BuildConfig.model_dump(mode="json")`, as a manifest holds it) that decides
    what an index holds: `BuildConfig.index_settings`, the one definition the pipeline also checks against."""
    return BuildConfig.model_validate(build_config).index_settings()


def cached_index(dataset_dir: str | Path, config: PipelineConfig, cache_dir: str | Path,
                 show_progress: bool = True) -> Path:
    """The index of `dataset_dir` for `config`'s build settings under `cache_dir/<dataset>-<hash>`: reused when
    its manifest's settings match, built (atomically) otherwise."""
    from index.builder import build_index

    root = Path(dataset_dir).expanduser().resolve()
    corpus = root / "corpus.jsonl"
    if not corpus.is_file():
        raise EvaluationError(f"{root} is not a BEIR dataset folder: no corpus.jsonl")
    build = config.build_config()
    wanted = index_settings(build.model_dump(mode="json"))
    stat = corpus.stat()
    key = json.dumps({"corpus": str(corpus), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                      "settings": wanted}, sort_keys=True)
    path = Path(cache_dir).expanduser().resolve() / f"{root.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if path.exists():
        try:
            manifest = read_manifest(path, verify=False)
            if index_settings(manifest.get("config", {})) == wanted:
                logger.info("reusing the index at %s", path)
                return path
            logger.warning("%s was built with other settings; rebuilding it", path)
        except (IndexDirError, ValidationError) as exc:  # damaged, or settings this version does not know
            logger.warning("cannot reuse %s (%s); rebuilding it", path, str(exc).splitlines()[0])
    logger.info("building the index of %s at %s", root, path)
    build_index(root, path, build, show_progress=show_progress)
    return path
