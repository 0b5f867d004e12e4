"""`twostage train-reranker`: fine-tune a cross-encoder reranker on a BEIR dataset's training split, with hard
negatives mined by our own first stage and a dev split carved out of the training queries for model selection;
or (`--adapt INDEX_DIR`) adapt one to an indexed corpus with no judgments at all, on pseudo-queries made from its
documents, with a held-out pseudo-query self-check."""

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
            "--output /tmp/my-reranker --epochs 1 --negatives 3 --negatives-from hybrid",
            "--adapt /tmp/idx/my-corpus --output /tmp/my-adapted-reranker --pseudo-queries 1500 --max-length 192")

# --adapt's defaults where they differ from qrels training: it continues an already trained reranker (a small
# learning rate), and skips the top of the first stage's list, where other relevant documents are likely.
ADAPT_BASE = "bundled:minilm-l6-scifact"
ADAPT_LR = 3e-5
ADAPT_SKIP_TOP = 2
ADAPT_PSEUDO_QUERIES = 2000
DATASET_BASE = "bundled:all-MiniLM-L6-v2"
DATASET_LR = 7e-5
SELF_CHECK = ("held-out pseudo-query self-check: no relevance judgments; each pseudo-query's only 'relevant' "
              "document is the one it was cut from")

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="BEIR folder: train on its judged queries (--split)")
    source.add_argument("--adapt", metavar="INDEX_DIR",
                        help="label-free adaptation to an indexed corpus: train on pseudo-queries made from the "
                             "index's own documents (a title for its text, a sentence for the rest of its document, "
                             "the first sentence of an untitled one), hard negatives from the index's first stage; "
                             "the dev figures are a held-out pseudo-query self-check (pseudo-query MRR/nDCG of the "
                             "first stage, the base and the adapted reranker), not a relevance judgment")
    p.add_argument("--split", default="train", help="qrels split to train on (never the test split)")
    p.add_argument("--base", help=f"model to start from (path, bundled:, hub id; default {DATASET_BASE}, "
                                  f"with --adapt {ADAPT_BASE}, whose head is trained further)")
    p.add_argument("--output", required=True, help="directory for the trained CrossEncoder")
    p.add_argument("--epochs", type=cli.positive_float, default=1.0)
    p.add_argument("--max-steps", type=cli.Bounded(int, low=1, also=(-1,)), default=-1,
                   help="stop after this many steps (overrides --epochs; -1: no limit)")
    p.add_argument("--negatives", type=cli.non_negative_int, default=3, help="hard negatives per positive")
    p.add_argument("--negatives-from", help="the first-stage stage whose candidates are mined for hard negatives (a "
                   "retriever of the config, or hybrid; default hybrid, with --adapt the index's first stage)")
    p.add_argument("--candidates", type=cli.positive_int, default=30,
                   help="first-stage depth the negatives are sampled from")
    p.add_argument("--skip-top", type=cli.non_negative_int,
                   help="skip this many top candidates (unjudged positives; default 0, with --adapt "
                        f"{ADAPT_SKIP_TOP}: negatives from ranks {ADAPT_SKIP_TOP + 1}-30 of the other documents)")
    p.add_argument("--pseudo-queries", type=cli.non_negative_int,
                   help="add this many title/sentence pseudo-queries (default 0); with --adapt, the pseudo-queries "
                        f"sampled from the corpus, held-out ones included (default {ADAPT_PSEUDO_QUERIES}; 0: all)")
    p.add_argument("--loss", default="mnrl", choices=["mnrl", "bce"])
    p.add_argument("--in-batch-negatives", type=cli.non_negative_int, default=1,
                   help="mnrl: in-batch negatives per query")
    p.add_argument("--batch-size", type=cli.positive_int, default=16)
    p.add_argument("--lr", type=cli.positive_float,
                   help=f"learning rate (default {DATASET_LR:g}, with --adapt {ADAPT_LR:g})")
    p.add_argument("--warmup", type=cli.Bounded(float, low=0, high=1, high_open=True), default=0.1,
                   help="warm-up as a fraction of the steps")
    p.add_argument("--max-length", type=cli.Bounded(int, low=8), default=256)
    p.add_argument("--fp32", action="store_true", help="train in fp32 instead of bf16 mixed precision")
    p.add_argument("--seed", type=cli.seed, default=42)
    p.add_argument("--dev-fraction", type=cli.Bounded(float, low=0, high=1, high_open=True), default=0.2,
                   help="training queries held out for model selection (--adapt: the documents whose "
                        "pseudo-queries are held out for the self-check)")
    # Separate from --seed so that every stage of a multi-stage recipe, and the --no-train choice, hold out the
    # same dev queries: a different split per stage would train on the next stage's dev queries.
    p.add_argument("--dev-seed", type=cli.seed, default=13, help="seed of the dev split (keep it fixed across stages)")
    p.add_argument("--eval-top-n", type=cli.positive_int, default=20,
                   help="candidates re-scored when scoring the dev split")
    p.add_argument("--config", help="first-stage config for mining (default configs/default.yaml; with --adapt "
                                    "the config stored in the index)")
    p.add_argument("--index", help="an index of the dataset's corpus built with --config (default: cached build; "
                                   "not with --adapt, which names its index itself)")
    p.add_argument("--cache-dir", default="/tmp/twostage-indexes", help="where the cached index is built")
    p.add_argument("--no-train", action="store_true",
                   help="do not train: score --base on the dev split and choose its interpolation (into --output; "
                        "--adapt: only the self-check of the first stage and --base)")
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
    """Train (or with --no-train only score) a reranker; see the module docstring and `--help`.

    Example:
        >>> from retrieval import cli
        >>> cli.main(["train-reranker", "--adapt", "/tmp/idx/my-corpus", "--output", "/tmp/adapted"])  # doctest: +SKIP
    """
    if args.loss == "mnrl" and args.in_batch_negatives < 1:
        # sentence-transformers' MNRL samples that many in-batch negatives and fails on 0 after all the mining
        raise ValueError("--in-batch-negatives 0 does not work with --loss mnrl; use 1 or more, or --loss bce")
    if args.adapt is not None:
        return _adapt(args)
    args.base = args.base or DATASET_BASE
    args.lr = args.lr or DATASET_LR
    args.skip_top = args.skip_top or 0
    args.pseudo_queries = args.pseudo_queries or 0
    args.negatives_from = args.negatives_from or "hybrid"
    args.config = args.config or str(cli.ROOT / "configs" / "default.yaml")
    return _train_on_qrels(args)


def _train_on_qrels(args: argparse.Namespace) -> int:
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
    cli.print_summary(summary, args.json)
    return 0


def _pseudo_query_metrics(score, held, ranked, docs, top_n: int, weights: list[float],
                          name: str) -> dict[str, float]:
    """MRR@10 and nDCG@10 of a reranker on the held-out pseudo-queries: each one's top `top_n` first-stage candidates
    re-scored, its source document (the only 'relevant' one) shown without the query text, as in training."""
    from rerank.training import shown_text
    from retrieval.evaluation import mean_metric, rerank_runs

    qrels = {f"{i}": {q.doc_id: 1} for i, q in enumerate(held)}
    runs: dict[float, dict[str, list[tuple[str, float]]]] = {w: {} for w in weights}
    for i, (q, cands) in enumerate(zip(held, ranked)):
        def text(doc_id: str, q=q) -> str:
            return q.positive if doc_id == q.doc_id else shown_text(q.kind, docs[doc_id])

        for w, run in rerank_runs(score, {f"{i}": q.query}, {f"{i}": cands}, text, top_n, weights).items():
            runs[w].update({k: sorted(v.items(), key=lambda x: -x[1]) for k, v in run.items()})
    out = {}
    for w in weights:
        label = name if w == 0 else f"{name} (interpolation {w:g})"
        for metric in ("mrr@10", "ndcg@10"):
            out[f"{metric} {label}"] = round(mean_metric(runs[w], qrels, metric), 4)
    return out


def _adapt(args: argparse.Namespace) -> int:
    """`--adapt INDEX_DIR`: pseudo-queries from the index's documents, negatives from its first stage, training,
    and the held-out pseudo-query self-check of the first stage, the base and the adapted reranker."""
    from sentence_transformers import CrossEncoder

    from index.directory import IndexDirectory
    from index.progress import bar
    from index.runtime.models import load_model
    from rerank.training import (
        ModelCard,
        TrainingConfig,
        adaptation_examples,
        corpus_pseudo_queries,
        save_fp16,
        split_dev,
        train_cross_encoder,
        write_model_card,
    )
    from retrieval import SearchPipeline
    from retrieval.config import load_config
    from retrieval.evaluation import mean_metric
    from retrieval.pipeline import stored_config

    started = time.perf_counter()
    if args.index is not None:
        raise ValueError("--index is for --dataset; with --adapt, INDEX_DIR is the index (drop --index)")
    args.base = args.base or ADAPT_BASE
    args.lr = args.lr or ADAPT_LR
    args.skip_top = ADAPT_SKIP_TOP if args.skip_top is None else args.skip_top
    cap = ADAPT_PSEUDO_QUERIES if args.pseudo_queries is None else args.pseudo_queries
    index = IndexDirectory.load(args.adapt)
    config = load_config(args.config) if args.config else stored_config(index)
    # The pipeline's own interpolation is the one the adapted reranker will be used with: reported beside w=0.
    interpolation = config.rerank.interpolation if config.rerank is not None else 0.5
    config.rerank = None  # the first stage only: the base reranker is loaded below, once
    config.index.path = index.path
    pipe = SearchPipeline(config, index=index)
    stage = args.negatives_from or pipe.first_stage
    if stage not in pipe.stages:
        raise ValueError(f"--negatives-from {stage}: the index's pipeline has stages {pipe.stages}")
    new_head = not _is_cross_encoder(args.base)

    docs = {d.doc_id: d for d in bar(index.store.iter_documents(), "reading documents", "doc",
                                     show=not args.quiet, total=len(index.store))}
    pseudo = corpus_pseudo_queries(docs.values(), args.seed)
    if not pseudo:
        raise ValueError(f"{index.path}: none of its {len(docs):,} documents yields a pseudo-query (each needs a "
                         "title or a sentence and 20 or more words besides); --adapt needs longer documents")
    if cap and cap < len(pseudo):
        pseudo = random.Random(args.seed).sample(pseudo, cap)
    # Held out by source document: a document's title and sentence queries share its text, so splitting them
    # would let training see the held-out pair's answer.
    _, dev_docs = split_dev({q.doc_id for q in pseudo}, args.dev_fraction, args.dev_seed)
    dev_set = set(dev_docs)
    train = [q for q in pseudo if q.doc_id not in dev_set]
    held = [q for q in pseudo if q.doc_id in dev_set]
    if not train:
        raise ValueError(f"all {len(pseudo)} pseudo-queries are held out; lower --dev-fraction")

    depth = max(args.candidates, args.eval_top_n)
    ranked: list[list[tuple[str, float]]] = []
    texts = [q.query for q in train + held]
    for start in bar(range(0, len(texts), 256), f"first stage ({stage})", "batch", show=not args.quiet):
        ranked += pipe.retrieve(texts[start:start + 256], stage=stage, top_k=depth)
    train_ranked, held_ranked = ranked[: len(train)], ranked[len(train):]
    examples = adaptation_examples(train, [[d for d, _ in r[: args.candidates]] for r in train_ranked], docs,
                                   args.negatives, args.seed, skip_top=args.skip_top)
    kinds = {k: sum(q.kind == k for q in train) for k in ("title", "sentence", "lead")}
    print(f"adapting on {len(examples):,} pseudo-queries from {len(docs):,} documents "
          f"({', '.join(f'{v:,} {k}' for k, v in kinds.items() if v)}); self-check: {len(held):,} held-out "
          f"pseudo-queries of {len(dev_set):,} documents", file=sys.stderr)

    import torch

    def scorer(model):
        def score(pairs):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
                return model.predict(pairs, batch_size=32, show_progress_bar=False)
        return score

    weights = sorted({0.0, interpolation})
    dev_metrics: dict[str, float | int | str] = {"held-out pseudo-queries": len(held),
                                                 "held-out documents": len(dev_set)}
    if held:
        qrels = {f"{i}": {q.doc_id: 1} for i, q in enumerate(held)}
        first = {f"{i}": r for i, r in enumerate(held_ranked)}
        for metric in ("mrr@10", "ndcg@10"):
            dev_metrics[f"{metric} {stage} (first stage)"] = round(mean_metric(first, qrels, metric), 4)
        if not new_head:  # a base without a head would score at random: nothing to compare
            base = load_model(args.base, "cross-encoder", CrossEncoder, device="cpu")
            base.max_length = args.max_length
            dev_metrics.update(_pseudo_query_metrics(scorer(base), held, held_ranked, docs, args.eval_top_n,
                                                     weights, "base reranker"))
            del base
    tcfg = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                          max_length=args.max_length, loss=args.loss, seed=args.seed, max_steps=args.max_steps,
                          in_batch_negatives=args.in_batch_negatives, warmup_ratio=args.warmup,
                          bf16=not args.fp32)
    steps = 0
    if not args.no_train:
        with contextlib.redirect_stdout(sys.stderr):  # the trainer logs to stdout: keep it for the summary
            model = train_cross_encoder(examples, args.base, args.output, tcfg)
        steps = int(model.training_steps)
        if held:
            dev_metrics.update(_pseudo_query_metrics(scorer(model), held, held_ranked, docs, args.eval_top_n,
                                                     weights, "adapted reranker"))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dev_split.json").write_text(json.dumps(
        {"index": str(index.path), "source": "pseudo-queries", "dev_seed": args.dev_seed,
         "dev_fraction": args.dev_fraction, "doc_ids": sorted(dev_set, key=lambda d: (len(d), d)),
         "pseudo_queries": [{"query": q.query, "doc_id": q.doc_id, "kind": q.kind} for q in held]}, indent=2))
    if args.no_train:
        (out / "dev_metrics.json").write_text(cli.to_json(dev_metrics, indent=2))
    else:
        save_fp16(model, out)
        card = ModelCard(
            base_model=args.base,
            training_data=(f"label-free adaptation to the {len(docs):,} documents of the index {index.path}: "
                           f"{len(examples):,} pseudo-queries ({', '.join(f'{v:,} {k}' for k, v in kinds.items())}"
                           f"), no relevance judgments; {args.negatives} hard negatives each from ranks "
                           f"{args.skip_top + 1}-{args.candidates} of our {stage} first stage (the source document "
                           f"and its duplicates excluded); {len(held):,} pseudo-queries of {len(dev_set):,} "
                           f"documents held out (dev seed {args.dev_seed})"),
            examples=len(examples), steps=steps, loss=args.loss,
            config={**vars(tcfg), "negatives": args.negatives, "negatives_from": stage,
                    "candidates": args.candidates, "skip_top": args.skip_top, "pseudo_queries": cap},
            dev_metrics=dev_metrics, new_head=new_head,
            dev_title=f"{SELF_CHECK[0].upper()}{SELF_CHECK[1:]}")
        write_model_card(out, card, extra_markdown=(
            "\nThe first stage saw each query verbatim in its source document, so its figures are inflated; the "
            "rerankers were shown the source without it. Only the base vs adapted comparison is like for like, "
            "and it is no relevance judgment: evaluate on judged queries (`twostage eval`) before relying on it.\n"))
    summary = {"output": str(out), "examples": len(examples), "steps": steps,
               "seconds": round(time.perf_counter() - started, 1), "dev": dev_metrics}
    cli.print_summary(summary, args.json)
    return 0
