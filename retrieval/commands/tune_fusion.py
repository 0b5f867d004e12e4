"""`twostage tune-fusion`: compare fusion settings on a training split (never the test split) and print nDCG@10
for each: each retriever alone, RRF at several k, weighted min-max and z-score fusion at several weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from retrieval import cli

SUMMARY = "Compare RRF and weighted fusion settings on a training split (nDCG@10)."
EXAMPLES = ("--dataset ../shared/datasets/scifact --split train --index /tmp/idx/scifact-hybrid",)

RRF_K = (10, 20, 30, 60, 100)
FIRST_WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7)  # of the first retriever; the second gets the rest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="BEIR folder")
    p.add_argument("--split", default="train")
    p.add_argument("--config", default=str(cli.ROOT / "configs" / "hybrid.yaml"))
    p.add_argument("--index", help="an index of the dataset built with --config (default: cached build)")
    p.add_argument("--cache-dir", default=str(cli.ROOT / "indexes" / "eval"))
    p.add_argument("--depth", type=cli.positive_int, default=100, help="candidates per retriever")
    p.add_argument("--allow-test", action="store_true", help="permit --split test (for measuring only)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from index.cache import cached_index
    from retrieval import SearchPipeline
    from retrieval.config import load_config
    from retrieval.evaluation import load_beir, mean_metric
    from retrieval.fusion import rrf, weighted

    if args.split == "test" and not args.allow_test:
        raise ValueError("tuning on the test split leaks it into the defaults; use a training split "
                         "(or --allow-test to measure, not to choose)")
    config = load_config(args.config)
    config.rerank = None
    config.index.path = (Path(args.index) if args.index
                         else cached_index(args.dataset, config.build_config(), args.cache_dir))
    pipe = SearchPipeline(config)
    data = load_beir(args.dataset, args.split)
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]
    names = [r.name for r in pipe.retrievers]
    if len(names) != 2:
        raise ValueError(f"tune-fusion compares the fusion of two retrievers; {args.config} enables "
                         f"{len(names)} ({', '.join(names)}): disable all but two in a copy of the config")
    a, b = names
    lists = {s: pipe.retrieve(texts, stage=s, top_k=args.depth) for s in names}

    def ndcg(fuse) -> float:
        run = {q: fuse({a: x, b: y}) for q, x, y in zip(qids, lists[a], lists[b])}
        return mean_metric(run, data.qrels, "ndcg@10")

    rows = [(f"{a} alone", ndcg(lambda x: x[a])), (f"{b} alone", ndcg(lambda x: x[b]))]
    rows += [(f"rrf k={k}", ndcg(lambda x, k=k: rrf(x, k))) for k in RRF_K]
    for norm in ("minmax", "zscore"):
        rows += [(f"weighted {norm} {a}={w} {b}={1 - w:.1f}",
                  ndcg(lambda x, w=w, norm=norm: weighted(x, {a: w, b: 1 - w}, norm)))
                 for w in FIRST_WEIGHTS]
    if args.json:
        cli.print_json({"dataset": str(args.dataset), "split": args.split, "num_queries": len(qids),
                        "ndcg@10": {name: round(v, 4) for name, v in rows}})
        return 0
    print(f"{Path(args.dataset).name} {args.split}: {len(qids)} queries, first-stage depth {args.depth}")
    best = max(v for _, v in rows)
    for name, v in rows:
        print(f"  {name:<36} {v:.4f}" + ("  <- best" if v == best else ""))
    return 0
