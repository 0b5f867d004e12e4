"""BM25 over a sparse term-by-document matrix: rank-bm25's scoring semantics without its Python loop.

The index stores raw statistics (term frequencies and document lengths), so `k1`, `b`, `delta` and the variant can
change at query time without a rebuild. `okapi`, `bm25l` and `bm25plus` reproduce `rank_bm25.BM25Okapi`,
`BM25L` and `BM25Plus` (including okapi's epsilon floor on negative IDF); `lucene` uses Lucene's always-positive
IDF, which avoids rank-bm25's zero-IDF trap on small corpora.

Example:
    >>> from index.bm25 import BM25Stats, BM25Scorer
    >>> stats = BM25Stats.build([["cat", "sat"], ["dog", "ran"], ["cat", "ran"]])
    >>> ids, scores = BM25Scorer(stats).search(["cat"], k=2)
"""

from __future__ import annotations

import json
import logging
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from index.arrays import read_npz
from index.config import BM25Config
from index.postings import Postings, concat_postings, consistent

STATS_FILE = "bm25.npz"
VOCAB_FILE = "bm25_vocab.json"
# A query scores at most this many distinct indexed terms (the first, in query order; one warning when more), so
# its work is bounded: at most MAX_QUERY_TERMS posting lists, each read once however often its term repeats, and
# memory beyond one per-document accumulator bounded by the longest posting list. (Lucene's default clause limit.)
MAX_QUERY_TERMS = 1024

logger = logging.getLogger(__name__)


class BM25Stats:
    """Term postings (CSR over terms), term frequencies and document lengths."""

    def __init__(self, vocab: list[str], indptr: np.ndarray, indices: np.ndarray, tf: np.ndarray,
                 doc_len: np.ndarray) -> None:
        self.vocab = vocab
        self.term_ids = {t: i for i, t in enumerate(vocab)}
        self.indptr = indptr
        self.indices = indices
        self.tf = tf
        self.doc_len = doc_len

    @property
    def num_docs(self) -> int:
        return int(self.doc_len.shape[0])

    @property
    def doc_freq(self) -> np.ndarray:
        return np.diff(self.indptr)

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]]) -> BM25Stats:
        """Count terms; vocabulary ids follow first-seen order, as rank-bm25's dictionaries do."""
        counter = StatsCounter()
        for tokens in token_lists:
            counter.add(tokens)
        return counter.stats()

    @classmethod
    def concat(cls, parts: Sequence[BM25Stats], keep: Sequence[np.ndarray | None]) -> BM25Stats:
        """The statistics of the rows kept (`keep[i]`: part i's rows, ascending; None: all), renumbered in order:
        exactly what a build over those documents counts (terms no kept row holds are dropped, so N, the average
        length and every document frequency are the live corpus's)."""
        term_ids: dict[str, int] = {}
        term_maps, row_maps, lengths, arrays = [], [], [], []
        offset = 0
        for stats, rows in zip(parts, keep):
            term_maps.append(np.fromiter((term_ids.setdefault(t, len(term_ids)) for t in stats.vocab),
                                         dtype=np.int64, count=len(stats.vocab)))
            row_map = np.full(stats.num_docs, -1, dtype=np.int64)
            kept = np.arange(stats.num_docs) if rows is None else rows
            row_map[kept] = np.arange(offset, offset + len(kept))
            offset += len(kept)
            row_maps.append(row_map)
            lengths.append(stats.doc_len[kept])
            arrays.append((stats.indptr, stats.indices, stats.tf))
        indptr, indices, tf = concat_postings(arrays, term_maps, row_maps, len(term_ids))
        vocab = list(term_ids)
        df = np.diff(indptr)
        if np.any(df == 0):  # terms only deleted rows held
            live = np.flatnonzero(df > 0)
            vocab = [vocab[t] for t in live]
            indptr = np.concatenate([[0], np.cumsum(df[live])]).astype(np.int64)
        doc_len = np.concatenate(lengths).astype(np.int64) if lengths else np.empty(0, dtype=np.int64)
        return cls(vocab, indptr, indices, tf.astype(np.int32), doc_len)

    def save(self, directory: Path) -> list[str]:
        np.savez(directory / STATS_FILE, indptr=self.indptr, indices=self.indices, tf=self.tf,
                 doc_len=self.doc_len)
        (directory / VOCAB_FILE).write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        return [STATS_FILE, VOCAB_FILE]

    @classmethod
    def load(cls, directory: Path) -> BM25Stats:
        return cls.from_bytes((directory / STATS_FILE).read_bytes(), (directory / VOCAB_FILE).read_bytes(),
                              directory / STATS_FILE)

    ARRAYS = ("indptr", "indices", "tf", "doc_len")  # the members of STATS_FILE

    @classmethod
    def from_bytes(cls, stats: bytes, vocab_json: bytes, source: Path) -> BM25Stats:
        """From the two files' contents; `source` names them in errors."""
        return cls.from_arrays(read_npz(stats, cls.ARRAYS), vocab_json, source)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], vocab_json: bytes, source: Path,
                    bounds: bool = True) -> BM25Stats:
        """From STATS_FILE's arrays (read, or memory-mapped by the index loader) and the vocabulary file's bytes,
        checked for consistency (`bounds`: every posting's row too); `source` names them in errors."""
        vocab = json.loads(vocab_json.decode("utf-8"))
        n_terms, n_docs = len(vocab), arrays["doc_len"].shape[0]
        indptr, indices = arrays["indptr"], arrays["indices"]
        if not consistent(indptr, indices, arrays["tf"], n_docs, n_terms, bounds=bounds):
            raise ValueError(f"{source}: BM25 arrays are inconsistent; rebuild the index")
        return cls(vocab, indptr, indices, arrays["tf"], arrays["doc_len"])

    def doc_tokens(self) -> list[list[str]]:
        """Rebuild bag-of-words token lists per document (for the `rank_bm25` reference backend)."""
        mat = sp.csr_matrix((self.tf, self.indices, self.indptr), shape=(len(self.vocab), self.num_docs)).tocsc()
        out: list[list[str]] = []
        for d in range(self.num_docs):
            s, e = mat.indptr[d], mat.indptr[d + 1]
            out.append([self.vocab[t] for t, f in zip(mat.indices[s:e], mat.data[s:e]) for _ in range(f)])
        return out


def okapi_idf(n: np.ndarray, num_docs: int) -> np.ndarray:
    """Okapi's IDF before rank-bm25's floor on negative values."""
    n = n.astype(np.float64)
    return np.log(num_docs - n + 0.5) - np.log(n + 0.5)


def okapi_mean_idf(n: np.ndarray, num_docs: int) -> float:
    """The mean okapi IDF over a vocabulary in first-seen order, which rank-bm25's floor scales: summed in order
    (cumsum is sequential like its loop), so a shard given the whole corpus's value floors with the same bits."""
    idf = okapi_idf(n, num_docs)
    return float(np.cumsum(idf)[-1]) / len(idf) if len(idf) else 0.0


def _idf(variant: str, n: np.ndarray, num_docs: int, epsilon: float, okapi_mean: float | None = None) -> np.ndarray:
    if variant == "okapi":
        idf = okapi_idf(n, num_docs)
        average = okapi_mean_idf(n, num_docs) if okapi_mean is None else okapi_mean
        return np.where(idf < 0, epsilon * average, idf)
    n = n.astype(np.float64)
    if variant == "bm25l":
        return math.log(num_docs + 1) - np.log(n + 0.5)
    if variant == "bm25plus":
        return math.log(num_docs + 1) - np.log(n)
    if variant == "lucene":
        return np.log(1.0 + (num_docs - n + 0.5) / (n + 0.5))
    raise ValueError(f"unknown BM25 variant {variant!r}")


class StatsCounter:
    """`BM25Stats` counted passage by passage in compact arrays (a term id and a count per distinct term of each
    passage, 8 bytes, instead of the passage's token list), so a build streams its corpus: a million passages of
    ~100 words hold a few hundred MB here, not their texts.

    Example:
        >>> counter = StatsCounter()
        >>> counter.add(["cat", "sat", "cat"]); counter.add(["dog"])
        >>> counter.stats().doc_freq.tolist()
        [1, 1, 1]
    """

    def __init__(self) -> None:
        self.term_ids: dict[str, int] = {}
        self._terms = array("i")  # per (passage, distinct term), in passage order then first-seen order
        self._tf = array("i")
        self._distinct = array("q")  # per passage
        self._lengths = array("q")

    @property
    def num_docs(self) -> int:
        return len(self._lengths)

    def add(self, tokens: Sequence[str]) -> None:
        counts = Counter(tokens)
        ids = self.term_ids
        self._terms.extend([ids.setdefault(t, len(ids)) for t in counts])
        self._tf.extend(counts.values())
        self._distinct.append(len(counts))
        self._lengths.append(len(tokens))

    def stats(self) -> BM25Stats:
        """The postings (CSR over terms, each term's passages ascending), term frequencies and lengths."""
        n_docs, n_terms = len(self._lengths), len(self.term_ids)
        terms = np.frombuffer(self._terms, dtype=np.int32) if self._terms else np.empty(0, dtype=np.int32)
        tf = np.frombuffer(self._tf, dtype=np.int32) if self._tf else np.empty(0, dtype=np.int32)
        distinct = np.frombuffer(self._distinct, dtype=np.int64) if self._distinct else np.empty(0, dtype=np.int64)
        docs = np.repeat(np.arange(n_docs, dtype=np.int32), distinct)
        # scipy's COO to CSR is a counting sort in C that keeps input order within a term (passages ascending):
        # no argsort of every entry, so the build peaks at about 20 bytes per (passage, term).
        mat = sp.csr_matrix((tf, (terms, docs)), shape=(n_terms, n_docs))
        del docs
        mat.sort_indices()
        lengths = np.frombuffer(self._lengths, dtype=np.int64).copy() if self._lengths else np.empty(0, np.int64)
        return BM25Stats(list(self.term_ids), mat.indptr.astype(np.int64), mat.indices.astype(np.int32, copy=False),
                         mat.data.astype(np.int32, copy=False), lengths)


def _weight(variant: str, idf: np.ndarray | np.floating, f: np.ndarray, norm: np.ndarray, k1: float,
            delta: float) -> np.ndarray:
    """Each posting's BM25 weight: term frequency `f`, the document's length norm `norm` (1 - b + b * dl / avgdl)
    and its term's `idf` (per posting, or one for a slice of one term's postings: the same bits either way)."""
    if variant == "okapi":
        return idf * (f * (k1 + 1) / (f + k1 * norm))
    if variant == "bm25l":
        # As rank-bm25 does (unlike Lv & Zhai's paper), the term weight is multiplied by tf, so a document without
        # the term gets 0.
        ctd = f / norm
        return idf * f * (k1 + 1) * (ctd + delta) / (k1 + ctd + delta)
    if variant == "bm25plus":
        return idf * (delta + f * (k1 + 1) / (k1 * norm + f))
    return idf * f / (f + k1 * norm)  # lucene


# Up to this many postings the weights are computed once, when the scorer is made (8 bytes each, and a read-only
# slice per query term); above it, from the raw counts of the query's own postings at query time, so opening a
# million-passage index neither allocates nor touches a weight per posting (the same formula, the same bits).
EAGER_POSTINGS = 16_000_000


class _LazyExcess:
    """The `excess` weights of a large index, computed per slice of one term's postings when a query reads them
    (what `Postings` slices; see EAGER_POSTINGS)."""

    def __init__(self, scorer: BM25Scorer, doc_norm: np.ndarray) -> None:
        self.scorer = scorer
        self.doc_norm = doc_norm
        cfg = scorer.config
        self.params = (cfg.variant, cfg.k1, cfg.resolved_delta())

    def __getitem__(self, span: slice) -> np.ndarray:
        s, e = span.start, span.stop
        sc = self.scorer
        stats = sc.stats
        t = int(np.searchsorted(stats.indptr, s, side="right")) - 1  # the term whose postings start at s
        variant, k1, delta = self.params
        weight = _weight(variant, sc.idf[t], stats.tf[s:e].astype(np.float64), self.doc_norm[stats.indices[s:e]],
                         k1, delta)
        return weight - sc.absent[t]


@dataclass(frozen=True)
class Collection:
    """The whole corpus's statistics for scoring one shard of it (`index.sharded`): passages, their total length,
    each of the shard's terms' document frequency in the whole corpus (aligned to the shard's vocabulary), and the
    mean okapi IDF over the whole vocabulary. With them a shard's scores equal the unsharded index's, bit for bit."""

    num_docs: int
    total_length: int
    doc_freq: np.ndarray
    okapi_mean: float


class BM25Scorer:
    """Scores queries against `BM25Stats` with one variant's formula; safe to share between threads.
    `collection`: score as one shard of a larger corpus (its N, average length and document frequencies)."""

    def __init__(self, stats: BM25Stats, config: BM25Config | None = None,
                 collection: Collection | None = None) -> None:
        self.stats = stats
        self.config = config or BM25Config()
        cfg = self.config
        k1, b, delta = cfg.k1, cfg.b, cfg.resolved_delta()
        n_docs = stats.num_docs
        if collection is None:
            avgdl = float(stats.doc_len.sum()) / n_docs if n_docs else 0.0
            self.idf = _idf(cfg.variant, stats.doc_freq, n_docs, cfg.epsilon)
        else:
            if len(collection.doc_freq) != len(stats.vocab):
                raise ValueError("the corpus statistics do not match the shard's vocabulary")
            total = collection.num_docs
            avgdl = float(collection.total_length) / total if total else 0.0
            self.idf = _idf(cfg.variant, collection.doc_freq, total, cfg.epsilon, collection.okapi_mean)
        # bm25plus gives every document a constant for each query term it lacks; store only the excess
        # over that constant so only postings are touched at query time, and add the constants back per query.
        self.absent = self.idf * delta if cfg.variant == "bm25plus" else np.zeros(len(stats.vocab))
        doc_norm = 1 - b + b * stats.doc_len / avgdl if avgdl > 0 else np.ones(n_docs)
        if len(stats.indices) <= EAGER_POSTINGS:
            term_of_posting = np.repeat(np.arange(len(stats.vocab)), stats.doc_freq)
            weight = _weight(cfg.variant, self.idf[term_of_posting], stats.tf.astype(np.float64),
                             doc_norm[stats.indices], k1, delta)
            self.excess: np.ndarray | _LazyExcess = weight - self.absent[term_of_posting]
            positive = None
        else:
            self.excess = _LazyExcess(self, doc_norm)
            # Every weight is > 0 where every idf is (a positive idf times a positive tf fraction); otherwise the
            # scorer counts hits exactly instead of by score.
            positive = bool(np.all(self.idf > 0))
        self.postings = Postings(stats.indptr, stats.indices, self.excess, n_docs, positive=positive)
        self._has_absent = bool(np.any(self.absent))

    @property
    def _positive(self) -> bool:
        """Whether every posting weight is > 0 (then a positive score means "holds a query term")."""
        return self.postings.positive

    def _query_terms(self, tokens: Sequence[str]) -> tuple[list[int], list[int] | None]:
        return query_terms(self.stats.term_ids, tokens)

    def scored_tokens(self, tokens: Sequence[str]) -> list[str]:
        """The tokens this scorer counts, in order, repeats kept: indexed terms among the first MAX_QUERY_TERMS
        distinct ones (what another implementation, e.g. the rank_bm25 backend, must be given to agree)."""
        ids, _ = self._query_terms(tokens)
        kept = {self.stats.vocab[i] for i in ids}
        return [t for t in tokens if t in kept]

    def _constant(self, ids: list[int], counts: list[int] | None) -> float:
        """What every document gets regardless of its terms (bm25plus: delta * idf per query term; else 0)."""
        if not self._has_absent or not ids:
            return 0.0
        absent = self.absent[ids]
        return float((absent if counts is None else absent * counts).sum())

    def get_scores(self, tokens: Sequence[str]) -> np.ndarray:
        """Scores for every document (what `rank_bm25`'s `get_scores` returns)."""
        ids, counts = self._query_terms(tokens)
        scores = self.postings.scores(ids, counts)
        constant = self._constant(ids, counts)
        return scores + constant if constant else scores

    def search(self, tokens: Sequence[str], k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k document rows and scores among documents that contain a query term (ties: lower row first);
        `allowed`: a boolean mask over rows that restricts the documents before the top-k (a metadata filter)."""
        ids, counts = self._query_terms(tokens)
        return self.postings.search(ids, counts, k, self._constant(ids, counts), allowed)

    def search_terms(self, terms: Sequence[str], counts: Sequence[int] | None, k: int, constant: float,
                     allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`search` for a query already resolved against the whole corpus (`CorpusTerms`): its distinct terms in
        order, their counts and its constant; the terms this shard lacks add nothing, as in an unsharded index."""
        get = self.stats.term_ids.get
        found = [(i, 1 if counts is None else c) for i, c in zip(map(get, terms), counts or [1] * len(terms))
                 if i is not None]
        ids = [i for i, _ in found]
        kept = None if counts is None else [c for _, c in found]
        return self.postings.search(ids, kept, k, constant, allowed)

    def search_batch(self, queries: Sequence[Sequence[str]], k: int,
                     allowed: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Many queries; the same results as `search` for each, bit for bit.

        Measured on SciFact, a loop over the per-query path beats both one sparse (queries x terms) @ (terms x
        documents) product and a dense (queries x documents) block: each query's accumulator stays in cache.
        """
        return [self.search(tokens, k, allowed) for tokens in queries]



def query_terms(term_ids: dict[str, int], tokens: Sequence[str]) -> tuple[list[int], list[int] | None]:
    """Distinct indexed terms of a query in first-seen order, and how often each occurs (None: once each, the
    common case, which then costs nothing over a plain lookup).

    rank-bm25 adds a repeated term once per occurrence; weighting its postings by the count gives the same sum
    (within rounding) for the cost of one read. Only the first MAX_QUERY_TERMS distinct terms count.
    """
    get = term_ids.get
    found = [i for i in map(get, tokens) if i is not None]
    counts: list[int] | None = None
    if len(set(found)) == len(found):  # the common case, without a Counter's cost
        ids = found
    else:
        by_term = Counter(found)
        ids, counts = list(by_term), list(by_term.values())
    if len(ids) > MAX_QUERY_TERMS:
        logger.warning("BM25 query has %d distinct terms; scoring the first %d (index.bm25.MAX_QUERY_TERMS=%d)",
                       len(ids), MAX_QUERY_TERMS, MAX_QUERY_TERMS)
        ids, counts = ids[:MAX_QUERY_TERMS], counts and counts[:MAX_QUERY_TERMS]
    return ids, counts


class CorpusTerms:
    """A sharded corpus's vocabulary, for resolving queries before they go to the shards: which of a query's
    terms the whole corpus indexes (and so count towards MAX_QUERY_TERMS), and bm25plus's constant for every term,
    also those a shard lacks.

    Example:
        >>> terms = CorpusTerms(["cat", "dog"], np.array([2, 1]), 3, BM25Config())
        >>> terms.resolve(["dog", "cow", "dog"])
        (['dog'], [2], 0.0)
    """

    def __init__(self, vocab: list[str], doc_freq: np.ndarray, num_docs: int, config: BM25Config,
                 okapi_mean: float | None = None) -> None:
        self.vocab = vocab
        self.term_ids = {t: i for i, t in enumerate(vocab)}
        idf = _idf(config.variant, doc_freq, num_docs, config.epsilon, okapi_mean)
        self.absent = idf * config.resolved_delta() if config.variant == "bm25plus" else None

    def resolve(self, tokens: Sequence[str]) -> tuple[list[str], list[int] | None, float]:
        """The query's distinct indexed terms (in order), their counts (None: once each) and its constant."""
        ids, counts = query_terms(self.term_ids, tokens)
        constant = 0.0
        if self.absent is not None and ids:
            absent = self.absent[ids]
            constant = float((absent if counts is None else absent * counts).sum())
        return [self.vocab[i] for i in ids], counts, constant
