"""A tiny BEIR folder cut from the sample corpus, for evaluation tests (written into a test's tmp dir)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import SAMPLE_CORPUS

# query id -> (query text, {doc id: graded relevance}); 0 = judged not relevant.
QUERIES = {
    "q1": ("why does the sea have tides", {"tides": 2, "black-holes": 0}),
    "q2": ("how do vaccines train the immune system", {"vaccines": 2, "antibiotics": 1}),
    "q3": ("BM25 ranking function term frequency", {"bm25": 2, "cross-encoder": 1, "bi-encoder": 1}),
    "q4": ("brewing coffee", {"coffee": 1}),
    "q5": ("volcanic eruptions and plate tectonics", {"volcanoes": 2, "plate-tectonics": 2}),
    "q6": ("how do solar panels work", {"solar-panels": 3}),
}


def write_beir(root: Path, queries: dict | None = None, extra_qrels: str = "", unjudged: int = 1) -> Path:
    """corpus.jsonl (the sample corpus), queries.jsonl (plus `unjudged` queries without judgments) and
    qrels/test.tsv with a header; `extra_qrels` is appended verbatim."""
    queries = QUERIES if queries is None else queries
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(SAMPLE_CORPUS.read_text(encoding="utf-8"), encoding="utf-8")
    lines = [json.dumps({"_id": q, "text": text}) for q, (text, _) in queries.items()]
    lines += [json.dumps({"_id": f"unjudged{i}", "text": "nothing judged"}) for i in range(unjudged)]
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, (_, docs) in queries.items()
                                             for d, r in docs.items()]
    (root / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n" + extra_qrels, encoding="utf-8")
    return root
