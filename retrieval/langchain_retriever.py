"""A LangChain retriever over twostage (the `langchain` extra): in-process over a `SearchPipeline`, or over HTTP
through a `retrieval.client.Client`.

Example:
    >>> from retrieval import SearchPipeline                                          # doctest: +SKIP
    >>> from retrieval.langchain_retriever import TwostageRetriever                   # doctest: +SKIP
    >>> retriever = TwostageRetriever(source=SearchPipeline.from_index("/tmp/idx/sample"), top_k=4)  # doctest: +SKIP
    >>> retriever.invoke("why are there tides")[0].metadata["doc_id"]                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from index.extras import require

require("langchain_core", "langchain", "the LangChain retriever")

from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from retrieval.rag import search  # noqa: E402


class TwostageRetriever(BaseRetriever):
    """Parameters: `source` (a `SearchPipeline` or a `Client`), `top_k`, and a metadata `filter` (README:
    Filters) applied to every query. Each `Document` has the text as `page_content`, the doc id as `id`, and in its
    metadata the document's fields plus `doc_id`, `title`, `score`, `rank` and each stage's score and rank."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    source: Any
    top_k: int = 10
    filter: dict[str, Any] | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=h.text, metadata=h.framework_metadata(), id=h.doc_id)
                for h in search(self.source, query, self.top_k, self.filter)]
