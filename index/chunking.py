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


def chunk_document(doc: Document, config: ChunkingConfig | None) -> Iterator[Passage]:
    if config is None:
        yield Passage(doc.doc_id, doc.doc_id, doc.title, doc.text)
        return
    # Word boundaries as two int arrays, not a tuple per word: a 20 MB document has millions of words.
    starts, ends = array("q"), array("q")
    for m in _WORD.finditer(doc.text):
        starts.append(m.start())
        ends.append(m.end())
    if len(starts) <= config.max_words:
        yield Passage(f"{doc.doc_id}#0", doc.doc_id, doc.title, doc.text)
        return
    step = config.max_words - config.overlap
    for n, start in enumerate(range(0, len(starts) - config.overlap, step)):
        last = min(start + config.max_words, len(starts)) - 1
        yield Passage(f"{doc.doc_id}#{n}", doc.doc_id, doc.title, doc.text[starts[start] : ends[last]])


def chunk_documents(docs: Iterable[Document], config: ChunkingConfig | None) -> Iterator[Passage]:
    for doc in docs:
        yield from chunk_document(doc, config)
