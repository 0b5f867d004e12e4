"""What the RAG-framework retrievers share: one search over either a `SearchPipeline` (in-process) or a
`retrieval.client.Client` (over HTTP), as plain hits with the same fields either way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RagHit:
    doc_id: str
    score: float
    rank: int
    title: str
    text: str
    metadata: dict[str, Any]
    stages: dict[str, dict[str, float]]

    def framework_metadata(self) -> dict[str, Any]:
        """The metadata a framework document carries: the document's own fields, then ours (which win)."""
        return {**self.metadata, "doc_id": self.doc_id, "title": self.title, "score": self.score,
                "rank": self.rank, "stages": self.stages}


def search(source: Any, query: str, top_k: int, filter: dict[str, Any] | None) -> list[RagHit]:
    """`source`: a `SearchPipeline` or a `Client`. The full text of each hit (not the 300-character cut)."""
    from retrieval.client import Client

    if isinstance(source, Client):
        hits: list[Any] = source.search(query, top_k=top_k, filter=filter, full_text=True).results
    else:
        hits = source.query(query, top_k=top_k, filter=filter)
    return [RagHit(h.doc_id, float(h.score), int(h.rank), h.title, h.text, dict(h.metadata),
                   {k: {"score": float(v.score), "rank": int(v.rank)} for k, v in h.stages.items()}) for h in hits]
