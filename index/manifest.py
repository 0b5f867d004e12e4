"""`manifest.json`: what an index directory holds, how it was built, and the sha256 of every file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


class IndexDirError(RuntimeError):
    """An index directory is missing, damaged, foreign, or does not match the config; the message says what to do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, content: dict[str, Any], files: list[str]) -> None:
    content = dict(content)
    content["format_version"] = FORMAT_VERSION
    content["files"] = {}
    for name in files:
        path = directory / name
        fsync_file(path)
        content["files"][name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    tmp = directory / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True, default=str), encoding="utf-8")
    fsync_file(tmp)
    os.replace(tmp, directory / MANIFEST_FILE)


def read_manifest(directory: Path, verify: bool = True) -> dict[str, Any]:
    """Load and check a manifest; with `verify`, every file's size and sha256 are checked too."""
    rebuild = f"rebuild it with: python scripts/build_index.py --config CONFIG --corpus CORPUS --output {directory}"
    if not directory.exists():
        raise IndexDirError(f"index directory {directory} does not exist; build one with scripts/build_index.py")
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise IndexDirError(f"{directory} is not an index (no {MANIFEST_FILE}); {rebuild}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexDirError(f"{path} is damaged ({exc}); {rebuild}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format_version"), int):
        raise IndexDirError(f"{path} has no format_version; it was not written by this library; {rebuild}")
    if manifest["format_version"] > FORMAT_VERSION:
        raise IndexDirError(
            f"{directory} has index format {manifest['format_version']}, newer than this library reads "
            f"({FORMAT_VERSION}); upgrade the library or {rebuild}"
        )
    for name, info in manifest.get("files", {}).items():
        file = directory / name
        if not file.is_file():
            raise IndexDirError(f"{directory}: file {name} listed in the manifest is missing; {rebuild}")
        if file.stat().st_size != info["bytes"]:
            raise IndexDirError(f"{file} is truncated or changed ({file.stat().st_size} bytes, manifest says "
                              f"{info['bytes']}); {rebuild}")
        if verify and sha256_file(file) != info["sha256"]:
            raise IndexDirError(f"{file} is corrupted (sha256 does not match the manifest); {rebuild}")
    return manifest
