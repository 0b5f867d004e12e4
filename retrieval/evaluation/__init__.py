"""Evaluation on BEIR-format benchmarks: load a split, run every query through each stage, score with pytrec_eval.

Metrics are pytrec_eval's (trec_eval's code), never computed by hand: `ndcg@k` (graded gains), `mrr@k`
(reciprocal rank of a run cut at k), `recall@k`, `map@k`, `p@k`. Per-query scores are kept, so two stages can be
compared with a paired significance test.

Modules: `beir` (loading a split), `metrics` (pytrec_eval scoring), `significance` (paired tests), `result` (the
report and TREC run files), `run` (`evaluate`: the run loop), `reranking` (a reranker's dev runs and nDCG@10).
Names are imported on first use (PEP 562).

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

from typing import TYPE_CHECKING

from index.lazy import lazy_exports

_HOMES = {
    "BeirDataset": "retrieval.evaluation.beir",
    "load_beir": "retrieval.evaluation.beir",
    "EvaluationError": "retrieval.evaluation.errors",
    "DEFAULT_METRICS": "retrieval.evaluation.metrics",
    "Qrels": "retrieval.evaluation.metrics",
    "Run": "retrieval.evaluation.metrics",
    "mean_metric": "retrieval.evaluation.metrics",
    "parse_metric": "retrieval.evaluation.metrics",
    "score_run": "retrieval.evaluation.metrics",
    "trec_scores": "retrieval.evaluation.metrics",
    "ndcg10": "retrieval.evaluation.reranking",
    "rerank_runs": "retrieval.evaluation.reranking",
    "EvaluationResult": "retrieval.evaluation.result",
    "write_trec_run": "retrieval.evaluation.result",
    "evaluate": "retrieval.evaluation.run",
    "Significance": "retrieval.evaluation.significance",
    "paired_test": "retrieval.evaluation.significance",
}
__all__ = [
    "DEFAULT_METRICS", "BeirDataset", "EvaluationError", "EvaluationResult", "Qrels", "Run", "Significance",
    "evaluate", "load_beir", "mean_metric", "ndcg10", "paired_test", "parse_metric", "rerank_runs", "score_run",
    "trec_scores", "write_trec_run",
]

if TYPE_CHECKING:
    from retrieval.evaluation.beir import BeirDataset, load_beir
    from retrieval.evaluation.errors import EvaluationError
    from retrieval.evaluation.metrics import (
        DEFAULT_METRICS,
        Qrels,
        Run,
        mean_metric,
        parse_metric,
        score_run,
        trec_scores,
    )
    from retrieval.evaluation.reranking import ndcg10, rerank_runs
    from retrieval.evaluation.result import EvaluationResult, write_trec_run
    from retrieval.evaluation.run import evaluate
    from retrieval.evaluation.significance import Significance, paired_test

__getattr__ = lazy_exports(__name__, _HOMES)
