"""What an evaluation reports: per-query scores and runs of each stage, their table, JSON shape, paired tests,
recall curve, and TREC run files.

Example:
    >>> result = evaluate(pipe, data)  # doctest: +SKIP
    >>> result.table()  # doctest: +SKIP
    >>> result.compare("bm25", "hybrid", metric="ndcg@10")  # doctest: +SKIP
    >>> result.write_runs("runs/")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from retrieval.evaluation.errors import EvaluationError
from retrieval.evaluation.metrics import Qrels, Run, score_run, trec_scores
from retrieval.evaluation.significance import Significance, paired_test


@dataclass
class EvaluationResult:
    """Per-query scores and runs of each evaluated stage; `table()` gives one row per stage."""

    dataset: str
    split: str
    per_query: dict[str, pd.DataFrame]
    runs: dict[str, Run]
    qrels: Qrels
    seconds: dict[str, float] = field(default_factory=dict)
    issues: dict[str, int] = field(default_factory=dict)
    ignore_identical_ids: bool = False
    notes: list[str] = field(default_factory=list)  # the pipeline's one-line reports (reranker truncation, ...)

    @property
    def stages(self) -> list[str]:
        return list(self.per_query)

    @property
    def num_queries(self) -> int:
        return len(next(iter(self.per_query.values()))) if self.per_query else 0

    def table(self) -> pd.DataFrame:
        """Mean of each metric, one row per stage (NaN where the stage's ranking is too short for the metric)."""
        rows = {s: df.mean() for s, df in self.per_query.items()}
        out = pd.DataFrame(rows).T
        out.index.name = "stage"
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: dataset, split, num_queries, stages -> metric -> mean, seconds, issues, notes."""
        stages = {s: {m: round(float(v), 6) for m, v in row.items() if not pd.isna(v)}
                  for s, row in self.table().iterrows()}
        return {"dataset": self.dataset, "split": self.split, "num_queries": self.num_queries, "stages": stages,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}, "issues": dict(self.issues),
                "notes": list(self.notes)}

    def compare(self, a: str, b: str, metric: str = "ndcg@10",
                method: Literal["t-test", "randomization"] = "t-test", alpha: float = 0.05) -> Significance:
        """Paired test of stage `b` against stage `a` on `metric` over the same queries."""
        for stage in (a, b):
            if stage not in self.per_query:
                raise EvaluationError(f"stage {stage!r} was not evaluated; evaluated: {', '.join(self.stages)}")
            if metric not in self.per_query[stage]:
                raise EvaluationError(f"metric {metric!r} was not computed; computed: "
                                      f"{', '.join(self.per_query[stage].columns)}")
        x, y = self.per_query[a][metric], self.per_query[b][metric]
        if x.isna().any() or y.isna().any():
            raise EvaluationError(f"{metric} is not available for both {a} and {b} (ranking too short)")
        p = paired_test(x.to_numpy(), y.loc[x.index].to_numpy(), method)
        return Significance(a, b, metric, method, len(x), float(x.mean()), float(y.mean()),
                            float(y.mean() - x.mean()), p, alpha)

    def significance(self, baseline: str | None = None, metric: str = "ndcg@10",
                     method: Literal["t-test", "randomization"] = "t-test", alpha: float = 0.05) -> pd.DataFrame:
        """Each other stage against `baseline` (default: the first stage), one row per stage."""
        baseline = baseline or self.stages[0]
        rows = [asdict(self.compare(baseline, s, metric, method, alpha)) for s in self.stages if s != baseline]
        out = pd.DataFrame(rows, columns=[f.name for f in Significance.__dataclass_fields__.values()])
        out["significant"] = out["p_value"] < alpha
        return out.set_index("b")

    def recall_curve(self, ks: Sequence[int] = (1, 2, 5, 10, 20, 50, 100)) -> pd.DataFrame:
        """Mean recall@k by pytrec_eval for each stage (rows) and k (columns)."""
        rows = {}
        for stage, run in self.runs.items():
            per_q = score_run(run, self.qrels, [f"recall@{k}" for k in ks],
                              ignore_identical_ids=self.ignore_identical_ids).mean()
            rows[stage] = [per_q[f"recall@{k}"] for k in ks]
        out = pd.DataFrame(rows, index=pd.Index(list(ks), name="k")).T
        out.index.name = "stage"
        return out

    def write_runs(self, directory: str | Path, tag: str | None = None) -> list[Path]:
        """One TREC run file per stage (`qid Q0 docid rank score tag`), readable by trec_eval.

        The format's columns are separated by whitespace, so an id (or tag) holding any (a space, tab, newline)
        or an empty one cannot be written: a `ValueError` names it before any file is written.
        """
        for stage, run in self.runs.items():
            for kind, value in [("tag", tag or stage)] + [("query id", q) for q in run] + [
                    ("document id", d) for ranked in run.values() for d, _ in ranked]:
                if not value or any(c.isspace() for c in value):
                    reason = "contains whitespace" if value else "is empty"
                    raise ValueError(f"cannot write a TREC run: {kind} {value!r} {reason}, and the format's columns "
                                     "are whitespace-separated; rename it in the dataset")
        out_dir = Path(directory).expanduser()
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for stage, run in self.runs.items():
            path = out_dir / f"{self.dataset}-{self.split}-{stage}.trec"
            write_trec_run(run, path, tag or stage)
            written.append(path)
        return written


def write_trec_run(run: Run, path: str | Path, tag: str = "twostage") -> Path:
    """Write `run` in TREC format with the same tie-free scores that were evaluated."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as fh:
        for q, ranked in run.items():
            for rank, (d, s) in enumerate(trec_scores(ranked).items(), start=1):
                fh.write(f"{q} Q0 {d} {rank} {s!r} {tag}\n")
    return path
