"""Index components: what each first-stage retriever writes into an index directory and reads back from it.

A component is built passage by passage (`add`, then `finish` writes its files into the build's temp directory)
and loaded from a checked `IndexFiles` handle (`load`). Its config class names it (`RetrieverConfig.COMPONENT`),
so the builder and the loader iterate over the enabled retrievers and never name one. A new retriever adds a
class here or in its own module (SPLADE: `index/splade.py`); see docs/architecture.md.

Example:
    >>> from index.components import component_class
    >>> component_class("bm25").FILES
    ('bm25.npz', 'bm25_vocab.json')
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from index.analyzer import Analyzer
from index.arrays import map_npy, map_npz
from index.bm25 import STATS_FILE, VOCAB_FILE, BM25Stats, StatsCounter
from index.config import RETRIEVERS, BM25Config, BuildConfig, DenseConfig, FaissConfig, RetrieverConfig, retriever_type
from index.manifest import IndexFiles, Manifest


class Component:
    """One retriever's part of an index. Subclasses set `FILES` (every file it writes, also when it has
    nothing to store) and implement the four methods below."""

    FILES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, config: RetrieverConfig, model: Any | None = None) -> None:
        self.name = name
        self.config = config
        self.model = model  # an already loaded model to build with (tests, benchmarks), else loaded from config

    def add(self, text: str) -> None:
        """One passage's text (`index.documents.model_text`), in row order."""
        raise NotImplementedError

    def finish(self, directory: Path, show_progress: bool) -> dict[str, Any]:
        """Write `FILES` into `directory`; return what the manifest records about the component (merged into it:
        `models`, `counts` and top-level keys)."""
        raise NotImplementedError

    # A distributed build (`index.distributed`) splits `add` in two: a worker turns a block of passages into the
    # component's part of it (`encode_block`), and the builder adds the parts in row order (`add_block`), each
    # restricted to the rows its index keeps (one shard's); `finish` then writes the same files `add` would have.

    def encode_block(self, texts: list[str]) -> Any:
        """This component's part for a block of consecutive passages (run on a worker, the model loaded once)."""
        raise NotImplementedError(f"the {self.name} retriever cannot be built on Ray yet; build it without --ray")

    def add_block(self, part: Any, rows: np.ndarray | None) -> None:
        """A block's part (`encode_block`), restricted to `rows` of it (ascending; None: all), in row order."""
        raise NotImplementedError(f"the {self.name} retriever cannot be built on Ray yet; build it without --ray")

    @classmethod
    def load(cls, files: IndexFiles, manifest: Manifest) -> Any:
        """The component's data, read through the checked handle `files`."""
        raise NotImplementedError

    @classmethod
    def sizes(cls, part: Any) -> dict[str, int]:
        """Rows per array of a loaded part; each must equal the store's passage count."""
        raise NotImplementedError

    @classmethod
    def combine(cls, parts: Sequence[Any], keep: Sequence[np.ndarray | None], config: RetrieverConfig) -> Any:
        """One part over the live rows of several segments' parts (`keep[i]`: part i's rows kept, ascending; None:
        all), renumbered in order: what searching an updated index reads. A single part kept whole is itself."""
        raise NotImplementedError

    @classmethod
    def write_merged(cls, parts: Sequence[Any], keep: Sequence[np.ndarray | None], config: RetrieverConfig,
                     directory: Path) -> dict[str, Any]:
        """Write `FILES` for one segment holding the live rows of `parts` (a merge); returns what `finish`
        returns."""
        raise NotImplementedError


def import_path(path: str) -> Any:
    """The object a "module:name" path names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def config_class(name: str) -> type[RetrieverConfig]:
    """The config class of retriever `name` (a `BuildConfig` field)."""
    if name not in RETRIEVERS:
        raise KeyError(f"no first-stage retriever named {name!r}; known: {', '.join(RETRIEVERS)}")
    found = retriever_type(BuildConfig.model_fields[name].annotation)
    assert found is not None
    return found


def component_class(name: str) -> type[Component]:
    return import_path(config_class(name).COMPONENT)


def all_files() -> frozenset[str]:
    """Every file name any component writes."""
    return frozenset(f for name in RETRIEVERS for f in component_class(name).FILES)


class BM25Component(Component):
    """Raw BM25 statistics (term frequencies, document lengths) of the analyzed passages."""

    FILES = (STATS_FILE, VOCAB_FILE)

    def __init__(self, name: str, config: BM25Config, model: Any | None = None) -> None:
        super().__init__(name, config, model)
        self.analyzer = Analyzer(config.analyzer)
        self.counter = StatsCounter()  # counted as passages arrive: the build never holds their tokens
        self.blocks: list[tuple[BM25Stats, np.ndarray | None]] = []

    def add(self, text: str) -> None:
        self.counter.add(self.analyzer.tokenize(text))

    def encode_block(self, texts: list[str]) -> BM25Stats:
        return BM25Stats.build(self.analyzer.tokenize(t) for t in texts)

    def add_block(self, part: BM25Stats, rows: np.ndarray | None) -> None:
        self.blocks.append((part, rows))

    def finish(self, directory: Path, show_progress: bool) -> dict[str, Any]:
        if self.blocks:  # exactly what counting the blocks' kept passages in order gives (BM25Stats.concat)
            stats = BM25Stats.concat([p for p, _ in self.blocks], [r for _, r in self.blocks])
            self.blocks = []
        else:
            stats = self.counter.stats()
        self.counter = StatsCounter()
        stats.save(directory)
        return {"counts": {"vocabulary": len(stats.vocab)}}

    @classmethod
    def load(cls, files: IndexFiles, manifest: Manifest) -> BM25Stats:
        with files.reading(STATS_FILE) as reader:
            arrays = map_npz(reader, BM25Stats.ARRAYS)
        # A file whose sha256 matched the manifest holds the arrays its build wrote: checking every posting's row
        # bound again would read (and keep resident) all of them at open.
        return BM25Stats.from_arrays(arrays, files.read_bytes(VOCAB_FILE), files.path / STATS_FILE,
                                     bounds=not files.verify)

    @classmethod
    def sizes(cls, part: BM25Stats) -> dict[str, int]:
        return {"bm25": part.num_docs}

    @classmethod
    def combine(cls, parts: Sequence[BM25Stats], keep: Sequence[np.ndarray | None],
                config: RetrieverConfig) -> BM25Stats:
        if len(parts) == 1 and keep[0] is None:
            return parts[0]
        return BM25Stats.concat(parts, keep)

    @classmethod
    def write_merged(cls, parts: Sequence[BM25Stats], keep: Sequence[np.ndarray | None], config: RetrieverConfig,
                     directory: Path) -> dict[str, Any]:
        stats = BM25Stats.concat(parts, keep)
        stats.save(directory)
        return {"counts": {"vocabulary": len(stats.vocab)}}


class DenseParts:
    """A loaded dense component: the FAISS index and the memory-mapped fp32 embeddings it was built from."""

    def __init__(self, index: Any, embeddings: np.ndarray) -> None:
        self.index = index
        self.embeddings = embeddings

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def rows(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int, config: FaissConfig,
               allowed: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k rows and inner products per query (best first); `allowed`: a boolean mask over rows."""
        from index.dense import search_faiss

        if allowed is not None and not allowed.any():
            return [(np.empty(0, dtype=np.int64), np.empty(0)) for _ in queries]
        ids, scores = search_faiss(self.index, queries, k, config, self.embeddings, allowed)
        out = []
        for row_ids, row_scores in zip(ids, scores):
            valid = row_ids >= 0
            rows, found = row_ids[valid].astype(np.int64), row_scores[valid].astype(np.float64)
            # FAISS leaves the order of equal scores to its heap; lower row first, as BM25 and segments order
            # them, so a sharded index (which merges by score, then corpus position) gives the same list.
            order = np.lexsort((rows, -found))
            out.append((rows[order], found[order]))
        return out


# An approximate index's segments of at most this many rows are searched exactly (brute force over their vectors).
EXACT_SEGMENT_ROWS = 20_000


class SegmentedDense:
    """Approximate FAISS indexes of several segments searched as one: each segment with an id selector that
    leaves out its deleted rows (and what a filter excludes), the hits renumbered to live rows and merged."""

    def __init__(self, parts: Sequence[DenseParts], keep: Sequence[np.ndarray | None]) -> None:
        self.parts = list(parts)
        self.row_maps: list[np.ndarray] = []  # per segment: local row -> live row, -1 for a deleted row
        self.live: list[np.ndarray | None] = []  # per segment: which local rows are live (None: all)
        offset = 0
        for part, rows in zip(parts, keep):
            row_map = np.full(part.rows, -1, dtype=np.int64)
            kept = np.arange(part.rows) if rows is None else rows
            row_map[kept] = np.arange(offset, offset + len(kept))
            offset += len(kept)
            self.row_maps.append(row_map)
            self.live.append(None if rows is None else row_map >= 0)
        self.num_rows = offset
        self.index = parts[0].index  # the first segment's: its type and dimension stand for all

    @property
    def dim(self) -> int:
        return int(self.parts[0].index.d)

    @property
    def rows(self) -> int:
        return self.num_rows

    @property
    def embeddings(self) -> np.ndarray:
        return np.concatenate([p.embeddings if live is None else p.embeddings[live]
                               for p, live in zip(self.parts, self.live)])

    def search(self, queries: np.ndarray, k: int, config: FaissConfig,
               allowed: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        from index.dense import exact_top_k

        found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in queries]
        for part, row_map, live in zip(self.parts, self.row_maps, self.live):
            mask = live
            if allowed is not None:
                local = np.zeros(part.rows, dtype=bool)
                kept = row_map >= 0
                local[kept] = allowed[row_map[kept]]
                mask = local
            if part.rows <= EXACT_SEGMENT_ROWS:
                # A small delta segment: scoring its vectors exactly costs less than one more graph or list search
                # (measured: 11 hnsw segments searched each were 2.3x one merged graph).
                rows = np.arange(part.rows) if mask is None else np.flatnonzero(mask)
                ids, scores = exact_top_k(part.embeddings, rows, queries, k)
                hits = [(i[i >= 0], s[i >= 0].astype(np.float64)) for i, s in zip(ids, scores)]
            else:
                hits = part.search(queries, k, config, mask)
            for q, (rows, scores) in enumerate(hits):
                found[q].append((row_map[rows], scores))
        out = []
        for hits in found:
            rows = np.concatenate([h[0] for h in hits])
            scores = np.concatenate([h[1] for h in hits])
            order = np.lexsort((rows, -scores))[:k]
            out.append((rows[order], scores[order]))
        return out


# Passages encoded per call, as they arrive: the build holds at most this many texts (not the corpus's), and a
# Ray build's workers encode the same blocks (`index.distributed.BLOCK_PASSAGES`), so both give the same bits.
ENCODE_BLOCK = 512


class DenseComponent(Component):
    """Normalized bi-encoder embeddings of the passages and a FAISS index over them."""

    # index.dense's EMBEDDINGS_FILE and FAISS_FILE, written out so that listing files loads no faiss or torch.
    FILES = ("embeddings.npy", "faiss.index")

    def __init__(self, name: str, config: DenseConfig, model: Any | None = None) -> None:
        super().__init__(name, config, model)
        from index.runtime.device import char_cap

        self.texts: list[str] = []
        self.cap = char_cap(512)  # the encoder cuts to its own limit too; this keeps a 20 MB text out of memory

        self.blocks: list[np.ndarray] = []

    def add(self, text: str) -> None:
        self.texts.append(text[: self.cap])
        if len(self.texts) >= ENCODE_BLOCK:
            self._encode_pending(False)

    def _encode_pending(self, show_progress: bool) -> None:
        if self.texts:
            self.blocks.append(self._encoder().encode_documents(self.texts, show_progress=show_progress))
            self.texts = []

    def _encoder(self) -> Any:
        from index.dense import Encoder

        if self.model is None:
            self.model = Encoder(self.config.model, self.config)
        return self.model

    def encode_block(self, texts: list[str]) -> np.ndarray:
        return self._encoder().encode_documents([t[: self.cap] for t in texts], show_progress=False)

    def add_block(self, part: np.ndarray, rows: np.ndarray | None) -> None:
        self.blocks.append(part if rows is None else part[rows])

    def finish(self, directory: Path, show_progress: bool) -> dict[str, Any]:
        from index.dense import EMBEDDINGS_FILE, build_faiss, save_faiss

        self._encode_pending(False)  # the last block, at most ENCODE_BLOCK passages
        if self.blocks:
            emb = np.ascontiguousarray(np.concatenate(self.blocks), dtype=np.float32)
        else:
            emb = self._encoder().encode_documents([], show_progress=False)
        self.blocks = []
        np.save(directory / EMBEDDINGS_FILE, emb, allow_pickle=False)
        save_faiss(build_faiss(emb, self.config.faiss), directory)
        return {"models": {self.name: self.config.model}, "embedding_dim": int(emb.shape[1])}

    @classmethod
    def load(cls, files: IndexFiles, manifest: Manifest) -> DenseParts:
        from index.dense import EMBEDDINGS_FILE, FAISS_FILE, load_faiss

        with files.reading(FAISS_FILE) as reader:  # mapped through the very file whose sha256 was checked
            index = load_faiss(reader.read, mapped=Path(f"/proc/self/fd/{reader.fileno()}"))
        with files.reading(EMBEDDINGS_FILE) as reader:
            embeddings = map_npy(reader)
        return DenseParts(index, embeddings)

    @classmethod
    def sizes(cls, part: DenseParts) -> dict[str, int]:
        return {"faiss": int(part.index.ntotal), "embeddings": len(part.embeddings)}

    @classmethod
    def combine(cls, parts: Sequence[DenseParts], keep: Sequence[np.ndarray | None],
                config: DenseConfig) -> DenseParts | SegmentedDense:
        """Flat: one exact index over the live rows' vectors (the same index a build makes of them). Approximate
        types: the segments' own indexes, searched with selectors (`SegmentedDense`)."""
        if len(parts) == 1 and keep[0] is None:
            return parts[0]
        if config.faiss.type != "flat":
            return SegmentedDense(parts, keep)
        import faiss

        embeddings = _live_embeddings(parts, keep)
        index = faiss.IndexFlatIP(parts[0].dim)
        index.add(embeddings)
        return DenseParts(index, embeddings)

    @classmethod
    def write_merged(cls, parts: Sequence[DenseParts], keep: Sequence[np.ndarray | None], config: DenseConfig,
                     directory: Path) -> dict[str, Any]:
        from index.dense import EMBEDDINGS_FILE, build_faiss, save_faiss

        embeddings = _live_embeddings(parts, keep)
        np.save(directory / EMBEDDINGS_FILE, embeddings, allow_pickle=False)
        save_faiss(build_faiss(embeddings, config.faiss), directory)  # approximate types: trained afresh
        return {"models": {config_name(config): config.model}, "embedding_dim": int(embeddings.shape[1])}


def _live_embeddings(parts: Sequence[DenseParts], keep: Sequence[np.ndarray | None]) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([np.asarray(p.embeddings if rows is None else p.embeddings[rows])
                                                for p, rows in zip(parts, keep)]), dtype=np.float32)


def config_name(config: RetrieverConfig) -> str:
    """The retriever name a config is set under (the `BuildConfig` field of its type)."""
    return next(name for name in RETRIEVERS if config_class(name) is type(config))
