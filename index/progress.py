"""Progress bars that say what they count, shown only on a terminal.

Example:
    >>> from index.progress import bar
    >>> sum(bar(range(3), "counting", "item", show=False))
    3
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def bar(items: Iterable[T], desc: str, unit: str, show: bool = True, total: int | None = None,
        **kwargs: Any) -> tqdm:
    """`tqdm(items)` named `desc`, counting `unit`s; off when `show` is false or stderr is not a terminal
    (tqdm's `disable=None`), so logs and notebooks of batch jobs stay free of bar frames."""
    return tqdm(items, desc=desc, unit=unit, total=total, disable=None if show else True, dynamic_ncols=True,
                **kwargs)
