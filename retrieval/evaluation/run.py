"""Running a pipeline over a BEIR split: every query through each stage, in batches, scored by pytrec_eval.

Example (a pipeline `pipe` over the dataset's index, as in the package docstring):
    >>> from retrieval.evaluation import evaluate, load_beir
    >>> evaluate(pipe, load_beir("../shared/datasets/scifact", split="test")).table()  # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from index.progress import bar as progress
from retrieval.evaluation.errors import EvaluationError
from retrieval.evaluation.metrics import DEFAULT_METRICS, Run, parse_metric, score_run
from retrieval.evaluation.result import EvaluationResult

if TYPE_CHECKING:
    from retrieval.evaluation.beir import BeirDataset
    from retrieval.pipeline import SearchPipeline

logger = logging.getLogger(__name__)


def _stage_depth(pipeline: SearchPipeline, stage: str, run: Run) -> int:
    """How many documents a stage ranks per query, so recall@k is reported only when k fits: the pipeline's own
    answer (`SearchPipeline.stage_depth`, its configured top_k); for a stand-in pipeline without one, the longest
    ranking the stage returned."""
    stage_depth = getattr(pipeline, "stage_depth", None)
    if stage_depth is None:
        return max((len(r) for r in run.values()), default=0)
    return stage_depth(stage)


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
             show_progress: bool = True, filter: Any = None) -> EvaluationResult:
    """Run every query of `dataset` through each stage of one pipeline (one index) and score it by pytrec_eval.
    `filter`: a metadata filter every query runs under (`SearchPipeline.query`), e.g. to measure one source.

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
        parse_metric(m)
    _check_index_holds_corpus(pipeline, dataset)
    num_docs = len(pipeline.index.store.passage_ids)
    qids = list(dataset.queries)
    result = EvaluationResult(dataset.name, dataset.split, {}, {}, dataset.qrels, issues=dict(dataset.issues),
                              ignore_identical_ids=ignore_identical_ids)
    for stage in stages:
        start = time.perf_counter()
        run: Run = {}
        with progress(None, f"evaluating {stage}", "query", show=show_progress, total=len(qids)) as bar:
            for i in range(0, len(qids), batch_size):
                batch = qids[i: i + batch_size]
                texts = [dataset.queries[q] for q in batch]
                lists = (pipeline.retrieve(texts, stage=stage) if filter is None
                         else pipeline.retrieve(texts, stage=stage, filter=filter))
                run.update(zip(batch, lists))
                bar.update(len(batch))
        result.seconds[stage] = time.perf_counter() - start
        depth = _stage_depth(pipeline, stage, run)
        kept = [m for m in metrics if parse_metric(m)[0] != "recall" or parse_metric(m)[1] <= depth
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
    notes = getattr(pipeline, "notes", None)  # a stand-in pipeline may have none
    result.notes = list(notes()) if notes is not None else []
    return result
