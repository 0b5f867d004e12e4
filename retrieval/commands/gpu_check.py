"""`twostage gpu-check`: the cross-encoder reranker on a CUDA GPU: pairs/s at each precision (fp16, fp32) and batch
size (32, 64, 128, 256), and a check that the GPU's scores rank the same pairs as CPU fp32 does (Spearman >= 0.999).

Pairs come from a BEIR folder: each judged test query with its judged documents plus seeded random ones, the same
number per query, `--pairs` in all (`retrieval.benchmark.gpu.beir_pairs`). Without a CUDA GPU it stops at once with
one line saying so; it exits 1 when a GPU run fails the check. The library is `retrieval/benchmark/gpu.py`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from retrieval import cli

SUMMARY = "Reranker throughput on a CUDA GPU (fp16/fp32 x batch sizes) and GPU-vs-CPU score agreement (Spearman)."
EXAMPLES = ("--dataset ../shared/datasets/scifact --pairs 2000",
            "--model bundled:minilm-l6-scifact --max-length 256 --batch-sizes 32,64,128,256 --precisions fp16,fp32 "
            "--json")
TORCH_PRECISIONS = ("fp16", "fp32", "bf16")


def precision_list(text: str) -> tuple[str, ...]:
    """`--precisions`: comma-separated torch precisions."""
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in TORCH_PRECISIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"must be comma-separated, each one of {', '.join(TORCH_PRECISIONS)}, "
                                         f"got {text!r}")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    from retrieval.benchmark.gpu import BATCH_SIZES, PRECISIONS

    positive = cli.positive_int
    p.add_argument("--dataset", default=str(cli.ROOT.parent / "shared" / "datasets" / "scifact"),
                   help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) the pairs come from "
                        "(default: ../shared/datasets/scifact beside the checkout)")
    p.add_argument("--split", default="test", help="qrels split whose queries are used (default: test)")
    p.add_argument("--pairs", type=positive, default=2000, help="(query, document) pairs scored per call")
    p.add_argument("--seed", type=cli.seed, default=0, help="seed of the random documents added to each query")
    p.add_argument("--model", default="bundled:minilm-l6-scifact", help="cross-encoder name or path")
    p.add_argument("--max-length", type=cli.Bounded(int, low=8), default=256, help="tokens per pair")
    p.add_argument("--batch-sizes", type=cli.int_list(positive), default=list(BATCH_SIZES),
                   help="pairs per forward pass, comma-separated")
    p.add_argument("--precisions", type=precision_list, default=PRECISIONS,
                   help=f"torch precisions on the GPU, comma-separated ({', '.join(TORCH_PRECISIONS)})")
    p.add_argument("--repeats", type=positive, default=3, help="timed calls per row (the median is reported)")
    p.add_argument("--device", default="cuda", help="the CUDA device (cuda, cuda:1)")
    p.add_argument("--activation", choices=("auto", "identity", "sigmoid"), default="auto",
                   help="score activation (auto: the model's own, as the pipeline ranks)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")


def run(args: argparse.Namespace) -> int:
    from retrieval.benchmark import gpu

    # First, so that a machine without a GPU hears so at once, before a dataset or model is loaded.
    gpu_name = gpu.require_cuda(args.device)
    import torch

    from retrieval.benchmark import load_average, machine
    from retrieval.commands.benchmark import table

    started = time.perf_counter()
    m = machine()
    pairs = gpu.beir_pairs(args.dataset, args.pairs, args.split, args.seed)
    section = gpu.measure(pairs, args.model, args.max_length, args.device, args.precisions, args.batch_sizes,
                          args.repeats, args.activation, quiet=args.quiet)
    m["load_average_at_end"] = load_average()
    report = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "gpu": gpu_name, "device": args.device,
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "fp32_matmul_precision": torch.get_float32_matmul_precision(), "machine": m,
              "dataset": str(args.dataset), "split": args.split, "seed": args.seed, **section.report,
              "seconds": time.perf_counter() - started}
    if args.json:
        cli.print_json(report)
        return 0 if section.report["passed"] else 1
    print(f"# twostage GPU check: {cli.terminal_safe(gpu_name)} ({args.device}), torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}, fp32 matmul precision {report['fp32_matmul_precision']}); CPU {m['cpu']}, "
          f"{m['usable_cpus']} usable CPUs, load average {m['load_average_at_start']}")
    print(f"pairs: {len(pairs)} from {args.dataset} ({args.split} queries, judged documents plus random ones, "
          f"seed {args.seed})")
    for t in section.tables:
        table(t)
    print()
    for note in section.notes:
        print(note)
    if section.report["passed"]:
        print(f"check passed: every GPU run ranks the pairs as CPU fp32 does (Spearman >= "
              f"{section.report['min_spearman']})")
    print(f"{report['seconds']:.0f} s in all; load average at the end {m['load_average_at_end']}")
    return 0 if section.report["passed"] else 1
