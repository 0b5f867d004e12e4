"""Impact-scored postings: the one inverted-index arithmetic every sparse retriever uses (BM25, SPLADE).

An index of this kind is a CSR matrix over terms: `indptr[t]:indptr[t + 1]` slices `indices` (document rows,
ascending) and `weights` (each posting's contribution). A query is a list of term ids with a multiplier each
(`None`: 1 for every term, the common BM25 case, which then costs nothing); a document's score is the sum over the
query's terms of multiplier x posting weight. Only the query's own postings are read.

Example:
    >>> import numpy as np
    >>> from index.postings import Postings
    >>> p = Postings(np.array([0, 2, 3]), np.array([0, 1, 1], dtype=np.int32), np.array([1.0, 2.0, 0.5]), 2)
    >>> p.search([0, 1], [1.0, 2.0], k=2)
    (array([1, 0]), array([3., 1.]))
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np

# A multi-term query whose postings number at least 1/DENSE_FRACTION_INV of the documents is summed in a dense
# per-document array (np.bincount); rarer queries sort their postings instead (no array of every document).
DENSE_FRACTION_INV = 8
# The dense accumulator sums a long query's postings in parts of at most this many (or one corpus' worth, if more):
# 12 bytes each, so a query holds at most ~12 MiB of postings at once however many terms it has.
PART_POSTINGS = 1 << 20

# A filtered query looks its allowed rows up in each term's postings (binary search, ~this many postings' worth of
# work per row) when that is cheaper than scoring every posting and masking.
SEARCH_COST = 16

Multipliers = Sequence[float] | None


def concat_postings(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    term_maps: Sequence[np.ndarray | None], row_maps: Sequence[np.ndarray],
                    num_terms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One CSR over terms from several segments' `(indptr, indices, values)`: part i's term t becomes
    `term_maps[i][t]` (None: t itself) and its row r becomes `row_maps[i][r]`, or is dropped where that is -1 (a
    deleted row). Row maps must be increasing and disjoint across parts in order (segments in row order), so each
    term's rows stay ascending."""
    terms_all, rows_all, values_all = [], [], []
    for (indptr, indices, values), term_map, row_map in zip(parts, term_maps, row_maps):
        term_of = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        rows = row_map[indices]
        kept = rows >= 0
        terms = term_of[kept]
        terms_all.append(term_map[terms] if term_map is not None else terms)
        rows_all.append(rows[kept])
        values_all.append(values[kept])
    terms = np.concatenate(terms_all) if terms_all else np.empty(0, dtype=np.int64)
    order = np.argsort(terms, kind="stable")  # stable: rows stay ascending within a term
    indptr = np.zeros(num_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=num_terms), out=indptr[1:])
    rows = np.concatenate(rows_all)[order].astype(np.int32) if rows_all else np.empty(0, dtype=np.int32)
    values = np.concatenate(values_all)[order] if values_all else np.empty(0)
    return indptr, rows, values


def consistent(indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray, num_docs: int,
               num_terms: int | None = None, bounds: bool = True) -> bool:
    """Whether arrays read from disk form postings over `num_docs` rows (and `num_terms` terms, if given):
    what a loader checks before it trusts them; `bounds`: every row too (reading every posting)."""
    if indptr.ndim != 1 or len(indptr) < 1 or (num_terms is not None and len(indptr) != num_terms + 1):
        return False
    if indptr[0] != 0 or indptr[-1] != len(indices) or weights.shape != indices.shape or np.any(np.diff(indptr) < 0):
        return False
    return not bounds or not indices.size or (indices.min() >= 0 and indices.max() < num_docs)


class Postings:
    """Term postings with one weight each; safe to share between threads (read-only after construction)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, weights: Any, num_docs: int,
                 positive: bool | None = None) -> None:
        self.indptr = indptr
        self.indices = indices
        self.weights = weights  # an array, or anything that slices like one (BM25's weights of a large index)
        self.num_docs = int(num_docs)
        # Python ints for slicing, and whether every weight is > 0 (then, with positive multipliers, a positive
        # accumulated score means "holds a query term"); `positive` says so for weights that are not an array.
        self._indptr = array("q", np.ascontiguousarray(indptr, dtype=np.int64).tobytes())
        self.positive = bool(weights.size == 0 or weights.min() > 0) if positive is None else positive

    def spans(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """Where each term's postings lie in `indices`."""
        ptr = self._indptr
        return [(ptr[t], ptr[t + 1]) for t in ids]

    def _postings(self, spans: Sequence[tuple[int, int]], mult: Multipliers) -> tuple[np.ndarray, np.ndarray]:
        """(document rows, weights) of these terms' postings in query-term order, each term's weights scaled by
        its multiplier (only a multiplier other than 1 scales: a query of plain terms stays bit-identical to a
        term-by-term sum)."""
        indices, weights = self.indices, self.weights
        if len(spans) == 1:
            (s, e), m = spans[0], 1 if mult is None else mult[0]
            return indices[s:e], weights[s:e] * m if m != 1 else weights[s:e]
        if mult is None:
            parts = [weights[s:e] for s, e in spans]
        else:
            parts = [weights[s:e] * m if m != 1 else weights[s:e] for (s, e), m in zip(spans, mult)]
        return np.concatenate([indices[s:e] for s, e in spans]), np.concatenate(parts)

    def accumulate(self, spans: list[tuple[int, int]], mult: Multipliers,
                   with_hits: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Summed weights per document (and, if asked, which documents hold a query term)."""
        n = self.num_docs
        total = sum(e - s for s, e in spans)
        budget = max(n, PART_POSTINGS)
        if total <= budget:  # nearly every query: one pass, no per-part bookkeeping on the hot path
            docs, weights = self._postings(spans, mult)
            acc = np.bincount(docs, weights=weights, minlength=n)
            if not with_hits:
                return acc, None
            hits = np.zeros(n, dtype=bool)
            hits[docs] = True
            return acc, hits
        acc: np.ndarray | None = None
        hits = np.zeros(n, dtype=bool) if with_hits else None
        for part in _parts(spans, mult, budget):
            docs, weights = self._postings(*part)
            if acc is None:  # bincount adds in input order, term by term in query order
                acc = np.bincount(docs, weights=weights, minlength=n)
            else:  # ufunc.at continues in that same order, so splitting the postings changes no bit
                np.add.at(acc, docs, weights)
            if hits is not None:
                hits[docs] = True
        return (np.zeros(n) if acc is None else acc), hits

    def scores(self, ids: Sequence[int], mult: Multipliers = None) -> np.ndarray:
        """Scores of every document (0 for documents holding no query term)."""
        if not ids:
            return np.zeros(self.num_docs)
        return self.accumulate(self.spans(ids), mult)[0]

    def candidates(self, ids: Sequence[int], mult: Multipliers = None) -> tuple[np.ndarray, np.ndarray]:
        """Documents holding at least one query term and their summed weights (rows ascending)."""
        spans = self.spans(ids)
        if len(ids) == 1:  # one term's postings are already unique and sorted
            docs, vals = self._postings(spans, mult)
            return docs.astype(np.int64), vals
        n = self.num_docs
        total = sum(e - s for s, e in spans)
        if total * DENSE_FRACTION_INV >= n:
            # Many postings: a dense per-document accumulator is cheaper than sorting them.
            exact_hits = not self.positive or (mult is not None and min(mult) <= 0)
            acc, hits = self.accumulate(spans, mult, with_hits=exact_hits)
            cand = np.flatnonzero(acc > 0) if hits is None else np.flatnonzero(hits)
            return cand, acc[cand]
        # Few postings (rare terms, large corpus): sort them, never touch an array of every document.
        docs, vals = self._postings(spans, mult)
        order = np.argsort(docs, kind="stable")
        sorted_docs = docs[order]
        first = np.empty(len(docs), dtype=bool)
        first[0] = True
        np.not_equal(sorted_docs[1:], sorted_docs[:-1], out=first[1:])
        inverse = np.empty(len(docs), dtype=np.intp)
        inverse[order] = np.cumsum(first) - 1
        cand = sorted_docs[first].astype(np.int64)
        return cand, np.bincount(inverse, weights=vals, minlength=len(cand))

    def allowed_candidates(self, ids: Sequence[int], mult: Multipliers,
                           rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`candidates` restricted to `rows` (ascending), found by binary search in each term's postings: the
        cost grows with the allowed rows, not the postings, so a selective filter makes a query cheaper. The same
        sums, bit for bit (each row's weights added in query-term order, from 0)."""
        acc = np.zeros(len(rows))
        hit = np.zeros(len(rows), dtype=bool)
        indices, weights = self.indices, self.weights
        for i, (s, e) in enumerate(self.spans(ids)):
            if s == e:
                continue
            docs = indices[s:e]
            at = np.searchsorted(docs, rows)
            found = at < len(docs)
            found[found] = docs[at[found]] == rows[found]
            w = weights[s:e][at[found]]
            m = 1 if mult is None else mult[i]
            acc[found] += w * m if m != 1 else w
            hit |= found
        return rows[hit].astype(np.int64), acc[hit]

    def search(self, ids: Sequence[int], mult: Multipliers, k: int, constant: float = 0.0,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and scores (+ `constant`, what every document gets) among documents holding a query term;
        ties: lower row first. `allowed` (a boolean mask over rows) restricts the documents before the top-k (a
        metadata filter); their scores are the unfiltered ones."""
        if not ids or k < 1:
            return np.empty(0, dtype=np.int64), np.empty(0)
        if allowed is None:
            cand, scores = self.candidates(ids, mult)
        else:
            postings = sum(e - s for s, e in self.spans(ids))
            if np.count_nonzero(allowed) * SEARCH_COST < postings:
                cand, scores = self.allowed_candidates(ids, mult, np.flatnonzero(allowed))
            else:
                cand, scores = self.candidates(ids, mult)
                keep = allowed[cand]
                cand, scores = cand[keep], scores[keep]
        return top_k(cand, scores + constant if constant else scores, k)


def _parts(spans: list[tuple[int, int]], mult: Multipliers,
           budget: int) -> list[tuple[list[tuple[int, int]], Multipliers]]:
    """The query terms in order, cut into runs of at most `budget` postings (a longer posting list alone)."""
    parts, start, size = [], 0, 0
    for i, (s, e) in enumerate(spans):
        if i > start and size + e - s > budget:
            parts.append((spans[start:i], mult and mult[start:i]))
            start, size = i, 0
        size += e - s
    parts.append((spans[start:], mult and mult[start:]))
    return parts


def top_k(cand: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score descending, row ascending on ties)."""
    n = len(scores)
    if n > k:
        size = max(4 * k, math.isqrt(n * k))
        if n >= 8 * size:
            # The k-th best of a strided sample is a lower bound on the k-th best overall: a cheap first cut.
            sample = scores[:: n // size]
            low = np.partition(sample, len(sample) - k)[len(sample) - k]
            keep = np.flatnonzero(scores >= low)
            cand, scores, n = cand[keep], scores[keep], len(keep)
        if n > k:
            # Keep every candidate tied with the k-th score so the tie-break below is deterministic.
            kth = np.partition(scores, n - k)[n - k]
            keep = np.flatnonzero(scores >= kth)
            cand, scores = cand[keep], scores[keep]
    order = np.lexsort((cand, -scores))[:k]
    return cand[order], scores[order]
