"""The library's version, from one source: pyproject.toml's `version`, as the installed distribution's metadata
holds it (read from pyproject.toml itself when the checkout is used without being installed).

`index` is the package every other one imports, so the version lives here: the builder writes it into each
manifest and `twostage --version` prints it.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "twostage"
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def library_version() -> str:
    """The version of the installed `twostage` distribution, else pyproject.toml's, else "unknown"."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    try:
        text = _PYPROJECT.read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    # The first `version = "..."` after the [project] table header (tomllib would need Python 3.11).
    project = text.partition("\n[project]\n")[2].split("\n[", 1)[0]
    match = re.search(r'^version\s*=\s*"([^"]+)"', project, flags=re.MULTILINE)
    return match.group(1) if match else "unknown"
