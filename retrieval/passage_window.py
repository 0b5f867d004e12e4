"""The window of a long document the reranker reads: instead of its first `max_length` tokens, the run of
`words` consecutive words that matches the query best (the most distinct query terms, then the most
occurrences, then the earliest), found with the first stage's own analyzer. A cross-encoder truncates each pair
to `max_length` tokens; for a long abstract the evidence the first stage found may lie past that cut.

Example:
    >>> best_window("a b c tide tide moon d e f g", {"tide", "moon"}, str.split, words=3)
    'tide tide moon'
"""

from __future__ import annotations

from collections.abc import Callable, Collection


def best_window(text: str, query_terms: Collection[str], analyze: Callable[[str], list[str]], words: int) -> str:
    """`text` itself when it has at most `words` words (or nothing of the query), else its best window.

    Parameters:
        text: the document text (the title is added by the caller, outside the window).
        query_terms: the query's terms as `analyze` makes them.
        analyze: word -> its terms (the BM25 analyzer's `tokenize`: lower-cased, stemmed, stopwords dropped).
        words: window length in words; windows start every `words // 4` words (at least 1).
    """
    tokens = text.split()
    if len(tokens) <= words or not query_terms:
        return text
    wanted = set(query_terms)
    terms = [[t for t in analyze(w) if t in wanted] for w in tokens]
    step = max(1, words // 4)
    starts = list(range(0, len(tokens) - words + 1, step))
    if starts[-1] != len(tokens) - words:
        starts.append(len(tokens) - words)  # the end of the document gets a window too
    best, best_key = 0, (-1, -1)
    for start in starts:
        window = [t for ts in terms[start : start + words] for t in ts]
        key = (len(set(window)), len(window))
        if key > best_key:  # strictly better: ties keep the earliest
            best, best_key = start, key
    if best_key[0] <= 0:
        return text  # nothing of the query anywhere: the model's own truncation
    return " ".join(tokens[best : best + words])
