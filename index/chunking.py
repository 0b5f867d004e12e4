"""Split long documents into overlapping passages with ids `docid#n`; results map back to documents."""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from index.config import ChunkingConfig
from index.documents import Document

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Passage:
    """The unit that is indexed and scored: a whole document, or one window of it."""

    passage_id: str
    doc_id: str
    title: str
    text: str


def passage_doc_id(passage_id: str) -> str:
    return passage_id.rsplit("#", 1)[0]


def passage_spans(text: str, config: ChunkingConfig) -> list[tuple[int, int]]:
    """`(start, end)` character offsets in `text` of each passage `chunk_document` cuts it into: windows of
    `max_words` words, `overlap` words shared between neighbours (the whole text when it is short enough)."""
    # Word boundaries as two int arrays, not a tuple per word: a 20 MB document has millions of words.
    starts, ends = array("q"), array("q")
    for m in _WORD.finditer(text):
        starts.append(m.start())
        ends.append(m.end())
    if len(starts) <= config.max_words:
        return [(0, len(text))]
    step = config.max_words - config.overlap
    return [(starts[first], ends[min(first + config.max_words, len(starts)) - 1])
            for first in range(0, len(starts) - config.overlap, step)]


def chunk_document(doc: Document, config: ChunkingConfig | None) -> Iterator[Passage]:
    if config is None:
        yield Passage(doc.doc_id, doc.doc_id, doc.title, doc.text)
        return
    for n, (start, end) in enumerate(passage_spans(doc.text, config)):
        yield Passage(f"{doc.doc_id}#{n}", doc.doc_id, doc.title, doc.text[start:end])


def chunk_documents(docs: Iterable[Document], config: ChunkingConfig | None) -> Iterator[Passage]:
    for doc in docs:
        yield from chunk_document(doc, config)
