"""The LangChain and LlamaIndex retrievers against the real `langchain-core` and `llama-index-core` interfaces,
in-process over a `SearchPipeline` and over HTTP through the client: the same documents, in the same order, as
`SearchPipeline.query`, with the stage scores in their metadata and the filter applied."""

from __future__ import annotations

import json

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever as LangChainBase
from llama_index.core.retrievers import BaseRetriever as LlamaBase
from llama_index.core.schema import NodeWithScore

from index.builder import build_index
from retrieval import SearchPipeline
from retrieval.client import Client
from retrieval.langchain_retriever import TwostageRetriever as LangChainRetriever
from retrieval.llamaindex_retriever import TwostageRetriever as LlamaRetriever
from retrieval.loadtest import served
from tests.conftest import SAMPLE_CORPUS
from tests.reliability import bm25_only, bm25_pipeline_config

QUERY = "ocean tides and plants turning light into energy"


@pytest.fixture(scope="module")
def tagged_index(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rag")
    docs = [json.loads(line) for line in SAMPLE_CORPUS.read_text().splitlines()]
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({**d, "kind": "even" if i % 2 == 0 else "odd"}) + "\n"
                              for i, d in enumerate(docs)))
    build_index(corpus, tmp / "idx", bm25_only(), show_progress=False)
    return tmp / "idx"


def _sources(index):
    pipe = SearchPipeline.from_config(bm25_pipeline_config(index))
    yield "in-process", pipe, pipe
    with served(index) as url, Client(url) as client:
        yield "http", client, pipe


def test_langchain_and_llamaindex_match_the_pipeline(tagged_index):
    for where, source, pipe in _sources(tagged_index):
        expected = pipe.query(QUERY, top_k=4)
        lc = LangChainRetriever(source=source, top_k=4)
        assert isinstance(lc, LangChainBase)
        docs = lc.invoke(QUERY)
        assert all(isinstance(d, Document) for d in docs), where
        assert [d.id for d in docs] == [r.doc_id for r in expected], where
        assert [d.page_content for d in docs] == [r.text for r in expected], where  # full text, not cut
        assert docs[0].metadata["stages"]["bm25"]["rank"] == 1 and docs[0].metadata["score"] == expected[0].score
        li = LlamaRetriever(source, top_k=4)
        assert isinstance(li, LlamaBase)
        nodes = li.retrieve(QUERY)
        assert all(isinstance(n, NodeWithScore) for n in nodes), where
        assert [(n.node.id_, n.score) for n in nodes] == [(r.doc_id, r.score) for r in expected], where
        odd = LangChainRetriever(source=source, top_k=4, filter={"kind": "odd"}).invoke(QUERY)
        assert odd and all(d.metadata["kind"] == "odd" for d in odd), where
        assert [n.node.metadata["kind"] for n in LlamaRetriever(source, 4, {"kind": "even"}).retrieve(QUERY)] \
            == ["even"] * len(pipe.query(QUERY, top_k=4, filter={"kind": "even"}))
