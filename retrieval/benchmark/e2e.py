"""End to end: `SearchPipeline` latency per stage (one query at a time and in batches) and the process's memory
before loading, once loaded and after answering.

Example:
    >>> from retrieval.benchmark.e2e import section_e2e
    >>> section, pipe = section_e2e(lambda: SearchPipeline(config), queries, Settings(dataset))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval.benchmark.measure import current_rss_mib, median, pct, peak_rss_mib, progress
from retrieval.benchmark.report import Section, Settings, Table


def section_e2e(pipe_factory: Callable[[], Any], queries: list[str], settings: Settings) -> tuple[Section, Any]:
    """p50/p95 per stage for one query at a time and for batches; RSS before/after loading and querying. Returns
    the pipeline it loaded too, for the other sections (run first, the RSS figures are the pipeline's)."""
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
    todo = queries[: settings.e2e_queries]
    for q in progress(todo, "e2e single", settings.quiet):
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
    size = settings.batch_size
    batches = [queries[i : i + size] for i in range(0, len(queries), size)][: settings.e2e_batches]
    for b in progress(batches, "e2e batches", settings.quiet):
        for s in batch:
            t0 = time.perf_counter()
            if s == "query_batch()":
                pipe.query_batch(b)
            else:
                pipe.retrieve(b, stage=s)
            batch[s].append(time.perf_counter() - t0)
    answered = {"peak_rss_mib": peak_rss_mib(), "rss_mib": current_rss_mib()}
    tables = []
    rows, out_single, out_batch = [], {}, {}
    for name, values in single.items():
        label = f"{name} (= {final}, all stages)" if name == "query()" else f"up to {name}"
        out_single[name] = {"p50_ms": pct(values, 50) * 1e3, "p95_ms": pct(values, 95) * 1e3, "n": len(values)}
        rows.append({"stage (one query)": label, "p50 ms": out_single[name]["p50_ms"],
                     "p95 ms": out_single[name]["p95_ms"], "queries": len(values)})
    title = f"End to end: SearchPipeline latency per stage ({Path(settings.config).name}, final stage {final})"
    tables.append(Table(title, rows, "Each row runs the pipeline up to that stage (retrieve(stage=...)); query() "
                        "runs them all and fetches the documents."))
    rows = []
    for name, values in batch.items():
        label = f"{name} (= {final})" if name == "query_batch()" else f"up to {name}"
        per_q = [v / size for v in values]
        out_batch[name] = {"p50_ms_per_batch": pct(values, 50) * 1e3, "p95_ms_per_batch": pct(values, 95) * 1e3,
                           "ms_per_query": median(per_q) * 1e3, "batches": len(values)}
        rows.append({f"stage (batch of {size})": label, "p50 ms/batch": out_batch[name]["p50_ms_per_batch"],
                     "p95 ms/batch": out_batch[name]["p95_ms_per_batch"],
                     "ms/query": out_batch[name]["ms_per_query"], "batches": len(values)})
    tables.append(Table("End to end: query_batch", rows))
    memory = {"before_load": before, "after_load": loaded, "after_queries": answered, "load_seconds": load_seconds}
    tables.append(Table("Memory (this process; the pipeline is loaded before any other section runs)", [
        {"moment": "before loading (imports only)", "RSS MiB": before["rss_mib"],
         "peak RSS MiB": before["peak_rss_mib"]},
        {"moment": f"index + models loaded ({load_seconds:.1f} s)", "RSS MiB": loaded["rss_mib"],
         "peak RSS MiB": loaded["peak_rss_mib"]},
        {"moment": "after answering the queries", "RSS MiB": answered["rss_mib"],
         "peak RSS MiB": answered["peak_rss_mib"]},
    ]))
    report = {"stages": stages, "single": out_single, "batch": out_batch, "batch_size": size, "memory": memory}
    return Section(report, tables), pipe
