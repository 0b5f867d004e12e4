"""The one error evaluation raises for a dataset or a request it cannot evaluate."""

from __future__ import annotations


class EvaluationError(ValueError):
    """The dataset or the request cannot be evaluated; the message says what is wrong and how to fix it."""
