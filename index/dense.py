"""Bi-encoder embeddings (sentence-transformers, normalized) and FAISS indexes: flat, hnsw, ivf, sq8.

Example:
    >>> from index.dense import Encoder
    >>> enc = Encoder("bundled:all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> enc.encode(["a query"]).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from index.config import DenseConfig, FaissConfig
from index.progress import bar
from index.runtime.batches import st_batches
from index.runtime.device import apply_precision, autocast, char_cap, placement
from index.runtime.models import load_model, resolve_model

logger = logging.getLogger(__name__)

FAISS_FILE = "faiss.index"
EMBEDDINGS_FILE = "embeddings.npy"


class Encoder:
    """A sentence-transformers bi-encoder run by `index.runtime`'s device/precision rules (torch), or with its
    transformer converted to OpenVINO (backend openvino)."""

    def __init__(self, model: str = "bundled:all-MiniLM-L6-v2", config: DenseConfig | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.config = config or DenseConfig(model=model)
        self.name = model
        self.backend, self.precision = self._pick_backend()
        self.device, self.dtype = placement(self.config.device, self.precision, self.backend)
        kwargs = {"device": self.device, "trust_remote_code": self.config.trust_remote_code}
        self.model = apply_precision(load_model(model, "bi-encoder", SentenceTransformer, **kwargs), self.device,
                                     self.dtype)
        if self.config.max_length:
            self.model.max_seq_length = self.config.max_length
        self._ov = None
        if self.backend == "openvino" and self.config.backend == "auto" \
                and getattr(self.model[0], "auto_model", None) is None:
            self.backend = "torch"  # not a Hugging Face transformer: auto runs it as it is
        if self.backend == "openvino":
            self._ov = self._load_openvino(model)
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim_fn())
        # Hugging Face fast tokenizers are not safe to call from several threads at once.
        self._lock = threading.Lock()

    def _pick_backend(self) -> tuple[str, str]:
        """(backend, precision): `auto` is torch on an accelerator and OpenVINO fp32 on a CPU (lossless, faster;
        bf16 only when asked: it moves nDCG@10 by about 0.001), torch where OpenVINO is not installed."""
        backend, precision = self.config.backend, self.config.precision
        if backend != "auto":
            return backend, precision
        from index.runtime.device import pick_device
        from index.runtime.openvino import available

        if pick_device(self.config.device) != "cpu" or not available():
            return "torch", precision
        return "openvino", "fp32" if precision == "auto" else precision

    def _load_openvino(self, model: str):
        """Convert the first module's transformer once (cached); the pooling/normalize modules stay in torch."""
        from index.runtime.openvino import OpenVinoModel, ensure_converted, resolve_precision

        transformer = getattr(self.model[0], "auto_model", None)
        if transformer is None:
            raise ValueError(f"dense.backend openvino: the first module of {model} is not a Hugging Face "
                             "transformer; use backend: torch")
        sample = self.model.preprocess(["a query", "a somewhat longer passage of text"])
        path = ensure_converted(transformer, resolve_model(model), sample, output="last_hidden_state")
        runner = OpenVinoModel(path, resolve_precision(self.precision))
        transformer.to("meta")  # the weights now live in the compiled model
        return runner

    def _encode_openvino(self, texts: list[str], show_progress: bool, desc: str) -> np.ndarray:
        """Length-sorted batches through the compiled transformer, then the model's own pooling/normalize."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bs = self.config.batch_size
        batches = [order[s : s + bs] for s in range(0, len(texts), bs)]
        tail = list(self.model)[1:]
        for idx in bar(batches, desc, "batch", show=show_progress):
            features = self.model.preprocess([texts[i] for i in idx])
            features["token_embeddings"] = torch.from_numpy(self._ov(features))
            for module in tail:
                features = module(features)
            out[idx] = torch.nn.functional.normalize(features["sentence_embedding"].float(), dim=-1).numpy()
        return out

    @property
    def max_chars(self) -> int:
        return char_cap(self.model.max_seq_length)

    def encode(self, texts: Sequence[str], *, prefix: str = "", show_progress: bool = False,
               desc: str = "dense: encoding") -> np.ndarray:
        cap = self.max_chars
        texts = [prefix + t[:cap] for t in texts]
        if self._ov is not None:
            with self._lock, torch.inference_mode():
                return self._encode_openvino(texts, show_progress, desc)
        bs = self.config.batch_size
        with self._lock, torch.inference_mode(), autocast(self.device, self.dtype):
            if not show_progress or len(texts) <= bs:
                emb = self.model.encode(texts, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=False)
            else:  # the model's own batches, one call each, under a bar that says what it encodes
                emb = np.empty((len(texts), self.dim), dtype=np.float32)
                for rows in bar(st_batches(self.model, texts, bs), desc, "batch"):
                    emb[rows] = self.model.encode([texts[i] for i in rows], batch_size=bs, normalize_embeddings=True,
                                                  convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(emb, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.encode(queries, prefix=self.config.query_prefix)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray:
        return self.encode(texts, prefix=self.config.document_prefix, show_progress=show_progress,
                           desc="dense: encoding passages")


# IVF's k-means learns from at most this many vectors per list (a fixed-seed sample): FAISS warns below 39, and at a
# million passages training on all of them (4,000 lists x 1M x 384 per iteration) takes many minutes on two cores.
IVF_TRAIN_PER_LIST = 64


def train_sample(embeddings: np.ndarray, nlist: int) -> np.ndarray:
    """The vectors an IVF quantizer of `nlist` lists is trained on: all of them, or a fixed-seed sample of
    IVF_TRAIN_PER_LIST per list (so the same embeddings always train the same quantizer)."""
    limit = IVF_TRAIN_PER_LIST * nlist
    if len(embeddings) <= limit:
        return embeddings
    rows = np.sort(np.random.default_rng(0).choice(len(embeddings), size=limit, replace=False))
    return np.ascontiguousarray(embeddings[rows])


def build_faiss(embeddings: np.ndarray, config: FaissConfig) -> faiss.Index:
    n, dim = embeddings.shape
    metric = faiss.METRIC_INNER_PRODUCT
    if config.type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif config.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, metric)
        index.hnsw.efConstruction = config.ef_construction
    elif config.type == "ivf":
        nlist = config.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, metric)
        index.train(train_sample(embeddings, nlist))
    else:  # sq8
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, metric)
        index.train(embeddings)
    # One add: HNSW inserts a batch level by level, so adding in blocks (for a progress bar) would build another graph.
    logger.info("dense: building the FAISS %s index over %s vectors", config.type, f"{n:,}")
    index.add(embeddings)
    return index


def configure_search(index: faiss.Index, config: FaissConfig) -> None:
    """Search-time knobs live in the config, not the saved file, so they can change without a rebuild."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = config.ef_search
    ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
    if ivf is not None:
        ivf.nprobe = config.nprobe


# Below this many allowed rows, a filtered search over an approximate index scores the allowed rows exactly (cheap,
# and a graph or list search under a very selective filter may find fewer than k of them).
EXACT_FILTERED_ROWS = 4096


def _search_params(index: faiss.Index, config: FaissConfig, selector: Any) -> Any:
    """Search parameters carrying an id selector; they replace the index's own knobs, so those are set again."""
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=config.ef_search)
    ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
    if ivf is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=config.nprobe)
    return faiss.SearchParameters(sel=selector)


def exact_top_k(embeddings: np.ndarray, rows: np.ndarray, queries: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of `rows` by inner product with each query, exactly (score descending, row ascending on ties),
    padded with -1 like a FAISS search."""
    scores = np.asarray(queries, dtype=np.float32) @ np.asarray(embeddings[rows], dtype=np.float32).T
    k_out = min(k, len(rows))
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    out = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for q in range(len(queries)):
        order = np.lexsort((rows, -scores[q]))[:k_out]
        ids[q, :k_out], out[q, :k_out] = rows[order], scores[q][order]
    return ids, out


def search_faiss(index: faiss.Index, queries: np.ndarray, k: int, config: FaissConfig,
                 embeddings: np.ndarray | None = None,
                 allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows and inner products; with `rescore`, approximate candidates are re-scored with fp32 vectors.
    `allowed` (a boolean mask over rows) restricts the search before the top-k: FAISS searches with an id
    selector, so k results come back whenever k rows are allowed (an approximate index under a very selective
    filter scores the allowed rows exactly)."""
    k = min(k, index.ntotal)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    params = None
    if allowed is not None:
        allowed_rows = np.flatnonzero(allowed)
        approximate = config.type != "flat" and embeddings is not None
        if approximate and len(allowed_rows) <= EXACT_FILTERED_ROWS:
            return exact_top_k(embeddings, allowed_rows, queries, k)
        bitmap = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        params = _search_params(index, config, selector)
    fetch = max(k, config.rescore) if embeddings is not None and config.rescore else k
    scores, ids = index.search(queries, fetch, params=params)
    if params is not None and embeddings is not None and config.type != "flat":
        want = min(k, len(allowed_rows))
        for q in np.flatnonzero((ids >= 0).sum(axis=1) < want):  # the graph/lists ran out under the filter
            ids[q, :k], scores[q, :k] = (a[0] for a in exact_top_k(embeddings, allowed_rows, queries[q : q + 1], k))
            ids[q, k:], scores[q, k:] = -1, -np.inf
    if fetch > k:
        for q in range(len(queries)):
            valid = ids[q] >= 0
            exact = embeddings[ids[q][valid]] @ queries[q]
            order = np.argsort(-exact, kind="stable")
            ids[q, : valid.sum()], scores[q, : valid.sum()] = ids[q][valid][order], exact[order]
        scores, ids = scores[:, :k], ids[:, :k]
    return ids, scores


def save_faiss(index: faiss.Index, directory: Path) -> str:
    # Through a Python file, not a path: faiss only prints a failed fclose (a full disk), leaving a short file
    # that the manifest would then certify; Python raises OSError on every failed write, the last flush included.
    with open(directory / FAISS_FILE, "wb") as fh:
        faiss.write_index(index, faiss.PyCallbackIOWriter(fh.write))
    return FAISS_FILE


def map_flags() -> tuple[int, ...]:
    """faiss's read flags that map an index read-only, tried in turn: the vectors of flat, hnsw and sq8 indexes
    (faiss's `IndexFlatCodes`) are mapped only with IO_FLAG_MMAP_IFC (faiss >= 1.11; with IO_FLAG_MMAP alone they
    were read into memory: a million-vector hnsw index's 1.7 GB resident at open), which faiss refuses for IVF
    indexes, whose inverted lists IO_FLAG_MMAP maps."""
    ro = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    ifc = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)
    return (ro | ifc, ro) if ifc else (ro,)


def load_faiss(source: Path | Callable[[int], bytes], mapped: Path | None = None) -> faiss.Index:
    """From an index directory, or from `read(n)` (at most n bytes per call) of an already open, checked file:
    faiss pulls the bytes in blocks, so no second copy of the index is held in memory. `mapped`: a path naming
    that same open file (Linux `/proc/self/fd/N`): the index is then memory-mapped read-only (every type this
    library builds: its vectors and lists become resident as searches read them, so opening a million-vector
    index costs seconds and memory grows with use), and read through `read` where faiss cannot map it."""
    if isinstance(source, Path):
        return faiss.read_index(str(source / FAISS_FILE))
    if mapped is not None and mapped.exists():
        for flags in map_flags():
            try:
                return faiss.read_index(str(mapped), flags)
            except RuntimeError as exc:
                logger.debug("faiss cannot map %s with flags %#x (%s)", mapped, flags, exc)
    return faiss.read_index(faiss.PyCallbackIOReader(source))
