"""Indexes of evaluation datasets built once and reused: `cache_dir/<dataset>-<hash of the corpus and the build
settings>`, rebuilt only when what the index holds would differ (query-time knobs never force a rebuild).

Example:
    >>> from index.cache import cached_index
    >>> from retrieval.config import load_config
    >>> config = load_config("configs/hybrid.yaml")  # doctest: +SKIP
    >>> cached_index("../shared/datasets/scifact", config.build_config(), "indexes/eval")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from index.config import BuildConfig
from index.documents import CorpusError
from index.manifest import IndexDirError, read_manifest

logger = logging.getLogger(__name__)


def index_settings(build_config: dict[str, Any]) -> dict[str, Any]:
    """The part of a build config (`BuildConfig.model_dump(mode="json")`, as a manifest holds it) that decides
    what an index holds: `BuildConfig.index_settings`, the one definition the pipeline also checks against."""
    return BuildConfig.model_validate(build_config).index_settings()


def cached_index(dataset_dir: str | Path, build: BuildConfig, cache_dir: str | Path,
                 show_progress: bool = True) -> Path:
    """The index of the BEIR folder `dataset_dir` built with `build` (a pipeline config's `build_config()`) under
    `cache_dir/<dataset>-<hash>`: reused when its manifest's settings match, built (atomically) otherwise."""
    from index.builder import build_index

    root = Path(dataset_dir).expanduser().resolve()
    corpus = root / "corpus.jsonl"
    if not corpus.is_file():
        raise CorpusError(f"{root} is not a BEIR dataset folder: no corpus.jsonl")
    wanted = index_settings(build.model_dump(mode="json"))
    stat = corpus.stat()
    key = json.dumps({"corpus": str(corpus), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                      "settings": wanted}, sort_keys=True)
    path = Path(cache_dir).expanduser().resolve() / f"{root.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if path.exists():
        try:
            manifest = read_manifest(path, verify=False)
            if index_settings(manifest.get("config", {})) == wanted:
                logger.info("reusing the index at %s", path)
                return path
            logger.warning("%s was built with other settings; rebuilding it", path)
        except (IndexDirError, ValidationError) as exc:  # damaged, or settings this version does not know
            logger.warning("cannot reuse %s (%s); rebuilding it", path, str(exc).splitlines()[0])
    logger.info("building the index of %s at %s", root, path)
    build_index(root, path, build, show_progress=show_progress)
    return path
