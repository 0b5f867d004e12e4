"""Optional dependencies: a feature that needs an extra says which one to install, in one line.

Example:
    >>> from index.extras import require
    >>> numpy = require("numpy", "dev", "this example")
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """A feature's optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or raise `MissingExtraError` naming `feature` and the `twostage[extra]` that provides it.

    Parameters:
        module: what to import (`onnxruntime`, `datasets`, ...).
        extra: the optional-dependency group in pyproject.toml that installs it.
        feature: what the user asked for, as they would recognise it (`rerank.backend: onnx`).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise MissingExtraError(
            f"{feature} needs {package}, which is not installed; install it with: pip install 'twostage[{extra}]' "
            f"(from a checkout: pip install -e '.[{extra}]')"
        ) from exc
