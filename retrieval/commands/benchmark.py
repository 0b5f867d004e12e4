"""`twostage bench`: side-by-side speed (and quality) of every stage against the libraries users would pick
instead of us.

Every comparison runs in this one process on the same inputs, reports medians of repeated runs (warm-up excluded)
and the ratio beside the absolute figures. Sections: end-to-end pipeline latency and peak RSS (run first, so the
RSS is the pipeline's), BM25 queries and indexing (ours vs rank-bm25 vs bm25s), dense (encoding, FAISS index types),
rerank (ours vs plain CrossEncoder.predict, nDCG@10 on a stated subset of the test split) and the rerank depth curve
(nDCG@10 and latency per top_n). A config without a `rerank:` block skips the rerank sections and says so.
Without --index the index is built once under --cache-dir and reused (as `twostage eval` does).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from retrieval import cli
from retrieval.benchmark import RERANK_VARIANTS, SECTIONS, Section, Settings, Table

SUMMARY = "Benchmark every stage side by side with the libraries users would pick instead (speed and quality)."
EXAMPLES = ("--dataset ../shared/datasets/scifact --config configs/default.yaml --index /tmp/idx/scifact-hybrid "
            "--json bench.json",
            "--dataset ../shared/datasets/scifact --sections bm25,bm25-index")

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


def table(t: Table) -> None:
    """A Markdown table (aligned, so it reads as well in a terminal as pasted into the README)."""
    print(f"\n#### {t.title}\n")
    if t.note:
        print(f"{t.note}\n")
    rows = t.rows
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


def show(section: Section) -> None:
    """A section's notes (what it skipped), then its tables."""
    for note in section.notes:
        print(note)
    for t in section.tables:
        table(t)


# -- main ---------------------------------------------------------------------------------------------------------


def settings(args: argparse.Namespace) -> Settings:
    """The library's settings from the parsed options (same names; lists given comma-separated)."""
    def names(text: str) -> tuple[str, ...]:
        return tuple(v.strip() for v in text.split(",") if v.strip())

    given = {f.name: getattr(args, f.name) for f in fields(Settings)}
    return Settings(**{**given, "sections": names(args.sections), "rerank_variants": names(args.rerank_variants),
                       "rerank_models": names(args.rerank_models),
                       "curve_depths": tuple(args.curve_depths), "passage_depths": tuple(args.passage_depths)})


def run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    # The reranker logs truncation per call; the rerank table reports the share of truncated pairs instead.
    logging.getLogger("rerank.cross_encoder").setLevel(logging.WARNING)
    from index.cache import cached_index
    from retrieval.benchmark import load_average, machine, run_sections
    from retrieval.config import load_config
    from retrieval.evaluation import load_beir

    wanted = settings(args)  # unknown section or variant names fail here, before anything is loaded
    started = time.perf_counter()
    config = load_config(args.config)
    test = load_beir(args.dataset, "test")
    index = Path(args.index) if args.index else cached_index(args.dataset, config.build_config(), args.cache_dir,
                                                             show_progress=not args.quiet)
    config.index.path = index.expanduser().resolve()
    report: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": machine(),
                              "config": str(args.config), "index": str(config.index.path),
                              "dataset": str(args.dataset)}
    m = report["machine"]
    print(f"# twostage benchmark: {m['cpu']}, {m['usable_cpus']} usable CPUs ({', '.join(m['isa'])}), "
          f"torch {m['torch']} with {m['torch_threads']} threads, load average {m['load_average_at_start']}")
    print(f"config {args.config}, index {config.index.path}, dataset {args.dataset}")
    for key, section in run_sections(config, test, wanted):
        show(section)
        report[key] = section.report
    report["machine"]["load_average_at_end"] = load_average()
    report["seconds"] = time.perf_counter() - started
    print(f"\n{report['seconds']:.0f} s in all; load average at the end {report['machine']['load_average_at_end']} "
          f"(a load above {m['usable_cpus']} means other processes shared the CPU)")
    if args.json:
        out = Path(args.json).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(cli.to_json(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Settings  # the defaults are the library's
    positive = cli.positive_int
    p.add_argument("--dataset", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    p.add_argument("--config", default=str(cli.ROOT / "configs" / "default.yaml"))
    p.add_argument("--index", help="an existing index of the dataset built with the config's build settings")
    p.add_argument("--cache-dir", default=str(cli.ROOT / "indexes" / "eval"), help="where to build/reuse the index")
    p.add_argument("--json", help="also write every figure (and the machine) to this JSON file")
    p.add_argument("--sections", default=",".join(d.sections), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--repeats", type=positive, default=d.repeats,
                   help="timed runs per measurement (the median is reported)")
    p.add_argument("--k", type=positive, default=d.k, help="top-k for BM25 and FAISS comparisons")
    p.add_argument("--batch-size", type=positive, default=d.batch_size, help="queries per query_batch call")
    p.add_argument("--e2e-queries", type=positive, default=d.e2e_queries)
    p.add_argument("--e2e-batches", type=positive, default=d.e2e_batches)
    p.add_argument("--bm25-queries", type=positive, default=d.bm25_queries,
                   help="queries for the BM25 comparison (rank_bm25 is slow)")
    p.add_argument("--dense-passages", type=positive, default=d.dense_passages, help="passages encoded per run")
    p.add_argument("--dense-queries", type=positive, default=d.dense_queries)
    p.add_argument("--rerank-queries", type=positive, default=d.rerank_queries,
                   help="test queries whose candidates are reranked")
    p.add_argument("--rerank-depth", type=positive, default=d.rerank_depth,
                   help="candidates per query for the rerank comparison")
    p.add_argument("--rerank-chunks", type=positive, default=d.rerank_chunks,
                   help="timed chunks the pairs are split into")
    p.add_argument("--rerank-variants", default=",".join(d.rerank_variants),
                   help=f"comma-separated subset of {','.join(RERANK_VARIANTS)} (plain is always run)")
    p.add_argument("--rerank-models", default="",
                   help="comma-separated other rerankers (paths, hub ids, bundled: names) run with the config's "
                        "rerank settings on the same pairs, e.g. distilled students")
    p.add_argument("--curve-queries", type=positive, default=d.curve_queries,
                   help="queries for the rerank depth curve")
    p.add_argument("--curve-depths", type=cli.int_list(positive), default=list(d.curve_depths),
                   help="rerank top_n values, comma-separated")
    p.add_argument("--curve-split", default=d.curve_split,
                   help="split for the depth curve, or dev: the training queries held out from the reranker "
                        "(choosing a depth is tuning: not test, whose queries only measure)")
    p.add_argument("--passage-words", type=positive, default=d.passage_words,
                   help="passages section: words per passage of its chunked BM25 index")
    p.add_argument("--passage-depths", type=cli.int_list(positive), default=list(d.passage_depths),
                   help="passages section: rerank.max_passages values, comma-separated")
    p.add_argument("--updates-docs", type=cli.non_negative_int, default=d.updates_docs,
                   help="updates section: SciFact documents read, the first ones (0: the whole corpus)")
    p.add_argument("--updates-held-out", type=positive, default=d.updates_held_out,
                   help="updates section: documents left out of the SciFact build, then added and deleted")
    p.add_argument("--updates-rounds", type=cli.non_negative_int, default=d.updates_rounds,
                   help="updates section: add + delete rounds before the last add")
    p.add_argument("--synthetic-docs", type=positive, default=d.synthetic_docs,
                   help="updates and filters sections: documents of the synthetic corpus")
    p.add_argument("--synthetic-queries", type=positive, default=d.synthetic_queries,
                   help="updates and filters sections: synthetic queries")
    p.add_argument("--synthetic-segments", type=positive, default=d.synthetic_segments,
                   help="updates section: delta segments added to the 90%% base")
    p.add_argument("--synthetic-faiss", type=lambda text: tuple(v.strip() for v in text.split(",") if v.strip()),
                   default=d.synthetic_faiss, help="updates and filters sections: FAISS types, comma-separated "
                   "(flat, hnsw, ivf, sq8; BM25 runs with the first)")
    p.add_argument("--scale-passages", type=positive, default=d.scale_passages,
                   help="scale section: synthetic passages (BM25) and vectors (FAISS)")
    p.add_argument("--scale-queries", type=positive, default=d.scale_queries, help="scale section: queries")
    p.add_argument("--scale-faiss", type=lambda text: tuple(v.strip() for v in text.split(",") if v.strip()),
                   default=d.scale_faiss, help="scale section: FAISS types, comma-separated (empty: BM25 only)")
    p.add_argument("--scale-ef-construction", type=positive, default=d.scale_ef_construction,
                   help="scale section: hnsw build effort")
    p.add_argument("--scale-hybrid", default=d.scale_hybrid, metavar="FAISS_TYPE",
                   help="scale section: also a BM25 + dense index of this FAISS type at --scale-passages (hybrid "
                   "query latency and RSS; empty: none)")
    p.add_argument("--ray-address", default=d.ray_address, help="ray section: 'local', 'auto' or a cluster address")
    p.add_argument("--ray-docs", type=cli.non_negative_int, default=d.ray_docs,
                   help="ray section: dataset documents built with the config (0: all)")
    p.add_argument("--ray-shards", type=positive, default=d.ray_shards, help="ray section: shards")
    p.add_argument("--ray-bm25-passages", type=positive, default=d.ray_bm25_passages,
                   help="ray section: synthetic passages of the BM25-only builds")
    p.add_argument("--ray-queries", type=positive, default=d.ray_queries, help="ray section: test queries")
    p.add_argument("--dev-fraction", type=cli.Bounded(float, low=0, high=1, low_open=True), default=d.dev_fraction,
                   help="dev: share of the training queries held out")
    p.add_argument("--dev-seed", type=cli.seed, default=d.dev_seed,
                   help="dev: seed of the sample (the bundled reranker's)")
