"""Measuring: repeated timings (warm-up excluded), medians and percentiles, memory, and the machine they ran on.

Example:
    >>> from retrieval.benchmark.measure import median, timed_runs
    >>> median(timed_runs(lambda: sum(range(1000)), repeats=3, min_seconds=0.01)) > 0
    True
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def timed_runs(fn: Callable[[], Any], repeats: int, min_seconds: float = 0.2, warmup: int = 1) -> list[float]:
    """Seconds per call of `fn`, one figure per run; a run loops until `min_seconds` so fast calls are measurable."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        loops, start = 0, time.perf_counter()
        while True:
            fn()
            loops += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        out.append(elapsed / loops)
    return out


def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """CPU model, usable CPUs, vector instruction sets, thread count, load and library versions."""
    import faiss
    import onnxruntime
    import sentence_transformers
    import torch

    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": model, "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
        "isa": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags],
        "torch_threads": torch.get_num_threads(), "load_average_at_start": load_average(),
        "python": platform.python_version(), "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__, "onnxruntime": onnxruntime.__version__,
        "faiss": faiss.__version__, "numpy": np.__version__,
    }


def progress(items: Iterable[T], desc: str, quiet: bool) -> Iterable[T]:
    """`items` with a transient progress bar (none when `quiet`)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="it", leave=False, disable=quiet)
