from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import pytrec_eval

from retrieval import SearchPipeline
from retrieval.config import PipelineConfig
from retrieval.evaluation import EvaluationError, evaluate, load_beir
from tests.beir_data import QUERIES, write_beir
from tests.conftest import pipeline_config
from tests.retrieval.evaluation.helpers import ranked


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
