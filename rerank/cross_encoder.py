"""`CrossEncoderReranker`: sentence-transformers' CrossEncoder run by `index.runtime` (device/precision rules, the
onnx and openvino backends), with token-length-sorted batches, counted truncation, activation and label choice,
and MaxP over a document's passages.

Example:
    >>> from rerank.cross_encoder import CrossEncoderReranker
    >>> rr = CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L6-v2")  # doctest: +SKIP
    >>> rr.rank("what is BM25?", ["BM25 is a ranking function.", "Paris is in France."])  # doctest: +SKIP
    [{'corpus_id': 0, 'score': ...}, {'corpus_id': 1, 'score': ...}]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from index.extras import require
from index.progress import bar
from index.runtime.device import apply_precision, autocast, char_cap, pick_device, placement
from index.runtime.models import load_model, resolve_model
from rerank.config import RerankConfig

logger = logging.getLogger(__name__)


class CrossEncoderReranker:
    """Re-scores (query, passage) pairs. Safe to share between threads (inference is serialized by a lock)."""

    def __init__(self, model: str | None = None, config: RerankConfig | None = None, **overrides: Any) -> None:
        from sentence_transformers import CrossEncoder

        if config is None:
            if model is None:
                raise ValueError("give a model name/path or a RerankConfig")
            config = RerankConfig(model=model, **overrides)
        elif overrides or model is not None:
            config = config.model_copy(update={**overrides, **({"model": model} if model else {})})
        self.config = config
        self.device = pick_device(config.device)
        self.backend = self._pick_backend(config.backend)
        if self.backend == "onnx" and config.precision in ("fp16", "bf16"):
            raise ValueError(f"precision {config.precision} is for the torch and openvino backends; the onnx "
                             "backend runs int8 or fp32 (set rerank.quantization: int8, int8_partial or none)")
        self.quantization = config.quantization  # what an exported graph (onnx, openvino) runs
        if self.backend == "openvino":
            # The field's default (int8) is the onnx backend's: openvino goes int8 only when asked in so many words,
            # so a config that never mentions quantization keeps its fp32/bf16 model.
            if "quantization" not in config.model_fields_set:
                self.quantization = "none"
            elif config.quantization == "int8_partial":
                raise ValueError("quantization int8_partial is for the onnx backend; the openvino backend runs "
                                 "int8 (NNCF) or none (set rerank.quantization: int8 or none)")
        self.device, self.dtype = placement(self.device, config.precision, self.backend)
        self.precision = config.precision
        if self.backend == "openvino":
            from index.runtime.openvino import resolve_precision

            self.precision = resolve_precision(config.precision)
        elif self.backend == "torch":
            self.precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]
            if config.num_threads:
                torch.set_num_threads(config.num_threads)
        kwargs: dict[str, Any] = {"device": self.device, "trust_remote_code": config.trust_remote_code}
        if config.max_length:
            kwargs["max_length"] = config.max_length
        self.model = apply_precision(load_model(config.model, "cross-encoder", CrossEncoder, **kwargs), self.device,
                                     self.dtype)
        self._onnx: Any = None  # an exported-graph runner (ONNX Runtime or OpenVINO), when not torch
        if self.backend == "onnx":
            self._onnx = self._load_onnx()
        elif self.backend == "openvino":
            self._onnx = self._load_openvino()
        self.tokenizer = self.model.tokenizer
        limit = getattr(self.model, "max_seq_length", None) or getattr(self.model, "max_length", None)
        self.max_length = int(limit or self.tokenizer.model_max_length or 512)
        self.num_labels = int(self.model.num_labels)
        self.label_index = self._label_index(config.label)
        if config.activation == "sigmoid":
            self.activation: torch.nn.Module | None = torch.nn.Sigmoid()
        elif config.activation == "identity":
            self.activation = torch.nn.Identity()
        else:
            self.activation = None  # the model's own default
        self._lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self.last_truncated = 0
        self.pairs_scored = 0
        self.pairs_truncated = 0

    def _label_index(self, label: int | str | None) -> int:
        if label is None:
            if self.num_labels > 1:
                logger.warning("model has %d labels and no `label` was chosen; ranking by label 0",
                               self.num_labels)
            return 0
        if isinstance(label, str):
            names = {v: int(k) for k, v in (self.model.config.id2label or {}).items()}
            if label not in names:
                raise ValueError(f"label {label!r} not among the model's labels {sorted(names)}")
            return names[label]
        if not 0 <= label < self.num_labels:
            raise ValueError(f"label {label} out of range; the model has {self.num_labels} labels")
        return label

    def _pick_backend(self, backend: str) -> str:
        """`auto`: torch on a GPU (fp16), OpenVINO on the CPU when installed (bf16 where the CPU has it), else torch."""
        if backend != "auto":
            return backend
        if self.device != "cpu":
            return "torch"
        from index.runtime.openvino import available

        if available():
            return "openvino"
        logger.info("backend auto: openvino is not installed, using torch on the CPU")
        return "torch"

    def _load_openvino(self) -> Any:
        """Convert (once, cached next to the model; int8 by NNCF when asked) and compile the OpenVINO model;
        frees the torch weights."""
        from index.runtime.openvino import OpenVinoModel, calibration_pairs, ensure_converted, ensure_quantized

        sample = self.model.preprocess([("what is a query", "a passage that answers it")])
        source = resolve_model(self.config.model)
        if self.quantization == "none":
            path = ensure_converted(self.model.transformers_model, source, sample)
        else:
            # One pair per calibration input, cut as scoring cuts them, so the ranges seen are the ones met.
            calibration = [self.model.preprocess([pair]) for pair in calibration_pairs()]
            path = ensure_quantized(self.model.transformers_model, source, sample, calibration, self.quantization)
        runner = OpenVinoModel(path, self.precision, self.config.num_threads)
        self.model.to("meta")
        return runner

    def _load_onnx(self) -> Any:
        """Export (once, cached next to the model) and open the ONNX Runtime session; frees the torch weights."""
        for module in ("onnx", "onnxruntime"):
            require(module, "onnx", "rerank.backend: onnx")
        from index.runtime.onnx import OnnxClassifier, ensure_exported

        sample = self.model.preprocess([("what is a query", "a passage that answers it")])
        path = ensure_exported(self.model.transformers_model, resolve_model(self.config.model), sample,
                               self.config.quantization)
        session = OnnxClassifier(path, self.config.num_threads)
        self.model.to("meta")  # the tokenizer, config and activation stay; the weights now live in the session
        return session

    def _score_batch(self, batch: list[tuple[str, str]], kwargs: dict[str, Any]) -> np.ndarray:
        """Scores of one batch as `CrossEncoder.predict` returns them (activation applied; 1-D for one label)."""
        if self._onnx is None:
            return np.asarray(self.model.predict(batch, **kwargs), dtype=np.float32)
        scores = torch.from_numpy(self._onnx(self.model.preprocess(batch)))
        activation = kwargs.get("activation_fn") or self.model.activation_fn
        if activation is not None:
            scores = activation(scores)
        if self.num_labels == 1 and scores.ndim > 1:
            scores = scores.squeeze(-1)
        return scores.numpy().astype(np.float32, copy=False)

    def token_lengths(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        # A fast tokenizer's truncation/padding settings are shared state that each call resets: one at a time,
        # or a thread scoring a batch finds truncation switched off under it.
        with self._lock:
            enc = self.tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation=False,
                                 add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False,
                                 verbose=False)
        return np.fromiter((len(ids) for ids in enc["input_ids"]), dtype=np.int64, count=len(pairs))

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int | None = None,
                show_progress: bool = False) -> np.ndarray:
        """Scores in input order. Batches are formed from pairs sorted by token length (less padding)."""
        if len(pairs) == 0:
            return np.empty(0, dtype=np.float32)
        cap = char_cap(self.max_length)
        pairs = [(str(q)[:cap], str(p)[:cap]) for q, p in pairs]
        lengths = self.token_lengths(pairs)
        truncated = int((lengths > self.max_length).sum())
        with self._counts_lock:  # counted over the reranker's life; reported once by whoever runs it (notes())
            self.last_truncated = truncated
            self.pairs_scored += len(pairs)
            self.pairs_truncated += truncated
        logger.debug("%d of %d pairs were longer than max_length=%d tokens and were truncated",
                     truncated, len(pairs), self.max_length)
        order = np.argsort(-lengths, kind="stable")
        bs = batch_size or self.config.batch_size
        kwargs: dict[str, Any] = {"batch_size": bs, "show_progress_bar": False, "convert_to_numpy": True}
        if self.activation is not None:
            kwargs["activation_fn"] = self.activation
        scores = np.empty(len(pairs), dtype=np.float32)
        starts = bar(range(0, len(order), bs), "reranking", "batch", show=show_progress)
        with self._lock, torch.inference_mode(), autocast(self.device, self.dtype):
            for start in starts:
                idx = order[start : start + bs]
                out = self._score_batch([pairs[i] for i in idx], kwargs)
                scores[idx] = out[:, self.label_index] if out.ndim == 2 else out
        return scores

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None,
             return_documents: bool = False, batch_size: int | None = None) -> list[dict[str, Any]]:
        """Same contract as `CrossEncoder.rank`: `[{"corpus_id", "score", "text"?}]`, best first."""
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size)
        order = np.argsort(-scores, kind="stable")[:top_k]
        out = []
        for i in order:
            item: dict[str, Any] = {"corpus_id": int(i), "score": scores[i]}
            if return_documents:
                item["text"] = documents[i]
            out.append(item)
        return out

    def notes(self) -> list[str]:
        """What is worth saying once about the pairs scored so far (truncation), as one-line strings."""
        with self._counts_lock:
            scored, cut = self.pairs_scored, self.pairs_truncated
        if not cut:
            return []
        return [f"reranker: {cut:,} of {scored:,} (query, passage) pairs ({cut / scored:.0%}) were longer than "
                f"max_length={self.max_length} tokens and were cut to it (rerank.max_length sets it)"]

    def score_passages(self, query: str, passages: Sequence[Sequence[str]],
                       batch_size: int | None = None) -> list[np.ndarray]:
        """Every passage of every document scored in one length-sorted run: one array per document."""
        flat = [(query, p) for doc in passages for p in doc]
        scores = self.predict(flat, batch_size=batch_size)
        bounds = np.cumsum([0, *(len(doc) for doc in passages)])
        return [scores[bounds[d] : bounds[d + 1]] for d in range(len(passages))]

    def score_documents(self, query: str, passages: Sequence[Sequence[str]],
                        batch_size: int | None = None) -> np.ndarray:
        """MaxP: every passage of every document is scored; a document scores as its best passage."""
        per_doc = self.score_passages(query, passages, batch_size)
        return np.array([s.max() if len(s) else -np.inf for s in per_doc], dtype=np.float32)
