"""Package names imported on first use (PEP 562), so importing a light module never loads the heavy stack."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports each name of `homes` (name -> module) when first asked.

    Example:
        >>> __getattr__ = lazy_exports(__name__, {"SearchPipeline": "retrieval.pipeline"})  # doctest: +SKIP
    """

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    return __getattr__
