"""What the evaluation tests share."""

from __future__ import annotations


def ranked(*ids: str) -> list[tuple[str, float]]:
    return [(d, float(len(ids) - i)) for i, d in enumerate(ids)]
