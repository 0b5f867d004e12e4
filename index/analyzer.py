"""The BM25 analyzer: lowercase, Unicode tokens, stopwords, Snowball stemming; the same at index and query time.

Example:
    >>> from index.analyzer import Analyzer
    >>> Analyzer().tokenize("The running dogs")
    ['run', 'dog']
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable

import bm25s.stopwords
import Stemmer

from index.config import AnalyzerConfig

# Runs of letters/digits; CJK ideographs and kana become one token each (they are not space-separated),
# as Lucene's StandardAnalyzer does.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


def _mark_ranges() -> str:
    """A regex class body of the Unicode combining marks (categories Mn, Mc, Me), which `\\w` does not match."""
    ranges: list[list[int]] = []
    for cp in itertools.chain(range(0x20000), range(0xE0000, 0xE0200)):  # no marks on the other planes
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


# Letters and digits keep the combining marks that follow them (Devanagari vowel signs, Arabic harakat, Thai
# tone marks), so "नमस्ते" stays one word instead of falling apart; used only on text that holds a mark.
_MARKS = _mark_ranges()
_MARK = re.compile(f"[{_MARKS}]")
_TOKEN_WITH_MARKS = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:[{_MARKS}]+[^\W_{_CJK}]*)*")
# Texts longer than this are analyzed in slices cut just before whitespace (no token, normalization or casing
# rule spans whitespace, so the terms are the same), and repeated terms share one string: a 20 MB document then
# costs memory for its term list, not for several full-size copies and one string object per token.
_SLICE_CHARS = 1 << 20
_SPACE = re.compile(r"\s")

_STOPWORDS = {
    "english": bm25s.stopwords.STOPWORDS_EN,
    "english_plus": bm25s.stopwords.STOPWORDS_EN_PLUS,
    "french": bm25s.stopwords.STOPWORDS_FRENCH,
    "german": bm25s.stopwords.STOPWORDS_GERMAN,
    "spanish": bm25s.stopwords.STOPWORDS_SPANISH,
    "italian": bm25s.stopwords.STOPWORDS_ITALIAN,
    "portuguese": bm25s.stopwords.STOPWORDS_PORTUGUESE,
    "dutch": bm25s.stopwords.STOPWORDS_DUTCH,
    "russian": bm25s.stopwords.STOPWORDS_RUSSIAN,
    "swedish": bm25s.stopwords.STOPWORDS_SWEDISH,
}


class Analyzer:
    """Turns text into BM25 terms. Thread-safe after construction except for the stemmer, which is per-thread."""

    def __init__(self, config: AnalyzerConfig | None = None) -> None:
        self.config = config or AnalyzerConfig()
        sw = self.config.stopwords
        if sw is None:
            self.stopwords: frozenset[str] = frozenset()
        elif isinstance(sw, str):
            if sw not in _STOPWORDS:
                raise ValueError(f"unknown stopword list {sw!r}; choose one of {sorted(_STOPWORDS)} or a list")
            self.stopwords = frozenset(_STOPWORDS[sw])
        else:
            self.stopwords = frozenset(w.lower() if self.config.lowercase else w for w in sw)
        self._stemmer_name = self.config.stemmer
        if self._stemmer_name is not None and self._stemmer_name not in Stemmer.algorithms():
            raise ValueError(
                f"unknown stemmer {self._stemmer_name!r}; choose one of {Stemmer.algorithms()} or null"
            )
        self._stemmers: dict[int, Stemmer.Stemmer] = {}

    def _stemmer(self) -> Stemmer.Stemmer:
        import threading

        key = threading.get_ident()
        stemmer = self._stemmers.get(key)
        if stemmer is None:
            stemmer = self._stemmers[key] = Stemmer.Stemmer(self._stemmer_name)
        return stemmer

    def tokenize(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if len(text) <= _SLICE_CHARS:
            return self._tokenize(text)
        shared: dict[str, str] = {}
        out: list[str] = []
        start = 0
        while start < len(text):
            cut = _SPACE.search(text, start + _SLICE_CHARS)
            end = cut.start() if cut else len(text)
            out.extend(shared.setdefault(t, t) for t in self._tokenize(text[start:end]))
            start = end
        return out

    def _tokenize(self, text: str) -> list[str]:
        cfg = self.config
        text = unicodedata.normalize("NFKC", text)
        if cfg.lowercase:
            text = text.lower()
            if not text.isascii():
                # lower() can leave marks out of canonical order ("İ̖" -> "i̖̇"): normalise again so a term
                # analyzes to itself, at index and query time alike.
                text = unicodedata.normalize("NFKC", text)
        pattern = _TOKEN if text.isascii() or not _MARK.search(text) else _TOKEN_WITH_MARKS
        tokens = [
            t[: cfg.max_token_length]
            for t in pattern.findall(text)
            if len(t) >= cfg.min_token_length and t not in self.stopwords
        ]
        if self._stemmer_name is not None and tokens:
            tokens = self._stemmer().stemWords(tokens)
        return tokens

    def tokenize_many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.tokenize(t) for t in texts]
