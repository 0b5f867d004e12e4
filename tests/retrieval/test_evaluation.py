from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import pytrec_eval
from scipy import stats

from retrieval import SearchPipeline
from retrieval.config import PipelineConfig, load_config
from retrieval.evaluation import (
    EvaluationError,
    cached_index,
    evaluate,
    index_settings,
    load_beir,
    paired_test,
    score_run,
    trec_scores,
    write_trec_run,
)
from tests.beir_data import QUERIES, write_beir
from tests.conftest import pipeline_config

ALL = ["ndcg@10", "mrr@10", "recall@100", "map@100", "p@10"]
QRELS = {"q1": {"a": 2, "b": 1, "n": 0}}


def ranked(*ids: str) -> list[tuple[str, float]]:
    return [(d, float(len(ids) - i)) for i, d in enumerate(ids)]


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


# -- significance ---------------------------------------------------------------------------------------------


def test_paired_tests():
    rng = np.random.default_rng(0)
    a = rng.random(60)
    better = a + 0.2 + rng.normal(0, 0.05, 60)
    assert paired_test(a, a) == 1.0
    assert paired_test(a, better) < 1e-6
    assert paired_test(a, better) == pytest.approx(stats.ttest_rel(better, a).pvalue)
    assert paired_test(a, better, "randomization") < 0.01
    assert paired_test(a, better, "randomization") == paired_test(a, better, "randomization")
    noise = a + np.tile([0.1, -0.1], 30)
    assert paired_test(a, noise) > 0.9
    assert paired_test(a, noise, "randomization") > 0.9
    with pytest.raises(ValueError, match="unknown test"):
        paired_test(a, better, "wilcoxon")
    with pytest.raises(ValueError, match="equal length"):
        paired_test(a, better[:5])


# -- loading --------------------------------------------------------------------------------------------------


def test_load_beir_keeps_grades_and_skips_unjudged(tmp_path, caplog):
    data = load_beir(write_beir(tmp_path, unjudged=2))
    assert list(data.queries) == list(QUERIES)
    assert data.qrels["q2"] == {"vaccines": 2, "antibiotics": 1}
    assert data.qrels["q1"]["black-holes"] == 0
    assert data.issues["unjudged_queries"] == 2
    assert data.issues["qrels_rows"] == sum(len(docs) for _, docs in QUERIES.values())
    assert data.issues["unknown_query_rows"] == data.issues["unknown_document_rows"] == 0
    assert data.name == tmp_path.name and data.split == "test"
    assert len(load_beir(tmp_path, max_queries=2).qrels) == 2


def test_load_beir_counts_unknown_ids_without_failing(tmp_path, caplog):
    write_beir(tmp_path, extra_qrels="nope\ttides\t1\nnope\tcoffee\t1\nq1\tno-such-doc\t1\nq4\tcoffee\t2\n")
    with caplog.at_level("WARNING"):
        data = load_beir(tmp_path)
    assert data.issues["unknown_query_rows"] == 2
    assert data.issues["unknown_document_rows"] == 1
    assert data.issues["duplicate_rows"] == 1
    assert "nope" not in data.qrels
    assert data.qrels["q1"]["no-such-doc"] == 1  # still judged: it counts against recall
    assert data.qrels["q4"]["coffee"] == 2
    assert "not in queries.jsonl" in caplog.text and "not in the corpus" in caplog.text


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: (p / "qrels" / "test.tsv").unlink(), r"no qrels/test\.tsv for split 'test'; splits available: "
                                                        r"dev"),
        (lambda p: (p / "queries.jsonl").unlink(), r"is not a BEIR dataset folder: no queries\.jsonl"),
        (lambda p: (p / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"), r"has no judgments"),
        (lambda p: (p / "qrels" / "test.tsv").write_text("zz\ttides\t1\n"), r"none of its 1 rows names a query"),
        (lambda p: (p / "qrels" / "test.tsv").write_text("h\th\th\nq1\ttides\thigh\n"), r"test\.tsv:2: relevance"),
        (lambda p: (p / "qrels" / "test.tsv").write_text("q1\ttides\n"), r"test\.tsv:1: expected 3 tab-separated"),
        (lambda p: (p / "queries.jsonl").write_text('{"_id": "q1"}\n'), r"queries\.jsonl:1: a query needs"),
    ],
)
def test_load_beir_bad_input(tmp_path, setup, message):
    write_beir(tmp_path)
    (tmp_path / "qrels" / "dev.tsv").write_text("q1\ttides\t1\n")
    setup(tmp_path)
    with pytest.raises(EvaluationError, match=message):
        load_beir(tmp_path)


def test_load_beir_not_a_folder(tmp_path):
    with pytest.raises(EvaluationError, match="no such folder"):
        load_beir(tmp_path / "missing")
    (tmp_path / "file.jsonl").write_text("{}\n")
    with pytest.raises(EvaluationError, match="is a file, not a BEIR dataset folder"):
        load_beir(tmp_path / "file.jsonl")
    with pytest.raises(EvaluationError, match="no corpus.jsonl and no queries.jsonl and no qrels"):
        load_beir(tmp_path)


# -- running a pipeline ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return load_beir(write_beir(tmp_path_factory.mktemp("beir")))


def test_evaluate_every_stage_of_a_real_pipeline(sample_index, tiny_bi_encoder, tiny_cross_encoder, tiny_data,
                                                 tmp_path):
    config = pipeline_config(sample_index, tiny_bi_encoder)
    config["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 5, "device": "cpu"}
    pipe = SearchPipeline.from_config(config)
    result = evaluate(pipe, tiny_data, show_progress=False)
    assert result.stages == pipe.stages == ["bm25", "dense", "hybrid", "rerank"]
    table = result.table()
    assert list(table.index) == result.stages and result.num_queries == len(QUERIES)
    # The stages rank 20 of 24 documents: recall@100 and @1000 would be meaningless, so they are left out.
    assert table["recall@1000"].isna().all() and table["recall@100"].isna().all()
    assert table["ndcg@10"].between(0, 1).all() and table.loc["bm25", "ndcg@10"] > 0
    report = json.loads(json.dumps(result.to_dict()))
    assert report["num_queries"] == len(QUERIES) and report["split"] == "test"
    assert set(report["stages"]) == set(result.stages)
    assert set(report["stages"]["bm25"]) == {"ndcg@10", "mrr@10", "map@100", "p@10"}
    assert set(report["seconds"]) == set(result.stages)
    # The reported metrics are pytrec_eval's on the run files as written.
    files = result.write_runs(tmp_path)
    assert [f.name for f in files] == [f"{tiny_data.name}-test-{s}.trec" for s in result.stages]
    for stage, path in zip(result.stages, files):
        with open(path) as fh:
            run = pytrec_eval.parse_run(fh)
        ref = pytrec_eval.RelevanceEvaluator(tiny_data.qrels, {"ndcg_cut.10", "P.10"}).evaluate(run)
        assert table.loc[stage, "ndcg@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in ref.values()]))
        assert table.loc[stage, "p@10"] == pytest.approx(np.mean([v["P_10"] for v in ref.values()]))
    sig = result.significance(metric="ndcg@10")
    assert list(sig.index) == ["dense", "hybrid", "rerank"] and sig["p_value"].between(0, 1).all()
    curve = result.recall_curve((1, 5, 10))
    assert list(curve.columns) == [1, 5, 10]
    assert (curve.diff(axis=1).iloc[:, 1:] >= 0).all().all()


class OraclePipeline:
    """Any object with `stages`, `retrieve`, `config` and `index` can be evaluated, whatever its stage names."""

    stages = ["oracle", "worst"]
    config = PipelineConfig()
    index = SimpleNamespace(store=SimpleNamespace(passage_ids=list(range(1000))))

    def __init__(self, qrels):
        self.by_text = {text: docs for text, docs in qrels.items()}
        self.calls = []

    def retrieve(self, queries, stage=None, top_k=None):
        self.calls.append((stage, len(queries)))
        out = []
        for q in queries:
            docs = sorted(self.by_text[q].items(), key=lambda x: -x[1])
            ids = [d for d, r in docs if r > 0]
            ids = ids if stage == "oracle" else ["junk1", "junk2"] + ids[::-1]
            out.append(ranked(*ids))
        return out


def test_evaluate_any_stage_names_in_batches(tiny_data):
    pipe = OraclePipeline({tiny_data.queries[q]: tiny_data.qrels[q] for q in tiny_data.queries})
    result = evaluate(pipe, tiny_data, batch_size=4, show_progress=False)
    assert pipe.calls == [("oracle", 4), ("oracle", 2), ("worst", 4), ("worst", 2)]
    table = result.table()
    assert table.loc["oracle", "ndcg@10"] == pytest.approx(1.0)
    assert table.loc["oracle", "mrr@10"] == pytest.approx(1.0)
    assert table.loc["worst", "mrr@10"] == pytest.approx(1 / 3)
    cmp = result.compare("worst", "oracle")
    assert cmp.diff > 0 and cmp.n == len(QUERIES)
    assert "oracle vs worst on ndcg@10" in str(cmp)
    with pytest.raises(EvaluationError, match="stage 'rerank' is not available.*available: oracle, worst"):
        evaluate(pipe, tiny_data, ["rerank"], show_progress=False)
    with pytest.raises(EvaluationError, match="stage 'bm25' was not evaluated"):
        result.compare("bm25", "oracle")


# -- index cache ----------------------------------------------------------------------------------------------


def test_cached_index_reuses_matching_builds(tmp_path, tiny_bi_encoder):
    data = write_beir(tmp_path / "tiny")
    config = load_config(pipeline_config(tmp_path / "unused", tiny_bi_encoder))
    first = cached_index(data, config, tmp_path / "cache", show_progress=False)
    manifest = (first / "manifest.json").read_text()
    assert first.parent == tmp_path / "cache" and first.name.startswith("tiny-")
    config.first_stage.bm25.top_k = 7  # query-time knobs do not change the index
    config.first_stage.dense.batch_size = 3
    assert cached_index(data, config, tmp_path / "cache", show_progress=False) == first
    assert (first / "manifest.json").read_text() == manifest
    config.first_stage.bm25.analyzer.stemmer = None
    other = cached_index(data, config, tmp_path / "cache", show_progress=False)
    assert other != first and (other / "manifest.json").is_file()


def test_index_settings_ignore_query_time_knobs():
    base = PipelineConfig().build_config().model_dump(mode="json")
    tuned = PipelineConfig.model_validate(
        {"first_stage": {"bm25": {"k1": 0.9, "top_k": 1000},
                         "dense": {"top_k": 5, "backend": "openvino", "faiss": {"nprobe": 3}}}})
    assert index_settings(tuned.build_config().model_dump(mode="json")) == index_settings(base)
    # A manifest written before a query-time key existed still matches (cached indexes survive an upgrade).
    older = json.loads(json.dumps(base))
    del older["dense"]["backend"]
    assert index_settings(older) == index_settings(base)
    chunked = PipelineConfig.model_validate({"index": {"chunking": {"max_words": 50, "overlap": 10}}})
    assert index_settings(chunked.build_config().model_dump(mode="json")) != index_settings(base)


def test_write_trec_run(tmp_path):
    path = write_trec_run({"q1": [("a", 2.0), ("b", 2.0)]}, tmp_path / "r.trec", tag="t")
    lines = path.read_text().splitlines()
    assert [ln.split()[:4] for ln in lines] == [["q1", "Q0", "a", "1"], ["q1", "Q0", "b", "2"]]
    assert float(lines[0].split()[4]) > float(lines[1].split()[4])
