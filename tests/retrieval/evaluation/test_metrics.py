from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval

from retrieval.evaluation import EvaluationError, score_run, trec_scores
from tests.retrieval.evaluation.helpers import ranked

ALL = ["ndcg@10", "mrr@10", "recall@100", "map@100", "p@10"]
QRELS = {"q1": {"a": 2, "b": 1, "n": 0}}


def dcg(gains: list[int]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


# -- metrics: known answers -----------------------------------------------------------------------------------


def test_perfect_run_scores_one():
    row = score_run({"q1": ranked("a", "b", "x", "y")}, QRELS, ALL).loc["q1"]
    assert row["ndcg@10"] == pytest.approx(1.0)
    assert row["mrr@10"] == pytest.approx(1.0)
    assert row["recall@100"] == pytest.approx(1.0)
    assert row["map@100"] == pytest.approx(1.0)
    assert row["p@10"] == pytest.approx(0.2)


def test_reversed_run_uses_graded_gains():
    row = score_run({"q1": ranked("x", "y", "b", "a")}, QRELS, ALL).loc["q1"]
    assert row["ndcg@10"] == pytest.approx(dcg([0, 0, 1, 2]) / dcg([2, 1]))
    assert row["mrr@10"] == pytest.approx(1 / 3)
    assert row["map@100"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert row["recall@100"] == pytest.approx(1.0)
    assert row["p@10"] == pytest.approx(0.2)


def test_grade_order_matters_and_zero_is_not_relevant():
    swapped = score_run({"q1": ranked("b", "a")}, QRELS, ["ndcg@10"]).at["q1", "ndcg@10"]
    assert swapped == pytest.approx(dcg([1, 2]) / dcg([2, 1]))
    assert swapped < 1.0
    row = score_run({"q1": ranked("n", "a", "b")}, QRELS, ["mrr@10", "p@10"]).loc["q1"]
    assert row["mrr@10"] == pytest.approx(0.5)
    assert row["p@10"] == pytest.approx(0.2)


def test_mrr_is_cut_at_k():
    run = {"q1": ranked(*[f"x{i}" for i in range(10)], "a")}
    row = score_run(run, QRELS, ["mrr@10", "mrr@20", "recall@100", "p@10"]).loc["q1"]
    assert row["mrr@10"] == 0.0
    assert row["mrr@20"] == pytest.approx(1 / 11)
    assert row["recall@100"] == pytest.approx(0.5)
    assert row["p@10"] == 0.0


def test_ties_keep_the_pipeline_order_not_trec_evals_docid_order():
    run = {"q1": [("a", 1.0), ("b", 1.0)]}
    qrels = {"q1": {"b": 1}}
    assert score_run(run, qrels, ["mrr@10"]).at["q1", "mrr@10"] == pytest.approx(0.5)
    raw = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate({"q1": dict(run["q1"])})
    assert raw["q1"]["recip_rank"] == pytest.approx(1.0)  # what the raw tie-break would have claimed
    # pytrec_eval keeps scores as float32: a float64-only difference is a tie there too.
    close = {"q1": [("a", 1.0), ("b", 1.0 - 1e-12)]}
    assert score_run(close, qrels, ["mrr@10"]).at["q1", "mrr@10"] == pytest.approx(0.5)
    scores = list(trec_scores([("a", 3.0), ("b", 3.0), ("c", 3.0), ("d", 5.0)]).values())
    assert all(x > y for x, y in zip(scores, scores[1:]))
    assert scores[0] == 3.0 and scores[1] == pytest.approx(3.0)


def test_missing_query_scores_zero_and_unjudged_run_queries_are_ignored():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    table = score_run({"q1": ranked("a"), "q9": ranked("a")}, qrels, ALL)
    assert list(table.index) == ["q1", "q2"]
    assert (table.loc["q2"] == 0).all()
    assert table.at["q1", "ndcg@10"] == pytest.approx(1.0)


def test_ignore_identical_ids():
    qrels = {"d1": {"d2": 1}}
    run = {"d1": ranked("d1", "d2")}
    assert score_run(run, qrels, ["mrr@10"]).at["d1", "mrr@10"] == pytest.approx(0.5)
    assert score_run(run, qrels, ["mrr@10"], ignore_identical_ids=True).at["d1", "mrr@10"] == pytest.approx(1.0)


def test_matches_pytrec_eval_on_a_random_run():
    rng = np.random.default_rng(3)
    docs = [f"d{i}" for i in range(300)]
    qrels = {f"q{q}": {d: int(rng.integers(0, 4)) for d in rng.choice(docs, 8, replace=False)} for q in range(15)}
    run = {q: sorted(((d, float(s)) for d, s in zip(docs, rng.random(len(docs)))), key=lambda x: -x[1])[:200]
           for q in qrels}
    ours = score_run(run, qrels, ["ndcg@10", "recall@100", "recall@1000", "map@100", "p@10"])
    measures = {"ndcg_cut.10", "recall.100,1000", "map_cut.100", "P.10"}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate({q: dict(r) for q, r in run.items()})
    for q in qrels:
        assert ours.at[q, "ndcg@10"] == pytest.approx(ref[q]["ndcg_cut_10"])
        assert ours.at[q, "recall@100"] == pytest.approx(ref[q]["recall_100"])
        assert ours.at[q, "recall@1000"] == pytest.approx(ref[q]["recall_1000"])
        assert ours.at[q, "map@100"] == pytest.approx(ref[q]["map_cut_100"])
        assert ours.at[q, "p@10"] == pytest.approx(ref[q]["P_10"])
    assert ours["recall@1000"].mean() > ours["recall@100"].mean()


def test_unknown_metric():
    with pytest.raises(EvaluationError, match="unknown metric 'ndcg'"):
        score_run({}, QRELS, ["ndcg"])
