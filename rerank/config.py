"""Settings of the second stage (the `rerank:` block of a pipeline config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from index.config import StrictModel


class RerankConfig(StrictModel):
    model: str
    top_n: int = Field(50, ge=1, description="how many first-stage candidates are re-scored")
    max_passages: int = Field(
        4, ge=1, description="chunked indexes: how many of a candidate's retrieved passages are scored (its best "
        "first-stage passage first); the document scores as its best (MaxP)",
    )
    batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=8, description="tokens per pair; default: the model's own limit")
    passage_window: int | None = Field(
        None, ge=16, description="words: a longer document is read as its window of this many words that best "
        "matches the query (the first stage's analyzer), not its head cut at max_length; default: off",
    )
    device: str = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="torch: auto = fp16 on CUDA, fp32 on the CPU; openvino: auto = bf16 on CPUs with "
        "native bf16 (AVX-512 BF16/AMX), else fp32",
    )
    activation: Literal["auto", "identity", "sigmoid"] = "auto"
    label: int | str | None = Field(None, description="multi-label models: which label's score ranks")
    interpolation: float = Field(
        0.0, ge=0, le=1,
        description="weight of the first-stage score blended into the rerank score (see combination)",
    )
    combination: Literal["interpolate", "rrf", "adaptive"] = Field(
        "interpolate", description="how reranker and first stage are blended over the re-scored head: "
        "interpolate = (1 - w) * norm(rerank) + w * norm(first stage); rrf = (1 - w) / (rrf_k + rerank rank) + "
        "w / (rrf_k + first-stage rank); adaptive = interpolate, with the reranker's share (1 - w) scaled query "
        "by query by its rank agreement with the first stage, clip(spearman / full_agreement, 0, 1)",
    )
    normalization: Literal["minmax", "zscore"] = Field(
        "minmax", description="interpolate/adaptive: how each score list is normalised over the head")
    rrf_k: int = Field(60, ge=1, description="rrf: the constant k of 1 / (k + rank)")
    full_agreement: float = Field(
        0.5, gt=0, le=1, description="adaptive: the Spearman correlation between the reranker's and the first "
        "stage's scores over the head at which the reranker gets its full share; none (or negative) gives it 0",
    )
    backend: Literal["torch", "onnx", "openvino", "auto"] = Field(
        "torch", description="onnx: an exported, fused (and by default int8) graph run by ONNX Runtime on CPU, "
        "exported once and cached next to the model (see index/runtime/onnx.py); openvino: the model converted "
        "once to OpenVINO IR and run by its CPU plugin (precision auto = bf16 where the CPU has it); auto: torch "
        "on a GPU, openvino on the CPU",
    )
    quantization: Literal["int8", "int8_partial", "none"] = Field(
        "int8", description="onnx backend: dynamic int8 (per-channel weights, VNNI-friendly); int8_partial keeps "
        "each layer's feed-forward output projection in fp32 (closer to fp32, a little slower); none: fused fp32. "
        "openvino backend: only when set explicitly, int8 runs an IR quantized once by NNCF (post-training, "
        "calibrated on the bundled sample corpus; needs the openvino-int8 extra), cached beside the fp32 IR; "
        "unset or none: fp32/bf16 as rerank.precision says; int8_partial is refused",
    )
    num_threads: int | None = Field(
        None, ge=1, description="CPU threads for inference (onnx: this session; torch: torch.set_num_threads, "
        "process-wide); default: the library's own choice",
    )
    trust_remote_code: bool = False
