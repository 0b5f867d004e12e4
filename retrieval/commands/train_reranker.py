"""`twostage train-reranker`: fine-tune a cross-encoder reranker on a BEIR dataset's training split, with hard
negatives mined by our own first stage and a dev split carved out of the training queries for model selection."""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from pathlib import Path

from retrieval import cli

SUMMARY = "Fine-tune a cross-encoder reranker (sentence-transformers CrossEncoderTrainer)."
EXAMPLES = ("--dataset ../shared/datasets/scifact --split train --base bundled:all-MiniLM-L6-v2 "
            "--output /tmp/my-reranker --epochs 1 --negatives 3 --negatives-from hybrid",)

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="BEIR folder")
    p.add_argument("--split", default="train", help="qrels split to train on (never the test split)")
    p.add_argument("--base", default="bundled:all-MiniLM-L6-v2", help="model to start from (path, bundled:, hub id)")
    p.add_argument("--output", required=True, help="directory for the trained CrossEncoder")
    p.add_argument("--epochs", type=cli.positive_float, default=1.0)
    p.add_argument("--max-steps", type=cli.Bounded(int, low=1, also=(-1,)), default=-1,
                   help="stop after this many steps (overrides --epochs; -1: no limit)")
    p.add_argument("--negatives", type=cli.non_negative_int, default=3, help="hard negatives per positive")
    p.add_argument("--negatives-from", default="hybrid", help="the first-stage stage whose candidates are mined for "
                   "hard negatives (a retriever of the config, or hybrid)")
    p.add_argument("--candidates", type=cli.positive_int, default=30,
                   help="first-stage depth the negatives are sampled from")
    p.add_argument("--skip-top", type=cli.non_negative_int, default=0,
                   help="skip this many top candidates (unjudged positives)")
    p.add_argument("--pseudo-queries", type=cli.non_negative_int, default=0,
                   help="add this many title/sentence pseudo-queries")
    p.add_argument("--loss", default="mnrl", choices=["mnrl", "bce"])
    p.add_argument("--in-batch-negatives", type=cli.non_negative_int, default=1,
                   help="mnrl: in-batch negatives per query")
    p.add_argument("--batch-size", type=cli.positive_int, default=16)
    p.add_argument("--lr", type=cli.positive_float, default=7e-5)
    p.add_argument("--warmup", type=cli.Bounded(float, low=0, high=1, high_open=True), default=0.1,
                   help="warm-up as a fraction of the steps")
    p.add_argument("--max-length", type=cli.Bounded(int, low=8), default=256)
    p.add_argument("--fp32", action="store_true", help="train in fp32 instead of bf16 mixed precision")
    p.add_argument("--seed", type=cli.seed, default=42)
    p.add_argument("--dev-fraction", type=cli.Bounded(float, low=0, high=1, high_open=True), default=0.2,
                   help="training queries held out for model selection")
    # Separate from --seed so that every stage of a multi-stage recipe, and the --no-train choice, hold out the
    # same dev queries: a different split per stage would train on the next stage's dev queries.
    p.add_argument("--dev-seed", type=cli.seed, default=13, help="seed of the dev split (keep it fixed across stages)")
    p.add_argument("--eval-top-n", type=cli.positive_int, default=20,
                   help="candidates re-scored when scoring the dev split")
    p.add_argument("--config", default=str(cli.ROOT / "configs" / "default.yaml"),
                   help="first-stage config for mining")
    p.add_argument("--index", help="an index of the dataset's corpus built with --config (default: cached build)")
    p.add_argument("--cache-dir", default="/tmp/twostage-indexes", help="where the cached index is built")
    p.add_argument("--no-train", action="store_true",
                   help="do not train: score --base on the dev split and choose its interpolation (into --output)")
    p.add_argument("--json", action="store_true")


def _is_cross_encoder(base: str) -> bool:
    """Whether `base` already has a sequence-classification head (then training continues it)."""
    from transformers import AutoConfig

    from index.runtime.models import resolve_model

    try:
        architectures = AutoConfig.from_pretrained(resolve_model(base)).architectures or []
    except (OSError, ValueError):
        return False
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def run(args: argparse.Namespace) -> int:
    from index.cache import cached_index
    from index.documents import model_text
    from rerank.training import (
        ModelCard,
        TrainingConfig,
        build_examples,
        pseudo_queries,
        save_fp16,
        split_dev,
        train_cross_encoder,
        write_model_card,
    )
    from retrieval import SearchPipeline
    from retrieval.config import load_config
    from retrieval.evaluation import load_beir, ndcg10, rerank_runs

    started = time.perf_counter()
    new_head = not _is_cross_encoder(args.base)
    config = load_config(args.config)
    config.rerank = None
    config.index.path = Path(args.index) if args.index else cached_index(
        args.dataset, config.build_config(), args.cache_dir, show_progress=not args.quiet)
    pipe = SearchPipeline(config)
    if args.negatives_from not in pipe.stages:
        raise ValueError(f"--negatives-from {args.negatives_from}: the config {args.config} has stages {pipe.stages}")
    data = load_beir(args.dataset, args.split)
    train_ids, dev_ids = split_dev(data.queries, args.dev_fraction, args.dev_seed)
    docs = {d.doc_id: d for d in pipe.index.store.iter_documents()}

    def doc_text(doc_id: str) -> str:
        return model_text(docs[doc_id].title, docs[doc_id].text)

    depth = max(args.candidates, args.eval_top_n)
    queries = {q: data.queries[q] for q in train_ids + dev_ids}
    ranked = dict(zip(queries, pipe.retrieve(list(queries.values()), stage=args.negatives_from, top_k=depth)))
    positives = {q: [d for d, s in data.qrels[q].items() if s > 0 and d in docs] for q in train_ids}
    examples = build_examples({q: data.queries[q] for q in train_ids}, positives,
                              {q: [d for d, _ in ranked[q][: args.candidates]] for q in train_ids}, doc_text,
                              args.negatives, args.seed, skip_top=args.skip_top)
    qrel_examples = len(examples)
    if args.pseudo_queries:
        rng = random.Random(args.seed)
        triples = pseudo_queries(docs.values(), args.seed)
        triples = rng.sample(triples, min(args.pseudo_queries, len(triples)))
        pq = {f"pseudo-{i}": t[0] for i, t in enumerate(triples)}
        pranked = pipe.retrieve(list(pq.values()), stage=args.negatives_from, top_k=args.candidates)
        examples += build_examples(pq, {k: [t[1]] for k, t in zip(pq, triples)},
                                   {k: [d for d, _ in r] for k, r in zip(pq, pranked)}, doc_text, args.negatives,
                                   args.seed, positive_text={k: t[2] for k, t in zip(pq, triples)},
                                   skip_top=args.skip_top)
    random.Random(args.seed).shuffle(examples)
    tcfg = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                          max_length=args.max_length, loss=args.loss, seed=args.seed, max_steps=args.max_steps,
                          in_batch_negatives=args.in_batch_negatives, warmup_ratio=args.warmup,
                          bf16=not args.fp32)
    print(f"training on {len(examples):,} examples ({qrel_examples:,} from {len(train_ids)} judged queries, "
          f"{len(examples) - qrel_examples:,} pseudo-queries); dev: {len(dev_ids)} queries", file=sys.stderr)
    if args.no_train:  # score an existing reranker on the dev split and choose its interpolation
        from sentence_transformers import CrossEncoder

        from index.runtime.models import load_model

        model = load_model(args.base, "cross-encoder", CrossEncoder, device="cpu")
        model.training_steps = 0
    else:
        # The trainer writes its loss logs to stdout (tqdm.write): keep stdout for the summary (--json).
        with contextlib.redirect_stdout(sys.stderr):
            model = train_cross_encoder(examples, args.base, args.output, tcfg)

    dev_metrics: dict[str, float | int | str] = {"dev_queries": len(dev_ids)}
    best_w = 0.0
    if dev_ids:
        import torch

        dev_qrels = {q: data.qrels[q] for q in dev_ids}
        first = {q: {d: float(len(ranked[q]) - i) for i, (d, _) in enumerate(ranked[q])} for q in dev_ids}
        dev_metrics[f"ndcg@10 {args.negatives_from} (first stage)"] = round(ndcg10(first, dev_qrels), 4)

        def score(pairs):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
                return model.predict(pairs, batch_size=32, show_progress_bar=False)

        runs = rerank_runs(score, {q: data.queries[q] for q in dev_ids}, {q: ranked[q] for q in dev_ids}, doc_text,
                           args.eval_top_n, WEIGHTS)
        by_w = {w: ndcg10(run, dev_qrels) for w, run in runs.items()}
        best_w = max(by_w, key=lambda w: (round(by_w[w], 4), -w))
        dev_metrics[f"ndcg@10 reranked top-{args.eval_top_n} (reranker alone)"] = round(by_w[0.0], 4)
        dev_metrics["ndcg@10 with the best interpolation"] = round(by_w[best_w], 4)
        dev_metrics["best interpolation (weight of the first-stage score)"] = best_w
        dev_metrics["ndcg@10 by interpolation"] = json.dumps({str(w): round(v, 4) for w, v in by_w.items()})
    Path(args.output).mkdir(parents=True, exist_ok=True)
    # The held-out queries themselves, so that a later stage or a --no-train choice can be checked for leakage.
    (Path(args.output) / "dev_split.json").write_text(json.dumps(
        {"dataset": Path(args.dataset).name, "split": args.split, "dev_seed": args.dev_seed,
         "dev_fraction": args.dev_fraction, "query_ids": dev_ids}, indent=2))
    if not args.no_train:
        save_fp16(model, args.output)
    card = ModelCard(
        base_model=args.base,
        training_data=(f"{Path(args.dataset).name} split '{args.split}' ({len(train_ids)} queries, {qrel_examples:,} "
                       f"judged pairs) + {len(examples) - qrel_examples:,} pseudo-queries from its corpus; "
                       f"{args.negatives} hard negatives each from our {args.negatives_from} first stage "
                       f"(top {args.candidates}); dev = {len(dev_ids)} training queries held out "
                       f"(dev seed {args.dev_seed})"),
        examples=len(examples), steps=int(getattr(model, "training_steps", 0)), loss=args.loss,
        config={**vars(tcfg), "negatives": args.negatives, "negatives_from": args.negatives_from,
                "candidates": args.candidates, "skip_top": args.skip_top, "pseudo_queries": args.pseudo_queries},
        dev_metrics=dev_metrics, new_head=new_head)
    if args.no_train:
        (Path(args.output) / "dev_metrics.json").write_text(cli.to_json(dev_metrics, indent=2))
    else:
        write_model_card(args.output, card)
    (Path(args.output) / "twostage.json").write_text(json.dumps(
        {"interpolation": best_w, "top_n": args.eval_top_n, "first_stage": args.negatives_from}, indent=2))
    summary = {"output": str(args.output), "examples": len(examples), "steps": card.steps,
               "seconds": round(time.perf_counter() - started, 1), "dev": dev_metrics}
    if args.json:
        cli.print_json(summary)
    else:
        for k, v in summary.items():
            print(f"{k:<10} {v}")
    return 0
