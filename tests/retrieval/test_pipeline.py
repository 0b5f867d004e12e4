from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from index.builder import build_index
from retrieval import SearchPipeline, SearchResult
from retrieval.config import load_config
from tests.conftest import SAMPLE_CORPUS, pipeline_config


@pytest.fixture(scope="module")
def pipe(sample_index, tiny_bi_encoder):
    return SearchPipeline.from_config(pipeline_config(sample_index, tiny_bi_encoder))


def test_query_returns_documents_with_per_stage_scores(pipe):
    results = pipe.query("why does the sea have tides", top_k=5)
    assert pipe.stages == ["bm25", "dense", "hybrid"]
    assert len(results) == 5 and all(isinstance(r, SearchResult) for r in results)
    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    top = results[0]
    assert top.doc_id == "tides"  # BM25 alone puts it first; the fusion keeps it there with a random encoder
    assert top.title == "Why the sea has tides" and "Moon" in top.text
    assert set(top.stages) >= {"bm25", "hybrid"}
    assert top.stages["hybrid"].rank == 1 and top.stages["hybrid"].score == top.score
    assert json.loads(json.dumps(top.to_dict()))["stages"]["hybrid"]["rank"] == 1


def test_query_batch_equals_single_queries(pipe):
    queries = ["coffee brewing temperature", "volcano eruption lava", "git branches and merging"]
    batch = pipe.query_batch(queries, top_k=4)
    for q, results in zip(queries, batch):
        single = pipe.query(q, top_k=4)
        assert [r.doc_id for r in results] == [r.doc_id for r in single]
        assert [r.score for r in results] == pytest.approx([r.score for r in single])


def test_retrieve_each_stage(pipe):
    for stage in ("dense", "hybrid"):
        (ranked,) = pipe.retrieve(["honeybee waggle dance"], stage=stage, top_k=3)
        assert len(ranked) == 3
    # BM25 returns only documents that contain a query term
    assert pipe.retrieve(["honeybee waggle dance"], stage="bm25")[0][0][0] == "honeybees"
    with pytest.raises(ValueError, match="stage 'rerank' is not available"):
        pipe.retrieve(["x"], stage="rerank")


def test_from_yaml_with_weighted_fusion(tmp_path, sample_index, tiny_bi_encoder):
    cfg = pipeline_config(sample_index, tiny_bi_encoder)
    cfg["first_stage"]["fusion"] = {"method": "weighted", "normalization": "zscore", "weights": {"bm25": 1, "dense": 0}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    pipe = SearchPipeline.from_yaml(path)
    hybrid = [d for d, _ in pipe.retrieve(["sourdough starter yeast"], stage="hybrid", top_k=3)[0]]
    bm25 = [d for d, _ in pipe.retrieve(["sourdough starter yeast"], stage="bm25", top_k=3)[0]]
    assert len(bm25) >= 1 and hybrid[: len(bm25)] == bm25  # dense weight 0: BM25's matches first, in its order


def test_bm25_only_index_and_config(tmp_path):
    cfg = load_config({"index": {"path": str(tmp_path / "i")}, "first_stage": {"dense": {"enabled": False}}})
    build_index(SAMPLE_CORPUS, tmp_path / "i", cfg.build_config(), show_progress=False)
    pipe = SearchPipeline(cfg)
    assert pipe.stages == ["bm25"]
    assert pipe.query("aluminium recycling energy", top_k=1)[0].doc_id == "recycling-aluminium"


def test_chunked_index_returns_documents_scored_by_best_passage(tmp_path, tiny_bi_encoder):
    corpus = tmp_path / "c.jsonl"
    filler = " ".join(f"filler{i}" for i in range(80))
    corpus.write_text(
        json.dumps({"_id": "long", "title": "", "text": f"{filler} zebra giraffe savanna {filler}"}) + "\n"
        + json.dumps({"_id": "other", "title": "", "text": "zebra crossing in the city"}) + "\n")
    raw = pipeline_config(tmp_path / "i", tiny_bi_encoder)
    raw["index"]["chunking"] = {"max_words": 30, "overlap": 5}
    cfg = load_config(raw)
    build_index(corpus, tmp_path / "i", cfg.build_config(), show_progress=False)
    pipe = SearchPipeline(cfg)
    results = pipe.query("zebra giraffe savanna", top_k=5)
    assert [r.doc_id for r in results][0] == "long"
    assert {r.doc_id for r in results} == {"long", "other"}  # documents, not passages
    assert "#" not in results[0].doc_id and results[0].text.startswith("filler0")


def test_rerank_stage_keeps_first_stage_scores(sample_index, tiny_bi_encoder, tiny_cross_encoder):
    raw = pipeline_config(sample_index, tiny_bi_encoder)
    raw["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 5, "batch_size": 4}
    pipe = SearchPipeline.from_config(raw)
    assert pipe.stages == ["bm25", "dense", "hybrid", "rerank"]
    results = pipe.query("how do vaccines work", top_k=8)
    assert len(results) == 8
    assert all("final" in r.stages and "hybrid" in r.stages for r in results)
    assert [r.stages["final"].rank for r in results] == [r.rank for r in results] == list(range(1, 9))
    assert all(r.stages["final"].score == r.score for r in results)
    # rerank: the cross-encoder's own score and rank, for the re-scored head only (interpolation 0: same order)
    assert [r.stages["rerank"].rank for r in results[:5]] == list(range(1, 6))
    assert all("rerank" not in r.stages for r in results[5:])
    # the top_n re-scored candidates come first; the rest keep their first-stage order below them
    head = {d for d, _ in pipe.retrieve(["how do vaccines work"], stage="hybrid", top_k=5)[0]}
    assert {r.doc_id for r in results[:5]} == head
    tail = [r.stages["hybrid"].rank for r in results[5:]]
    assert tail == sorted(tail)


def test_rerank_interpolation_one_reproduces_first_stage(sample_index, tiny_bi_encoder, tiny_cross_encoder):
    raw = pipeline_config(sample_index, tiny_bi_encoder)
    raw["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 10, "interpolation": 1.0}
    pipe = SearchPipeline.from_config(raw)
    q = ["photosynthesis light energy"]
    assert [d for d, _ in pipe.retrieve(q, stage="rerank", top_k=10)[0]] == \
        [d for d, _ in pipe.retrieve(q, stage="hybrid", top_k=10)[0]]


QUERIES = ["how do vaccines work", "why does the sea have tides", "", "coffee brewing temperature",
           "black holes and gravity"]


@pytest.mark.parametrize("combination", [{}, {"combination": "rrf", "interpolation": 0.5},
                                         {"combination": "adaptive", "interpolation": 0.3, "normalization": "zscore"}])
def test_query_batch_shares_one_reranking_pass_and_answers_as_query_does(sample_index, tiny_bi_encoder,
                                                                       tiny_cross_encoder, combination):
    raw = pipeline_config(sample_index, tiny_bi_encoder)
    raw["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 6, "batch_size": 4, **combination}
    pipe = SearchPipeline.from_config(raw)
    alone = [[(r.doc_id, r.score, r.stages.get("rerank")) for r in pipe.query(q, top_k=8)] for q in QUERIES]
    calls = []
    predict = pipe.reranker.predict
    pipe.reranker.predict = lambda pairs, **kw: calls.append(len(pairs)) or predict(pairs, **kw)
    together = [[(r.doc_id, r.score, r.stages.get("rerank")) for r in hits] for hits in pipe.query_batch(QUERIES, 8)]
    assert calls == [6 * 4]  # every non-empty query's head, in one length-sorted run
    assert [[d for d, _, _ in hits] for hits in together] == [[d for d, _, _ in hits] for hits in alone]
    for a, b in zip(together, alone):
        assert [s for _, s, _ in a] == pytest.approx([s for _, s, _ in b], abs=1e-5)  # batch padding differs
    assert together[2] == []


@pytest.mark.slow
def test_default_config_with_real_bundled_bi_encoder(tmp_path):
    """Quality check with real weights: the bundled all-MiniLM-L6-v2 finds paraphrased answers."""
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "hybrid.yaml")
    cfg.index.path = tmp_path / "idx"
    build_index(SAMPLE_CORPUS, cfg.index.path, cfg.build_config(), show_progress=False)
    pipe = SearchPipeline(cfg)
    # few shared words with the target documents: the dense stage has to carry these
    expected = {"microbes that survive medicine": "antibiotics", "why the moon moves the oceans": "tides",
                "electricity from sunshine": "solar-panels", "bread made with wild yeast": "sourdough"}
    dense = pipe.retrieve(list(expected), stage="dense", top_k=1)
    assert [r[0][0] for r in dense] == list(expected.values())
    assert [r[0].doc_id for r in pipe.query_batch(list(expected), top_k=1)] == list(expected.values())


# -- a config that disagrees with the index's build settings -----------------------------------------------------

# (dotted key, value, decides what the index holds?) against an index built with the defaults (BM25 only).
BM25_CHANGES = [
    ("index.corpus.id_field", "docid", True),
    ("index.corpus.title_field", "heading", True),
    ("index.corpus.text_field", "body", True),
    ("index.corpus.on_empty", "error", True),
    ("index.chunking", {"max_words": 50, "overlap": 10}, True),
    ("first_stage.bm25.analyzer.stemmer", None, True),
    ("first_stage.bm25.analyzer.stopwords", ["the", "a"], True),
    ("first_stage.bm25.analyzer.min_token_length", 2, True),
    ("first_stage.bm25.k1", 0.9, False),
    ("first_stage.bm25.b", 0.3, False),
    ("first_stage.bm25.variant", "bm25plus", False),
    ("first_stage.bm25.delta", 0.7, False),
    ("first_stage.bm25.top_k", 7, False),
    ("first_stage.bm25.backend", "rank_bm25", False),
    ("first_stage.dense.faiss.type", "hnsw", False),  # the dense stage is disabled: its settings do not apply
    ("first_stage.fusion.top_k", 9, False),
    ("output.top_k", 4, False),
]


def _with(raw: dict, changes) -> dict:
    raw = json.loads(json.dumps(raw))
    for dotted, value, _ in changes:
        *parents, leaf = dotted.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory):
    from tests.reliability import bm25_only

    path = tmp_path_factory.mktemp("bm25") / "idx"
    build_index(SAMPLE_CORPUS, path, bm25_only(), show_progress=False)
    return path


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(BM25_CHANGES), min_size=1, max_size=4, unique_by=lambda c: c[0]))
def test_a_config_must_agree_with_the_index_on_every_build_setting(bm25_index, changes):
    """Refused exactly when a build-time setting differs, naming each one with both values; query-time settings
    may differ. The evaluation cache uses the same split (one definition of what is query-time)."""
    from index.cache import index_settings
    from index.manifest import IndexDirError
    from tests.reliability import bm25_pipeline_config

    base = bm25_pipeline_config(bm25_index)
    config = load_config(_with(base, changes))
    differs = [(key, value) for key, value, build_time in changes if build_time]
    same_index = (index_settings(config.build_config().model_dump(mode="json"))
                  == index_settings(load_config(base).build_config().model_dump(mode="json")))
    assert same_index == (not differs)
    if not differs:
        assert SearchPipeline(config).query("ocean tides", top_k=1)
        return
    with pytest.raises(IndexDirError) as err:
        SearchPipeline(config)
    message = str(err.value)
    assert message.startswith(f"{bm25_index} was built with ") and "\n" not in message
    assert message.endswith("; rebuild the index with this config, or change the config to the index's values")
    for key, value in differs:
        assert f"the config has {key}: {json.dumps(value)}" in message or f", {key}: {json.dumps(value)}" in message


@pytest.mark.parametrize(("dotted", "value", "built"), [
    ("first_stage.dense.faiss.type", "hnsw", '"flat"'),
    ("first_stage.dense.document_prefix", "passage: ", '""'),
    ("first_stage.dense.max_length", 64, "null"),
    ("index.chunking", {"max_words": 30, "overlap": 5}, "null"),
])
def test_dense_build_settings_that_differ_are_refused(sample_index, tiny_bi_encoder, dotted, value, built):
    from index.manifest import IndexDirError

    raw = _with(pipeline_config(sample_index, tiny_bi_encoder), [(dotted, value, True)])
    with pytest.raises(IndexDirError, match=rf"^{sample_index} was built with {dotted}: {built} but the config has "
                                            rf"{dotted}: "):
        SearchPipeline.from_config(raw)


def test_query_time_dense_settings_may_differ(sample_index, tiny_bi_encoder):
    changes = [("first_stage.dense.faiss.nprobe", 3, False), ("first_stage.dense.faiss.ef_search", 16, False),
               ("first_stage.dense.faiss.rescore", 10, False), ("first_stage.dense.faiss.hnsw_m", 8, False),
               ("first_stage.dense.batch_size", 2, False), ("first_stage.dense.query_prefix", "query: ", False),
               ("first_stage.dense.precision", "fp32", False), ("first_stage.dense.device", "cpu", False)]
    pipe = SearchPipeline.from_config(_with(pipeline_config(sample_index, tiny_bi_encoder), changes))
    assert len(pipe.query("ocean tides", top_k=3)) == 3


def test_an_index_searched_without_the_chunking_it_was_built_with(tmp_path):
    from index.manifest import IndexDirError
    from tests.reliability import bm25_only, bm25_pipeline_config

    build_index(SAMPLE_CORPUS, tmp_path / "i", bm25_only(chunking={"max_words": 40, "overlap": 5}),
                show_progress=False)
    with pytest.raises(IndexDirError, match=r'was built with index.chunking: \{"max_words": 40, "overlap": 5\} but '
                                            r"the config has index.chunking: null; rebuild"):
        SearchPipeline.from_config(bm25_pipeline_config(tmp_path / "i"))
    # The index's own settings (what search.py uses without --config) always agree with it.
    from index.directory import IndexDirectory
    from retrieval.config import PipelineConfig

    own = PipelineConfig.for_index(IndexDirectory.load(tmp_path / "i").build_config)
    own.index.path = tmp_path / "i"
    assert SearchPipeline(own).query("ocean tides", top_k=1)


def test_to_dict_is_asdict():
    """`SearchResult.to_dict` is written out for speed: it must stay `dataclasses.asdict` (every field, nested
    metadata copied, not shared)."""
    from dataclasses import asdict

    from retrieval.pipeline import Passage, SearchResult, StageScore

    p = Passage("d1#0", 0, 5, "Tides")
    result = SearchResult("d1", 1.5, 1, "T", "Tides rise.", {"tags": ["a", {"b": 1}], "year": 2020},
                          {"bm25": StageScore(1.5, 1)}, p, [p])
    out = result.to_dict()
    assert out == asdict(result) and list(out) == list(asdict(result))
    out["metadata"]["tags"][1]["b"] = 2
    assert result.metadata["tags"][1]["b"] == 1
    assert SearchResult("d2", 0.0, 2, "", "").to_dict() == asdict(SearchResult("d2", 0.0, 2, "", ""))
