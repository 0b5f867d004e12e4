"""Second-stage options side by side: score each judged query's first-stage head with the reranker once (per
`max_length`), then rank it under every combination (`retrieval.scores.Combination`) and re-scored depth, and
report nDCG@10 of each against the first stage.

The rankings are `retrieval.scores.rerank_list`'s, the pipeline's own second stage, so an option measured here
ranks exactly as `rerank:` settings with the same values rank in `SearchPipeline.query` (on an unchunked index:
one passage per document, `model_text(title, text)`, as the pipeline builds it).

Example:
    >>> from retrieval.evaluation.options import option_grid, option_table, score_heads
    >>> heads = score_heads(pipe, data, top_n=20, max_lengths=[256])  # doctest: +SKIP
    >>> option_table(heads, data.qrels, option_grid(20))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.evaluation.metrics import mean_metric
from retrieval.scores import Combination, rerank_list

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Option:
    """One second-stage setting: its re-scored depth, the reranker's `max_length`, and the combination."""

    name: str
    combination: Combination | None  # None: the first stage alone
    top_n: int = 20
    max_length: int = 256


def option_grid(top_n: int = 20, max_length: int = 256) -> list[Option]:
    """The explored options, each re-scoring `top_n` candidates at `max_length` tokens (the depth options: fewer)."""
    options = [Option("first stage alone", None), Option("reranker alone", Combination(0.0))]
    for norm in ("minmax", "zscore"):
        options += [Option(f"interpolate {norm} w={w}", Combination(w, "interpolate", norm))
                    for w in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
    for k in (10, 60):
        options += [Option(f"rrf k={k} w={w}", Combination(w, "rrf", rrf_k=k)) for w in (0.3, 0.5, 0.7)]
    for norm in ("minmax", "zscore"):
        options += [Option(f"adaptive {norm} w={w} full={a}", Combination(w, "adaptive", norm, full_agreement=a))
                    for w in (0.3, 0.5) for a in (0.3, 0.5, 0.7)]
    options = [replace(o, top_n=top_n, max_length=max_length) for o in options]
    options += [Option(f"interpolate minmax w=0.5 top_n={n}", Combination(0.5), top_n=n, max_length=max_length)
                for n in (5, 10) if n < top_n]
    return options


OPTIONS: list[Option] = option_grid()


def truncation_options(lengths: Iterable[int], combination: Combination, top_n: int = 20) -> list[Option]:
    """The same combination and depth at each `max_length`."""
    return [Option(f"max_length={n}", combination, top_n=top_n, max_length=n) for n in lengths]


@dataclass
class ScoredHeads:
    """Each query's first-stage ranking and the reranker's scores of its first `top_n` candidates, per
    `max_length`; `seconds[max_length]` is the reranking time of all those pairs."""

    first: dict[str, list[tuple[str, float]]]
    scores: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)
    top_n: int = 20

    def to_json(self) -> dict[str, Any]:
        return {"top_n": self.top_n, "first": self.first, "scores": {str(n): s for n, s in self.scores.items()},
                "seconds": {str(n): s for n, s in self.seconds.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScoredHeads:
        return cls(first={q: [(d, float(s)) for d, s in r] for q, r in data["first"].items()},
                   scores={int(n): s for n, s in data["scores"].items()},
                   seconds={int(n): float(s) for n, s in data["seconds"].items()}, top_n=int(data["top_n"]))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json()), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> ScoredHeads:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def score_heads(pipe: Any, queries: Mapping[str, str], top_n: int, max_lengths: Sequence[int],
                reranker_for: Any = None, heads: ScoredHeads | None = None,
                show_progress: bool = False) -> ScoredHeads:
    """First-stage rankings of `queries` by `pipe`, and the reranker's scores of each head at every `max_length`
    not already in `heads` (a cache from an earlier run with the same first stage and `top_n`).

    Parameters:
        pipe: a `SearchPipeline` with a reranker (its `config.rerank` gives the model and backend).
        queries: query id -> text.
        top_n: how many first-stage candidates are re-scored (the deepest option's `top_n`).
        max_lengths: token limits to score at (each scores every pair once).
        reranker_for: `max_length -> reranker` (default: a `CrossEncoderReranker` of `pipe.config.rerank` with
            that `max_length`).
    """
    from rerank.cross_encoder import CrossEncoderReranker

    if pipe.config.rerank is None:
        raise ValueError("the pipeline has no rerank: block; give a config with a reranker")
    qids = sorted(queries)
    if heads is None or heads.top_n != top_n or set(heads.first) != set(qids):
        ranked = pipe.retrieve([queries[q] for q in qids], stage=pipe.first_stage)
        heads = ScoredHeads(first={q: [(d, float(s)) for d, s in r] for q, r in zip(qids, ranked)}, top_n=top_n)
    docs = pipe.index.store.get({d for q in qids for d, _ in heads.first[q][:top_n]})
    pairs = [(queries[q], pipe.rerank_text(queries[q], docs[d]["title"], docs[d]["text"])) for q in qids
             for d, _ in heads.first[q][:top_n]]
    for n in max_lengths:
        if n in heads.scores:
            continue
        if reranker_for is not None:
            reranker = reranker_for(n)
        elif pipe.reranker is not None and getattr(pipe.reranker, "max_length", None) == n:
            reranker = pipe.reranker
        else:
            reranker = CrossEncoderReranker(config=pipe.config.rerank.model_copy(update={"max_length": n}))
        start = time.perf_counter()
        flat = np.asarray(reranker.predict(pairs, show_progress=show_progress), dtype=np.float64)
        heads.seconds[n] = time.perf_counter() - start
        at, per_query = 0, {}
        for q in qids:
            k = len(heads.first[q][:top_n])
            per_query[q] = flat[at : at + k].tolist()
            at += k
        heads.scores[n] = per_query
        logger.info("max_length %d: %d pairs re-scored in %.1f s", n, len(pairs), heads.seconds[n])
    return heads


def option_run(heads: ScoredHeads, option: Option) -> dict[str, list[tuple[str, float]]]:
    """Each query's ranking under `option` (the first stage's when its combination is None)."""
    if option.combination is None:
        return dict(heads.first)
    if option.top_n > heads.top_n:
        raise ValueError(f"option {option.name!r} re-scores {option.top_n} candidates; the scores hold "
                         f"{heads.top_n} (score with a larger top_n)")
    scores = heads.scores[option.max_length]
    return {q: rerank_list(first, np.asarray(scores[q][: option.top_n]), option.combination)
            for q, first in heads.first.items()}


def option_table(heads: ScoredHeads, qrels: Mapping[str, Mapping[str, int]],
                 options: Sequence[Option]) -> list[dict[str, Any]]:
    """nDCG@10 of each option (those whose `max_length` and depth were scored) and its change against the first
    stage."""
    base = mean_metric(option_run(heads, Option("first", None)), qrels, "ndcg@10")
    rows = []
    for option in options:
        if option.combination is not None and (option.max_length not in heads.scores or option.top_n > heads.top_n):
            continue
        value = mean_metric(option_run(heads, option), qrels, "ndcg@10")
        rows.append({"option": option.name, "ndcg@10": value, "change": value - base})
    return rows
