"""A LlamaIndex retriever over twostage (the `llamaindex` extra): in-process over a `SearchPipeline`, or over
HTTP through a `retrieval.client.Client`.

Example:
    >>> from retrieval.client import Client                                           # doctest: +SKIP
    >>> from retrieval.llamaindex_retriever import TwostageRetriever                  # doctest: +SKIP
    >>> nodes = TwostageRetriever(Client("http://127.0.0.1:8000"), top_k=4).retrieve("tides")  # doctest: +SKIP
    >>> nodes[0].node.id_, nodes[0].score                                             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from index.extras import require

require("llama_index.core", "llamaindex", "the LlamaIndex retriever")

from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

from retrieval.rag import search  # noqa: E402


class TwostageRetriever(BaseRetriever):
    """Parameters: `source` (a `SearchPipeline` or a `Client`), `top_k`, and a metadata `filter` applied to every
    query. Each node has the doc id as `id_`, the text, and in its metadata the document's fields plus `doc_id`,
    `title`, `score`, `rank` and each stage's score and rank; its score is the final stage's."""

    def __init__(self, source: Any, top_k: int = 10, filter: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.top_k = top_k
        self.filter = filter

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(id_=h.doc_id, text=h.text, metadata=h.framework_metadata()),
                              score=h.score)
                for h in search(self.source, query_bundle.query_str, self.top_k, self.filter)]
