"""`twostage distill-reranker`: a smaller reranker distilled from a cross-encoder: the teacher with only its first
(or evenly spread) N transformer layers, trained with MSE on the teacher's raw logits over (query, passage) pairs
made from a dataset's training queries and pseudo-queries of the indexed corpus against the first stage's top
candidates (never the test split); the teacher's scores are cached as JSON beside the output."""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from pathlib import Path

from retrieval import cli

SUMMARY = "Distil a smaller cross-encoder reranker from a bigger one (MSE on the teacher's logits)."
EXAMPLES = ("--index /work/cache/indexes/scifact-28eb62ce74c4 --dataset ../shared/datasets/scifact --layers 2 "
            "--output /tmp/minilm-l2-scifact --scores-cache /tmp/distill/teacher-scores.json",)

TEACHER = "bundled:minilm-l6-scifact"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, help="an index of the corpus (its stored config gives the first stage)")
    p.add_argument("--dataset", help="BEIR folder whose --split queries (judged ones) are training queries; "
                                     "without it, only pseudo-queries from the index's documents")
    p.add_argument("--split", default="train", help="qrels split of the training queries (never the test split)")
    p.add_argument("--teacher", default=TEACHER, help=f"the cross-encoder to distil (default {TEACHER})")
    p.add_argument("--layers", type=cli.positive_int, required=True, help="transformer layers the student keeps")
    p.add_argument("--layer-choice", choices=["first", "spread"], default="first",
                   help="first: the first N layers; spread: N evenly spaced, the last one included")
    p.add_argument("--output", required=True, help="directory for the student CrossEncoder")
    p.add_argument("--train-queries", type=cli.non_negative_int, default=450,
                   help="training queries sampled from --split (0: all)")
    p.add_argument("--pseudo-queries", type=cli.non_negative_int, default=150,
                   help="pseudo-queries sampled from the corpus (titles, sentences; 0: none)")
    p.add_argument("--depth", type=cli.positive_int, default=20, help="first-stage candidates paired with each query")
    p.add_argument("--config", help="first-stage config, whose build settings must agree with the index's (default "
                                    "configs/default.yaml; its reranker is not run)")
    p.add_argument("--stage", default="hybrid", help="first-stage stage whose candidates are paired (default hybrid)")
    p.add_argument("--scores-cache", help="JSON file caching the teacher's scores (default: beside --output)")
    p.add_argument("--dev-fraction", type=cli.Bounded(float, low=0, high=1, high_open=True), default=0.1,
                   help="queries whose pairs are held out to measure agreement with the teacher")
    p.add_argument("--epochs", type=cli.positive_float, default=1.0)
    p.add_argument("--max-steps", type=cli.Bounded(int, low=1, also=(-1,)), default=-1,
                   help="stop after this many steps (overrides --epochs; -1: no limit)")
    p.add_argument("--batch-size", type=cli.positive_int, default=32)
    p.add_argument("--lr", type=cli.positive_float, default=1e-4)
    p.add_argument("--warmup", type=cli.Bounded(float, low=0, high=1, high_open=True), default=0.1)
    p.add_argument("--max-length", type=cli.Bounded(int, low=8), default=256)
    p.add_argument("--fp32", action="store_true", help="train in fp32 instead of bf16 mixed precision")
    p.add_argument("--seed", type=cli.seed, default=42)
    p.add_argument("--json", action="store_true")


def _pairs(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[int], str]:
    """(query, passage) pairs, the query index of each, and a line saying where they came from."""
    from index.documents import model_text
    from index.progress import bar
    from rerank.training import pseudo_queries
    from retrieval import SearchPipeline
    from retrieval.config import load_config

    if args.split == "test":
        raise ValueError("--split test: distillation pairs never come from a test split (use train or dev)")
    config = load_config(args.config or str(cli.ROOT / "configs" / "default.yaml"))
    config.rerank = None  # the first stage only: the teacher is run once, over all pairs, by teacher_scores
    pipe = SearchPipeline.from_index(args.index, config)
    index = pipe.index
    if args.stage not in pipe.stages:
        raise ValueError(f"--stage {args.stage}: the index's pipeline has stages {pipe.stages}")
    docs = {d.doc_id: d for d in bar(index.store.iter_documents(), "reading documents", "doc",
                                     show=not args.quiet, total=len(index.store))}
    rng = random.Random(args.seed)
    queries: list[str] = []
    n_train = 0
    if args.dataset:
        from retrieval.evaluation import load_beir

        data = load_beir(args.dataset, args.split)
        ids = sorted(data.queries, key=lambda q: (len(q), q))
        if args.train_queries and args.train_queries < len(ids):
            ids = sorted(rng.sample(ids, args.train_queries), key=lambda q: (len(q), q))
        queries += [data.queries[q] for q in ids]
        n_train = len(ids)
    if args.pseudo_queries:
        triples = pseudo_queries(docs.values(), args.seed)
        queries += [t[0] for t in rng.sample(triples, min(args.pseudo_queries, len(triples)))]
    if not queries:
        raise ValueError("no queries: give --dataset or a positive --pseudo-queries")
    pairs: list[tuple[str, str]] = []
    groups: list[int] = []
    for start in bar(range(0, len(queries), 256), f"first stage ({args.stage})", "batch", show=not args.quiet):
        for i, ranked in enumerate(pipe.retrieve(queries[start:start + 256], stage=args.stage, top_k=args.depth)):
            for doc_id, _ in ranked:
                pairs.append((queries[start + i], model_text(docs[doc_id].title, docs[doc_id].text)))
                groups.append(start + i)
    where = (f"{len(pairs):,} (query, passage) pairs: the top {args.depth} of our {args.stage} first stage over "
             f"{index.path} for {n_train:,} {args.split}-split queries"
             + (f" of {args.dataset}" if args.dataset else "")
             + f" and {len(queries) - n_train:,} pseudo-queries (titles, sentences) of its corpus; seed {args.seed}")
    return pairs, groups, where


def run(args: argparse.Namespace) -> int:
    """Make the pairs, score them with the teacher (cached), train the student and write it with its card.

    Example:
        >>> from retrieval import cli
        >>> cli.main(["distill-reranker", "--index", "/tmp/idx/scifact", "--dataset", "../shared/datasets/scifact",
        ...           "--layers", "2", "--output", "/tmp/minilm-l2"])  # doctest: +SKIP
    """
    from index.runtime.models import resolve_model
    from rerank.distill import DistillConfig, _teacher_layers, distill, kept_layers, save_student, teacher_scores

    started = time.perf_counter()
    resolve_model(args.teacher)  # a wrong teacher is said before any first-stage work
    total = _teacher_layers(args.teacher)
    if isinstance(total, int):
        kept_layers(total, args.layers, args.layer_choice)  # --layers above the teacher's: said now
    if args.dataset and not Path(args.dataset).is_dir():
        raise ValueError(f"--dataset {args.dataset}: no such folder (give a BEIR dataset folder)")
    if not Path(args.index).is_dir():
        raise ValueError(f"--index {args.index}: no such index directory (build one with `twostage build`)")
    pairs, groups, where = _pairs(args)
    cache = Path(args.scores_cache) if args.scores_cache else Path(args.output).parent / "teacher-scores.json"
    scores = teacher_scores(args.teacher, pairs, cache, max_length=args.max_length, show_progress=not args.quiet)
    # Held out by query, so agreement is measured on queries the student never saw.
    qids = sorted(set(groups))
    dev_q = set(random.Random(args.seed + 1).sample(qids, round(args.dev_fraction * len(qids))))
    train_i = [i for i, g in enumerate(groups) if g not in dev_q]
    dev_i = [i for i, g in enumerate(groups) if g in dev_q]
    cfg = DistillConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                        warmup_ratio=args.warmup, max_length=args.max_length, seed=args.seed, bf16=not args.fp32,
                        max_steps=args.max_steps, layers=args.layer_choice)
    print(f"distilling {args.teacher} into {args.layers} layers on {len(train_i):,} pairs; held out: "
          f"{len(dev_i):,} pairs of {len(dev_q):,} queries", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer logs to stdout: keep it for the summary
        result = distill(args.teacher, args.layers, [pairs[i] for i in train_i], args.output,
                         scores=scores[train_i], config=cfg, dev_pairs=[pairs[i] for i in dev_i],
                         dev_scores=scores[dev_i], dev_groups=[groups[i] for i in dev_i])
    save_student(result, args.output, args.teacher, where + f"; {len(dev_i):,} pairs of {len(dev_q):,} queries "
                 f"held out for the agreement figures", cfg, len(train_i),
                 extra={"teacher_scores": str(cache), "depth": args.depth, "stage": args.stage})
    summary = {"output": str(args.output), "pairs": len(train_i), "dev_pairs": len(dev_i), "steps": result.steps,
               "kept_layers": result.kept_layers, "seconds": round(time.perf_counter() - started, 1),
               "dev": result.dev}
    cli.print_summary(summary, args.json)
    return 0
