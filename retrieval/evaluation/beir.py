"""Loading one split of a BEIR-format folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), with the
checks that say what is wrong with it.

Example:
    >>> from retrieval.evaluation import load_beir
    >>> data = load_beir("../shared/datasets/scifact", split="test")  # doctest: +SKIP
    >>> len(data.queries), data.issues["unjudged_queries"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from index.documents import read_corpus
from retrieval.evaluation.errors import EvaluationError

if TYPE_CHECKING:
    from retrieval.evaluation.metrics import Qrels

logger = logging.getLogger(__name__)


@dataclass
class BeirDataset:
    """One split of a BEIR folder: the judged queries (file order), graded qrels, and what loading found wrong."""

    path: Path
    split: str
    queries: dict[str, str]
    qrels: Qrels
    doc_ids: frozenset[str] | None = None
    issues: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.resolve().name


def load_beir(path: str | Path, split: str = "test", *, max_queries: int | None = None,
              check_corpus: bool = True) -> BeirDataset:
    """Load `queries.jsonl` and `qrels/<split>.tsv` (and, with `check_corpus`, the ids of `corpus.jsonl`).

    As BEIR does, queries without judgments in the split are skipped (counted in `issues["unjudged_queries"]`).
    Qrels rows naming an unknown query are dropped and rows naming a document missing from the corpus are kept
    (nobody can retrieve it); both are counted and logged. `max_queries` keeps the first N judged queries.
    """
    root = Path(path).expanduser()
    _check_beir_folder(root, split)
    if max_queries is not None and (isinstance(max_queries, bool) or max_queries < 1):
        raise EvaluationError(f"max_queries must be a positive integer, got {max_queries!r}")
    qrels_file = root / "qrels" / f"{split}.tsv"
    rows, duplicates = _read_qrels(qrels_file)
    if not rows:
        raise EvaluationError(f"{qrels_file}: the {split!r} split has no judgments (the file holds no rows)")
    all_queries = _read_queries(root / "queries.jsonl")
    issues = {"qrels_rows": len(rows), "duplicate_rows": duplicates, "unknown_query_rows": 0,
              "unknown_document_rows": 0, "unjudged_queries": 0}
    unknown_q = sorted({q for q, _, _ in rows if q not in all_queries})
    if unknown_q:
        issues["unknown_query_rows"] = sum(1 for q, _, _ in rows if q not in all_queries)
        logger.warning("%s: %d rows name %d queries that are not in queries.jsonl (e.g. %s); they are ignored",
                       qrels_file, issues["unknown_query_rows"], len(unknown_q), ", ".join(map(repr, unknown_q[:3])))
    doc_ids: frozenset[str] | None = None
    if check_corpus:
        doc_ids = frozenset(doc.doc_id for doc in read_corpus(root))
        missing = sorted({d for _, d, _ in rows if d not in doc_ids})
        if missing:
            issues["unknown_document_rows"] = sum(1 for _, d, _ in rows if d not in doc_ids)
            logger.warning("%s: %d rows name %d documents that are not in the corpus or have no text (e.g. %s); "
                           "they stay in the qrels (as in BEIR): a relevant one is a document nobody can find",
                           qrels_file, issues["unknown_document_rows"], len(missing),
                           ", ".join(map(repr, missing[:3])))
    qrels: Qrels = {}
    for q, d, score in rows:
        if q in all_queries:
            qrels.setdefault(q, {})[d] = score
    queries = {q: text for q, text in all_queries.items() if q in qrels}
    issues["unjudged_queries"] = len(all_queries) - len(queries)
    if issues["unjudged_queries"]:
        logger.info("%s: %d of %d queries have no judgments in %r; skipped (as BEIR does)",
                    root, issues["unjudged_queries"], len(all_queries), split)
    if not queries:
        raise EvaluationError(f"{qrels_file}: none of its {len(rows)} rows names a query in queries.jsonl; "
                              "check that the query ids match")
    if max_queries is not None and max_queries < len(queries):
        queries = dict(list(queries.items())[:max_queries])
        qrels = {q: qrels[q] for q in queries}
    return BeirDataset(root, split, queries, qrels, doc_ids, issues)


def _check_beir_folder(root: Path, split: str) -> None:
    layout = "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
    if not root.exists():
        raise EvaluationError(f"{root}: no such folder; pass a BEIR dataset folder ({layout})")
    if not root.is_dir():
        raise EvaluationError(f"{root} is a file, not a BEIR dataset folder ({layout})")
    missing = [n for n in ("corpus.jsonl", "queries.jsonl", "qrels") if not (root / n).exists()]
    if missing:
        raise EvaluationError(f"{root} is not a BEIR dataset folder: no {' and no '.join(missing)} ({layout})")
    if not (root / "qrels" / f"{split}.tsv").is_file():
        splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise EvaluationError(f"{root}: no qrels/{split}.tsv for split {split!r}; splits available: "
                              f"{', '.join(splits) or 'none'}")


def _read_qrels(path: Path) -> tuple[list[tuple[str, str, int]], int]:
    """Rows `query-id, corpus-id, score` (a header line is optional); the last of duplicate rows wins."""
    out: dict[tuple[str, str], int] = {}
    duplicates = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 3:
                    raise EvaluationError(f"{path}:{lineno}: expected 3 tab-separated columns "
                                          f"(query-id, corpus-id, score), got {len(row)}: {row!r}")
                q, d, raw = (c.strip() for c in row[:3])
                try:
                    score = int(float(raw))
                except ValueError:
                    if lineno == 1:
                        continue  # the header
                    raise EvaluationError(f"{path}:{lineno}: relevance score {raw!r} is not a number") from None
                if (q, d) in out:
                    duplicates += 1
                out[(q, d)] = score
    except UnicodeDecodeError:
        raise EvaluationError(f"{path}: not valid UTF-8; re-encode the file as UTF-8") from None
    if duplicates:
        logger.warning("%s: %d duplicate (query, document) rows; the last one of each wins", path, duplicates)
    return [(q, d, s) for (q, d), s in out.items()], duplicates


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvaluationError(f"{path}:{lineno}: invalid JSON ({exc.msg}); each line must be one JSON "
                                          'object like {"_id": "q1", "text": "..."}') from None
                if not isinstance(record, dict) or record.get("_id", record.get("id")) is None \
                        or not isinstance(record.get("text"), str):
                    raise EvaluationError(f"{path}:{lineno}: a query needs an \"_id\" and a string \"text\"")
                queries[str(record.get("_id", record.get("id"))).strip()] = record["text"]
    except UnicodeDecodeError:
        raise EvaluationError(f"{path}: not valid UTF-8; re-encode the file as UTF-8") from None
    return queries
