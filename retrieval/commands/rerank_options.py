"""`twostage rerank-options`: nDCG@10 of every second-stage option (combination, re-scored depth, truncation)
side by side on one or more judged splits, from one reranking pass per `max_length` (cached under --scores-dir).

Use training or dev splits to choose (`DIR:train:IDS_FILE` picks a dev subset, e.g. the bundled reranker's
`dev_split.json`), test splits only to measure."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from retrieval import cli

SUMMARY = "Compare second-stage options (combination, top_n, max_length) on judged splits (nDCG@10)."
EXAMPLES = ("--dataset ../shared/datasets/scifact:train:index/runtime/bundled/minilm-l6-scifact/dev_split.json "
            "--dataset ../shared/datasets/cranfield:test --max-lengths 256",)


def _dataset(text: str) -> tuple[Path, str, Path | None]:
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: give DIR, DIR:SPLIT or DIR:SPLIT:IDS_FILE")
    split = parts[1] if len(parts) > 1 and parts[1] else "test"
    return Path(parts[0]), split, Path(parts[2]) if len(parts) > 2 else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", required=True, type=_dataset, metavar="DIR[:SPLIT[:IDS]]",
                   help="a BEIR folder, its qrels split (default test) and optionally a file of query ids to keep "
                        "(a JSON list, a JSON object with query_ids, or one id per line); repeatable")
    p.add_argument("--config", default=str(cli.ROOT / "configs" / "default.yaml"),
                   help="pipeline YAML with a rerank: block (its first stage and reranker are compared)")
    p.add_argument("--cache-dir", default=str(cli.ROOT / "indexes" / "eval"), help="where built indexes are kept")
    p.add_argument("--scores-dir", default=str(cli.ROOT / "indexes" / "rerank-scores"),
                   help="where reranker scores are cached (reused when dataset, queries and settings match)")
    p.add_argument("--top-n", type=cli.positive_int, default=20, help="candidates re-scored (the deepest option)")
    p.add_argument("--max-lengths", type=cli.int_list(cli.Bounded(int, low=8)), default=[256],
                   help="comma-separated reranker token limits to score at (default 256), besides the config's own "
                        "(every other option is measured at that); each is one reranking pass")
    p.add_argument("--json", action="store_true")


def _query_ids(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [line.strip() for line in text.splitlines() if line.strip()]
    ids = data.get("query_ids") if isinstance(data, dict) else data
    if not isinstance(ids, list):
        raise ValueError(f"{path}: expected a JSON list of query ids or an object with query_ids")
    return [str(i) for i in ids]


def run(args: argparse.Namespace) -> int:
    from index.cache import cached_index
    from retrieval import SearchPipeline
    from retrieval.benchmark.measure import machine
    from retrieval.config import load_config
    from retrieval.evaluation import load_beir
    from retrieval.evaluation.options import ScoredHeads, option_grid, option_table, score_heads, truncation_options
    from retrieval.scores import Combination

    cpu = machine()
    cpu_name = f"{cpu['cpu']} ({', '.join(cpu['isa'])}), load {cpu['load_average_at_start']}"
    config = load_config(args.config)
    if config.rerank is None:
        raise ValueError(f"{args.config} has no rerank: block; give a config with a reranker")
    shipped = Combination.of(config.rerank)
    depth, own = min(config.rerank.top_n, args.top_n), config.rerank.max_length or 512
    lengths = sorted({*args.max_lengths, own})  # the grid is measured at the config's own max_length
    options = [*option_grid(depth, own), *truncation_options(lengths, shipped, depth)]
    if config.rerank.top_n <= args.top_n:
        options.append(_shipped(config.rerank))
    columns, tables, seconds = [], {}, {}
    for path, split, ids_file in args.dataset:
        data = load_beir(path, split)
        queries = dict(data.queries)
        label = f"{path.name} {split}"
        if ids_file is not None:
            keep = set(_query_ids(ids_file))
            queries = {q: t for q, t in queries.items() if q in keep}
            if not queries:
                raise ValueError(f"{ids_file}: none of its query ids is a judged query of {path} {split}")
            label += f" ({ids_file.stem}, {len(queries)} queries)"
        index = cached_index(path, config.build_config(), args.cache_dir, show_progress=not args.quiet)
        pipe = SearchPipeline.from_index(index, config)
        key = _scores_key(path, split, sorted(queries), args.top_n, config)
        cache = Path(args.scores_dir) / f"{path.name}-{split}-{key}.json"
        heads = ScoredHeads.load(cache) if cache.is_file() else None
        heads = score_heads(pipe, queries, args.top_n, lengths, heads=heads, show_progress=not args.quiet)
        heads.save(cache)
        qrels = {q: r for q, r in data.qrels.items() if q in queries}
        tables[label] = {r["option"]: r for r in option_table(heads, qrels, options)}
        pairs = sum(min(len(r), args.top_n) for r in heads.first.values())
        seconds[label] = {n: round(1000 * s / max(pairs, 1), 2) for n, s in heads.seconds.items()}
        columns.append(label)
    names = [o.name for o in options if all(o.name in tables[c] for c in columns)]
    if args.json:
        cli.print_json({"config": args.config, "top_n": args.top_n, "cpu": cpu,
                        "ms_per_pair": seconds, "ndcg@10": {c: {n: round(tables[c][n]["ndcg@10"], 4)
                                                                 for n in names} for c in columns}})
        return 0
    print(f"second-stage options of {args.config} (nDCG@10, change against its first stage); CPU: {cpu_name}")
    width = max(len(n) for n in names) + 2
    print(" " * width + "".join(f"{c[:30]:>32}" for c in columns) + f"{'worst change':>14}")
    for n in names:
        cells = [tables[c][n] for c in columns]
        print(f"{n:<{width}}" + "".join(f"{x['ndcg@10']:>24.4f} ({x['change']:+.4f})" for x in cells)
              + f"{min(x['change'] for x in cells):>+14.4f}")
    for c in columns:
        print(f"reranking ms per pair, {c}: " + ", ".join(f"max_length {n}: {v}" for n, v in seconds[c].items()))
    return 0


# Settings that change how scores are combined or which max_length is read, not the scores themselves: cached
# scores stay valid across them.
_NOT_IN_SCORES = {"top_n", "interpolation", "combination", "normalization", "rrf_k", "full_agreement", "max_length",
                  "batch_size"}


def _scores_key(path: Path, split: str, qids: list[str], top_n: int, config) -> str:
    """What the cached scores depend on: the dataset split and queries, the depth, the first stage and reranker."""
    settings = config.model_dump(mode="json", exclude={"index": True, "output": True, "rerank": _NOT_IN_SCORES})
    text = json.dumps([str(path.resolve()), split, qids, top_n, settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _shipped(cfg) -> object:
    from retrieval.evaluation.options import Option
    from retrieval.scores import Combination

    return Option(f"the config's own (top_n={cfg.top_n}, max_length={cfg.max_length})", Combination.of(cfg),
                  top_n=cfg.top_n, max_length=cfg.max_length or 512)
