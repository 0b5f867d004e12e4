"""The batches a sentence-transformers model forms for `encode`, reproduced so that our own loop (with a named
progress bar) feeds it exactly the same batches: the same members give bit-identical embeddings, while other
batches (other padding) move them by ~1e-7.

Example:
    >>> from index.runtime.batches import st_batches  # doctest: +SKIP
    >>> for rows in st_batches(model, texts, 32): ...  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def st_batches(model: Any, texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Row indices of `texts`, batch by batch, in the order `model.encode(texts, batch_size)` would use: sorted by
    the model's own length estimate, longest first (and interleaved where the model does that)."""
    length = getattr(model, "_input_length", len)
    order = np.argsort([-length(t) for t in texts])
    can_flatten = getattr(model, "_can_flatten_inputs", None)
    if can_flatten is not None and can_flatten():
        order = model._interleave_sorted_indices(order)
    order = np.asarray(order)
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
