"""Running the benchmark: each wanted section in order on one pipeline, handed back as it finishes.

Example:
    >>> from retrieval.benchmark import Settings, run_sections
    >>> for key, section in run_sections(config, test, Settings(dataset, sections=("bm25",))):  # doctest: +SKIP
    ...     print(key, section.report)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from retrieval.benchmark.bm25 import section_bm25, section_bm25_index
from retrieval.benchmark.dense import section_dense
from retrieval.benchmark.e2e import section_e2e
from retrieval.benchmark.filters import section_filters
from retrieval.benchmark.passages import section_passages
from retrieval.benchmark.report import Section, Settings
from retrieval.benchmark.rerank import curve_split, section_curve, section_rerank
from retrieval.benchmark.scale import section_scale
from retrieval.benchmark.updates import section_updates

if TYPE_CHECKING:
    from retrieval.config import PipelineConfig
    from retrieval.evaluation.beir import BeirDataset


def run_sections(config: PipelineConfig, test: BeirDataset, settings: Settings) -> Iterator[tuple[str, Section]]:
    """`(report key, Section)` for each of `settings.sections`, as each finishes. The pipeline of `config` (its
    index built) is loaded once: by the end-to-end section when it runs, first, so that its memory figures are
    the pipeline's. `test` gives the queries; a config without a `rerank:` block skips both rerank sections."""
    from retrieval.pipeline import SearchPipeline

    wanted = settings.sections
    queries = list(test.queries.values())
    pipe = None
    if "e2e" in wanted:
        section, pipe = section_e2e(lambda: SearchPipeline(config), queries, settings)
        yield "e2e", section
    if "updates" in wanted:
        yield "updates", section_updates(config, settings)
    if "filters" in wanted:
        yield "filters", section_filters(config, settings)
    if "scale" in wanted:
        yield "scale", section_scale(config, settings)
    if "ray" in wanted:
        from retrieval.benchmark.ray import section_ray  # Ray is an optional extra

        yield "ray", section_ray(config, settings)
    if not set(wanted) - {"e2e", "updates", "filters", "scale", "ray"}:
        return  # those build their own indexes: the config's pipeline is not needed
    if pipe is None:
        pipe = SearchPipeline(config)
    no_bm25 = Section({"skipped": "no bm25 stage"})
    if "bm25" in wanted:
        yield "bm25", section_bm25(pipe, queries, settings) if pipe.bm25 else no_bm25
    if "bm25-index" in wanted:
        yield "bm25_index", section_bm25_index(pipe, settings) if pipe.bm25 else no_bm25
    if "dense" in wanted:
        yield "dense", section_dense(pipe, queries, settings)
    if not {"rerank", "curve", "passages"} & set(wanted):
        return
    if config.rerank is None:
        reason = f"{settings.config} has no rerank: block"
        yield "rerank", Section({"skipped": reason}, notes=[
            f"\n#### Rerank: skipped: {reason} (add one, e.g. from configs/msmarco.yaml, to measure it)"])
        yield "curve", Section({"skipped": reason})
        yield "passages", Section({"skipped": reason})
        return
    if "rerank" in wanted:
        yield "rerank", section_rerank(pipe, test, settings)
    curve_data = None
    if "curve" in wanted:
        curve_data = test if settings.curve_split == "test" else curve_split(settings)
        yield "curve", section_curve(pipe, curve_data, settings)
    if "passages" in wanted:
        data = curve_data or (test if settings.curve_split == "test" else curve_split(settings))
        yield "passages", section_passages(config, data, settings)
