"""SPLADE: a sentence-transformers `SparseEncoder` and the inverted index of its passage weights.

Build time: every passage is encoded to vocabulary-term weights and stored as impact postings (a CSR matrix over
terms, `index/postings.py`, the arithmetic BM25 uses). Query time (`retrieval/splade.py`): the query is encoded
the same way and scored by the dot product over the query's own postings, which equals
`SparseEncoder.similarity` (dot product) of the two texts.

No SPLADE weights can be downloaded on the project's build machines; with internet, any SparseEncoder works, e.g.
`naver/splade-cocondenser-ensembledistil` or `naver/splade-v3` (see the README).

Example:
    >>> from index.splade import SparseEncoderModel
    >>> enc = SparseEncoderModel("naver/splade-cocondenser-ensembledistil")  # doctest: +SKIP
    >>> enc.encode(["what causes tides?"], query=True).nnz  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from index.arrays import read_npz
from index.components import Component
from index.config import SpladeConfig
from index.manifest import IndexFiles, Manifest
from index.postings import Postings, concat_postings, consistent
from index.progress import bar
from index.runtime.batches import st_batches

SPLADE_FILE = "splade.npz"


class SparseEncoderModel:
    """A `SparseEncoder` on the chosen device and precision; `encode` returns a (texts x vocabulary) CSR matrix.
    Safe to share between threads (calls are serialized: fast tokenizers are not thread-safe)."""

    def __init__(self, model: str, config: SpladeConfig | None = None) -> None:
        import torch
        from sentence_transformers import SparseEncoder

        from index.runtime.device import apply_precision, autocast, char_cap, placement
        from index.runtime.models import ModelNotAvailableError, load_model

        self.config = config or SpladeConfig(model=model)
        self.name = model
        self.device, self.dtype = placement(self.config.device, self.config.precision)
        self.model = load_model(model, "sparse encoder", SparseEncoder, device=self.device,
                                trust_remote_code=self.config.trust_remote_code)
        apply_precision(self.model, self.device, self.dtype)
        if self.config.max_length:
            self.model.max_seq_length = self.config.max_length
        vocab = self.model.tokenizer.get_vocab()
        # The output width as encoded, not as declared: a pooling module may leave its dimension unset until used.
        with torch.inference_mode():
            probe = self.model.encode_query(["a"], convert_to_tensor=True, convert_to_sparse_tensor=True)
        self.vocab_size = int(probe.shape[-1])
        if self.vocab_size != len(vocab):
            raise ModelNotAvailableError(
                f"{model!r} is not a sparse encoder over its vocabulary (its output has {self.vocab_size} "
                f"dimensions, its tokenizer {len(vocab)} terms); first_stage.splade.model needs a SparseEncoder "
                "such as naver/splade-cocondenser-ensembledistil (a MLMTransformer + SpladePooling model)")
        ordered = sorted(vocab, key=vocab.__getitem__)
        self.vocabulary = {"size": self.vocab_size,
                           "sha256": hashlib.sha256("\n".join(ordered).encode("utf-8")).hexdigest()}
        self.cap = char_cap(self.model.max_seq_length)
        self._autocast = lambda: autocast(self.device, self.dtype)
        self._inference = torch.inference_mode
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], *, query: bool, show_progress: bool = False) -> sp.csr_matrix:
        """Term weights of `texts` as queries or as documents (the model's own prompts/routing for each)."""
        if not texts:
            return sp.csr_matrix((0, self.vocab_size), dtype=np.float32)
        texts = [t[: self.cap] for t in texts]
        encode = self.model.encode_query if query else self.model.encode_document
        bs = self.config.batch_size
        batches = st_batches(self.model, texts, bs) if show_progress else [np.arange(len(texts))]
        rows_out, cols_out, values_out = [], [], []
        with self._lock, self._inference(), self._autocast():
            for rows in bar(batches, f"splade: encoding {'queries' if query else 'passages'}", "batch",
                            show=show_progress):
                emb = encode([texts[i] for i in rows], batch_size=bs, convert_to_tensor=True,
                             convert_to_sparse_tensor=True, show_progress_bar=False)
                emb = emb.coalesce().cpu()  # inference tensors are only usable inside inference mode
                local, cols = emb.indices().numpy()
                rows_out.append(rows[local])
                cols_out.append(cols)
                values_out.append(emb.values().float().numpy())
        return sp.csr_matrix((np.concatenate(values_out), (np.concatenate(rows_out), np.concatenate(cols_out))),
                             shape=(len(texts), self.vocab_size), dtype=np.float32)


class SpladeParts:
    """A loaded SPLADE component: passage-weight postings over the model's vocabulary."""

    def __init__(self, postings: Postings, vocab_size: int) -> None:
        self.postings = postings
        self.vocab_size = vocab_size


class SpladeComponent(Component):
    """Passage term weights from a SparseEncoder, stored as impact postings (`splade.npz`)."""

    FILES = (SPLADE_FILE,)

    def __init__(self, name: str, config: SpladeConfig, model: Any | None = None) -> None:
        super().__init__(name, config, model)
        self.texts: list[str] = []

    def add(self, text: str) -> None:
        self.texts.append(text)

    def finish(self, directory: Path, show_progress: bool) -> dict[str, Any]:
        encoder = self.model or SparseEncoderModel(self.config.model, self.config)
        docs = encoder.encode(self.texts, query=False, show_progress=show_progress)
        num_docs = len(self.texts)
        self.texts = []
        by_term = docs.T.tocsr()  # terms x passages: each row a posting list, passage rows ascending
        by_term.sort_indices()
        with open(directory / SPLADE_FILE, "wb") as fh:
            np.savez(fh, indptr=by_term.indptr.astype(np.int64), indices=by_term.indices.astype(np.int32),
                     weights=by_term.data.astype(np.float32), num_docs=np.int64(num_docs))
        return {"models": {self.name: self.config.model}, "vocabularies": {self.name: encoder.vocabulary},
                "counts": {f"{self.name}_postings": int(by_term.nnz)}}

    @classmethod
    def load(cls, files: IndexFiles, manifest: Manifest) -> SpladeParts:
        z = read_npz(files.read_bytes(SPLADE_FILE), ("indptr", "indices", "weights", "num_docs"))
        indptr, indices, weights = z["indptr"], z["indices"], z["weights"]
        num_docs = int(z["num_docs"])
        if not consistent(indptr, indices, weights, num_docs):
            raise ValueError(f"{files.path / SPLADE_FILE}: SPLADE postings are inconsistent")
        return SpladeParts(Postings(indptr, indices, weights, num_docs), len(indptr) - 1)

    @classmethod
    def sizes(cls, part: SpladeParts) -> dict[str, int]:
        return {"splade": part.postings.num_docs}

    @staticmethod
    def _concat(parts: Sequence[SpladeParts], keep: Sequence[np.ndarray | None]) -> tuple[tuple, int]:
        row_maps, offset = [], 0
        for part, rows in zip(parts, keep):
            n = part.postings.num_docs
            row_map = np.full(n, -1, dtype=np.int64)
            kept = np.arange(n) if rows is None else rows
            row_map[kept] = np.arange(offset, offset + len(kept))
            offset += len(kept)
            row_maps.append(row_map)
        arrays = [(p.postings.indptr, p.postings.indices, p.postings.weights) for p in parts]
        return concat_postings(arrays, [None] * len(parts), row_maps, parts[0].vocab_size), offset

    @classmethod
    def combine(cls, parts: Sequence[SpladeParts], keep: Sequence[np.ndarray | None],
                config: SpladeConfig) -> SpladeParts:
        if len(parts) == 1 and keep[0] is None:
            return parts[0]
        (indptr, indices, weights), rows = cls._concat(parts, keep)
        return SpladeParts(Postings(indptr, indices, weights, rows), parts[0].vocab_size)

    @classmethod
    def write_merged(cls, parts: Sequence[SpladeParts], keep: Sequence[np.ndarray | None], config: SpladeConfig,
                     directory: Path) -> dict[str, Any]:
        (indptr, indices, weights), rows = cls._concat(parts, keep)
        with open(directory / SPLADE_FILE, "wb") as fh:
            np.savez(fh, indptr=indptr, indices=indices.astype(np.int32), weights=weights.astype(np.float32),
                     num_docs=np.int64(rows))
        return {"counts": {"splade_postings": int(len(indices))}}
