"""How many passages per candidate the reranker should read (`rerank.max_passages`): on a chunked BM25 index of the
dataset, nDCG@10, seconds and pairs scored for each value, with the config's reranker.

Example:
    >>> from retrieval.benchmark.passages import section_passages
    >>> section_passages(config, dev, Settings(dataset, sections=("passages",))).report  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any

from retrieval.benchmark.report import Section, Settings, Table


def section_passages(config: Any, data: Any, settings: Settings) -> Section:
    """The config's reranker over a BM25 first stage on the dataset cut into `passage_words`-word passages
    (overlap a quarter of that), once per `passage_depths` value of `rerank.max_passages`."""
    from index.cache import cached_index
    from retrieval.config import PipelineConfig
    from retrieval.evaluation import evaluate
    from retrieval.pipeline import SearchPipeline

    words = settings.passage_words
    # What the config sets, not every default: a default written out reads as chosen (rerank.quantization with
    # the openvino backend is then refused).
    raw = config.model_dump(mode="json", exclude_unset=True)
    raw.setdefault("index", {}).update(path=None, chunking={"max_words": words, "overlap": words // 4})
    raw["first_stage"] = {"bm25": raw.get("first_stage", {}).get("bm25", {}), "dense": {"enabled": False}}
    chunked = PipelineConfig.model_validate(raw)
    chunked.index.path = cached_index(settings.dataset, chunked.build_config(), settings.cache_dir,
                                      show_progress=not settings.quiet)
    rows, report = [], {"split": data.split, "queries": len(data.queries), "passage_words": words, "depths": {}}
    for depth in settings.passage_depths:
        chunked.rerank.max_passages = depth
        pipe = SearchPipeline(chunked.model_copy(deep=True))
        start = time.perf_counter()
        result = evaluate(pipe, data, ["bm25", "rerank"], show_progress=not settings.quiet)
        seconds = time.perf_counter() - start
        table = result.table()
        item = {"bm25_ndcg@10": float(table.loc["bm25", "ndcg@10"]), "ndcg@10": float(table.loc["rerank", "ndcg@10"]),
                "rerank_s": result.seconds["rerank"], "seconds": seconds, "pairs": pipe.reranker.pairs_scored}
        report["depths"][depth] = item
        rows.append({"max_passages": depth, "nDCG@10": item["ndcg@10"], "bm25 nDCG@10": item["bm25_ndcg@10"],
                     "pairs scored": item["pairs"], "rerank s": item["rerank_s"]})
    note = (f"{data.split} split, {len(data.queries)} queries; BM25 over {words}-word passages "
            f"(overlap {words // 4}), then the config's reranker over the top {chunked.rerank.top_n}")
    return Section(report, [Table("Rerank: passages per candidate (rerank.max_passages)", rows, note)])
