"""One SearchPipeline shared by 8 threads answering 1,000 queries gives exactly the sequential results."""

from __future__ import annotations

import json
import random
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from index.builder import build_index
from retrieval import SearchPipeline
from retrieval.config import load_config
from tests.conftest import SAMPLE_CORPUS, pipeline_config
from tests.reliability import answers

THREADS = 8
N_QUERIES = 1000


def _queries() -> list[str]:
    """1,000 queries made of corpus words, with some of the odd ones mixed in (empty, stopwords, long, scripts)."""
    rng = random.Random(0)
    words = [w for line in SAMPLE_CORPUS.read_text().splitlines() for w in json.loads(line)["text"].split()]
    odd = ["", "   ", "the of and", "東京 タワー", "🎉", "x" * 2000, "ocean\x00tides", "a " * 300]
    out = []
    for i in range(N_QUERIES):
        out.append(odd[i % len(odd)] if i % 25 == 0 else " ".join(rng.choices(words, k=rng.randint(1, 8))))
    return out


QUERIES = _queries()


def _calls() -> list[list[int]]:
    """The work as calls of query indices: singles (query) and groups of 5 (query_batch), interleaved."""
    calls, i = [], 0
    while i < N_QUERIES:
        size = 1 if (i // 5) % 2 == 0 else 5
        calls.append(list(range(i, min(i + size, N_QUERIES))))
        i += size
    return calls


def _do(pipe: SearchPipeline, call: list[int], top_k: int) -> list[tuple[int, list]]:
    return list(zip(call, answers(pipe, [QUERIES[i] for i in call], top_k)))


def _sequential(pipe: SearchPipeline, top_k: int) -> list:
    results: list = [None] * N_QUERIES
    for call in _calls():
        for i, res in _do(pipe, call, top_k):
            results[i] = res
    return results


def _threaded(pipe: SearchPipeline, top_k: int) -> tuple[list, set[int]]:
    """The same calls spread over 8 threads that start together."""
    calls = _calls()
    idents: set[int] = set()
    start = threading.Barrier(THREADS)

    def work(shard: int) -> list[tuple[int, list]]:
        idents.add(threading.get_ident())
        start.wait()
        return [pair for call in calls[shard::THREADS] for pair in _do(pipe, call, top_k)]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        parts = list(pool.map(work, range(THREADS)))
    results: list = [None] * N_QUERIES
    for part in parts:
        for i, res in part:
            results[i] = res
    return results, idents


@pytest.fixture
def one_torch_thread():
    """Speed only: on a busy 2-core machine torch's intra-op thread pool makes each tiny-model call ~7x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("rerank", [None, "torch", "openvino"],
                         ids=["hybrid", "hybrid+rerank", "hybrid+openvino rerank"])
def test_8_threads_1000_queries_equal_the_sequential_run(sample_index, tiny_bi_encoder, tiny_cross_encoder, rerank,
                                                         one_torch_thread, tmp_path):
    config = pipeline_config(sample_index, tiny_bi_encoder)
    if rerank == "torch":
        config["rerank"] = {"model": str(tiny_cross_encoder), "top_n": 10}
    elif rerank == "openvino":  # a private copy: the converted IR is cached beside the model
        shutil.copytree(tiny_cross_encoder, tmp_path / "ce")
        config["rerank"] = {"model": str(tmp_path / "ce"), "top_n": 10, "backend": "openvino", "precision": "fp32",
                            "num_threads": 1}
    pipe = SearchPipeline.from_config(config)
    sequential = _sequential(pipe, 5)
    assert sum(1 for r in sequential if r) > 900  # the run does real work
    threaded, idents = _threaded(pipe, 5)
    assert len(idents) == THREADS
    mismatched = [i for i in range(N_QUERIES) if threaded[i] != sequential[i]]
    assert mismatched == []


def test_a_rebuild_under_an_open_pipeline(tmp_path, tiny_bi_encoder, one_torch_thread):
    """A cron job rebuilds the index while a server's pipeline is open: with `index.auto_refresh: false` the
    pipeline keeps answering from the index it loaded, in every thread (new ones included), until refreshed; with
    the default, the next query answers from the new build."""
    target = tmp_path / "idx"
    config = pipeline_config(target, tiny_bi_encoder)
    build = load_config(config).build_config()
    build_index(SAMPLE_CORPUS, target, build, show_progress=False)
    pipe = SearchPipeline.from_config({**config, "index": {**config["index"], "auto_refresh": False}})
    auto = SearchPipeline.from_config(config)
    queries = QUERIES[:60]
    before = [answers(pipe, [q], 5)[0] for q in queries]
    renamed = tmp_path / "v2.jsonl"
    renamed.write_text("".join(json.dumps({**d, "_id": f"v2-{d['_id']}", "text": d["text"].upper()}) + "\n"
                               for d in map(json.loads, SAMPLE_CORPUS.read_text().splitlines())))
    build_index(renamed, target, build, show_progress=False)
    with ThreadPoolExecutor(max_workers=4) as pool:  # threads that never used the store before the rebuild
        after = list(pool.map(lambda q: answers(pipe, [q], 5)[0], queries))
    assert after == before
    fresh = SearchPipeline.from_config(config)
    assert all(r[0].startswith("v2-") for hits in answers(fresh, queries, 5) for r in hits)
    assert answers(auto, queries, 5) == answers(fresh, queries, 5)
    assert pipe.refresh() and answers(pipe, queries, 5) == answers(fresh, queries, 5)
