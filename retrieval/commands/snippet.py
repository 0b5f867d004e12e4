"""A result's snippet for a results table: one line of its matching passage (or of its text, for an unchunked
index), from a little before the first query term, with every query term marked.

Terms are matched as BM25 matches them (the index's analyzer: lowercase, stopwords, stemming), so "tides" marks
"tide" and "the" marks nothing. Marks are `[term]`, or bold on a terminal; the text between them is shown through
`terminal_safe` first, so the only escape sequences in a snippet are the bold marks themselves.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from index.analyzer import Analyzer

if TYPE_CHECKING:
    from retrieval.pipeline import SearchPipeline, SearchResult

SNIPPET_CHARS = 120
_CONTEXT = SNIPPET_CHARS // 4  # characters shown before the first match
_SCAN_CHARS = 20_000  # a long unchunked document is searched for a first match this far in, not to its end
_WORD = re.compile(r"\w+")
_BOLD, _PLAIN = "\x1b[1m", "\x1b[0m"


def term_matcher(query: str, analyzer: Analyzer | None = None) -> Callable[[str], bool]:
    """Whether a word of a result is one of `query`'s terms, under `analyzer` (default: the default analyzer)."""
    analyzer = Analyzer() if analyzer is None else analyzer
    terms = set(analyzer.tokenize(query))
    seen: dict[str, bool] = {}  # words repeat: each is analyzed once

    def matches(word: str) -> bool:
        if word not in seen:
            seen[word] = not terms.isdisjoint(analyzer.tokenize(word))
        return seen[word]

    return matches


def pipeline_matcher(pipe: SearchPipeline) -> Callable[[str], Callable[[str], bool]]:
    """Per query, `term_matcher` with the analyzer of `pipe`'s BM25 retriever (the default one without BM25)."""
    analyzer = pipe.bm25.analyzer if pipe.bm25 is not None else Analyzer()
    return lambda query: term_matcher(query, analyzer)


def bold_wanted() -> bool:
    """Bold marks on a terminal (unless NO_COLOR is set, https://no-color.org); `[term]` in a file or a pipe."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def snippet(text: str, matches: Callable[[str], bool], safe: Callable[[str], str], bold: bool = False,
            width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` on one line, starting shortly before the first word that `matches`,
    with each matching word marked; `safe` renders the text between the marks (e.g. `cli.terminal_safe`)."""
    more = len(text) > _SCAN_CHARS
    text = " ".join(text[:_SCAN_CHARS].split())  # prose: line breaks and tabs are spaces here
    first = next((m.start() for m in _WORD.finditer(text) if matches(m.group())), None)
    begin = 0
    if first is not None and first > _CONTEXT:
        begin = text.rfind(" ", 0, first - _CONTEXT) + 1  # at a word boundary
    end = len(text)
    if end - begin > width:
        cut = text.rfind(" ", begin, begin + width)
        end = cut if cut > begin else begin + width
    opened, closed = (_BOLD, _PLAIN) if bold else ("[", "]")
    out, at = [], begin
    for m in _WORD.finditer(text, begin, end):
        if matches(m.group()):
            out += [safe(text[at:m.start()]), opened, safe(m.group()), closed]
            at = m.end()
    out.append(safe(text[at:end]))
    return ("…" if begin > 0 else "") + "".join(out) + ("…" if more or end < len(text) else "")


def result_text(result: SearchResult) -> str:
    """What a snippet shows of a result: its best passage when the index is chunked, else its text."""
    return result.passage.text if result.passage is not None else result.text
