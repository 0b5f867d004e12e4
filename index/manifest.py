"""`manifest.json`: what an index directory holds, how it was built, and the sha256 and size of every file.

Reading goes through `IndexFiles`: the directory is opened once and every file relative to that handle, so all of
one load comes from one build even while a rebuild swaps another into the same path.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import stat
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from index.config import retriever_name

logger = logging.getLogger(__name__)

# 1: one build's files. 2: segments (delta segments and tombstones written by `index.writer`); an index that is one
# build with no updates is still written as 1, so older libraries keep reading it.
FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
# A load that finds its directory swapped away by a rebuild starts over; builds take far longer than a load, so a
# second attempt nearly always sees a directory that stays put.
MAX_LOAD_ATTEMPTS = 5
# Far above any real manifest (a few kB): a foreign multi-GB file named manifest.json is refused, not parsed.
MAX_MANIFEST_BYTES = 1 << 20
_BLOCK = 1 << 20
# One path component of letters, digits, `.`, `_`, `-`, not starting with `.`: no `/`, `..`, absolute path, hidden
# file, NUL, or look-alike Unicode can reach outside the index directory.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


T = TypeVar("T")


class IndexDirError(RuntimeError):
    """An index directory is missing, damaged, foreign, or does not match the config; the message says what to do."""


def _short(text: str, limit: int = 60) -> str:
    """Bounded repr of untrusted text for an error message."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _plain_file_name(name: str) -> str:
    if not _PLAIN_NAME.fullmatch(name) or name == MANIFEST_FILE:
        raise ValueError(f"{_short(name)} is not a plain file name inside the index")
    return name


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[StrictInt, Field(ge=0)]


class SegmentEntry(BaseModel):
    """One segment of an updated index: its files carry `prefix` (the build's own segment has none), it holds
    `rows` passages of `documents` documents, and `deleted` names the file listing its deleted rows (tombstones)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, Field(pattern=r"^(base|s[0-9]{6})$")]
    prefix: Annotated[str, Field(pattern=r"^(s[0-9]{6}-)?$")]
    rows: Annotated[StrictInt, Field(ge=0)]
    documents: Annotated[StrictInt, Field(ge=0)]
    deleted: Annotated[str, AfterValidator(_plain_file_name)] | None = None
    deleted_rows: Annotated[StrictInt, Field(ge=0)] = 0


BASE_SEGMENT = "base"


class Manifest(BaseModel):
    """The fields the loader relies on, checked strictly (no bool for an int, no coercion); the rest (library
    version, corpus, counts, models) is kept as written."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    format_version: Annotated[StrictInt, Field(ge=1, le=FORMAT_VERSION)]
    files: dict[Annotated[str, AfterValidator(_plain_file_name)], FileEntry]
    components: list[Annotated[str, AfterValidator(retriever_name)]]
    config: dict[str, Any]
    embedding_dim: Annotated[StrictInt, Field(ge=1)] | None = None
    segments: list[SegmentEntry] | None = None
    generation: Annotated[StrictInt, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _dense_has_a_dimension(self) -> Manifest:
        if "dense" in self.components and self.embedding_dim is None:
            raise ValueError("the dense component needs embedding_dim")
        if self.segments is not None:
            names = [s.name for s in self.segments]
            if not names or len(set(names)) != len(names):
                raise ValueError("segments must be a non-empty list of distinct segments")
        return self

    def segment_list(self) -> list[SegmentEntry]:
        """The segments, oldest first: an index never updated is its build's one segment."""
        if self.segments is not None:
            return list(self.segments)
        counts = self.model_extra.get("counts", {}) if self.model_extra else {}
        return [SegmentEntry(name=BASE_SEGMENT, prefix="", rows=int(counts.get("passages", 0)),
                             documents=int(counts.get("documents", 0)))]


def first_error(exc: ValidationError, root: str | None = None) -> str:
    """One line for a pydantic error: where the first problem is (below `root`), what it is, and how many more
    there are."""
    error = exc.errors()[0]
    loc = [*([root] if root else []), *(str(p) for p in error["loc"] if p != "[key]")]
    message = error["msg"].removeprefix("Value error, ")
    if loc:
        message = loc[0] + "".join(f"[{_short(p)}]" for p in loc[1:]) + ": " + message
    return message + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")


def rebuild_hint(directory: Path) -> str:
    return f"rebuild it with: python scripts/build_index.py --config CONFIG --corpus CORPUS --output {directory}"


def parse_manifest(raw: bytes, directory: Path) -> Manifest:
    """Check a manifest's bytes; every way it can be wrong is an `IndexDirError` naming the problem."""
    path, rebuild = directory / MANIFEST_FILE, rebuild_hint(directory)
    try:
        content = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise IndexDirError(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:200]}); {rebuild}") from None
    if not isinstance(content, dict) or "format_version" not in content:
        raise IndexDirError(f"{path} has no format_version; it was not written by this library; {rebuild}")
    version = content["format_version"]
    if type(version) is int and version > FORMAT_VERSION:
        raise IndexDirError(
            f"{directory} has index format {version}, newer than this library reads ({FORMAT_VERSION}); "
            f"upgrade the library or {rebuild}"
        )
    try:
        return Manifest.model_validate(content)
    except ValidationError as exc:
        raise IndexDirError(f"{path} is not a valid index manifest ({first_error(exc)}); it was not written by "
                            f"this library or was edited; {rebuild}") from None


class FileReader:
    """Sequential reads of one open file with `pread`, from its own offset: a memory map or anything else moving
    the file position does not disturb it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0

    def fileno(self) -> int:
        return self.fd

    def tell(self) -> int:
        return self.offset

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        left = size if size >= 0 else None
        while left is None or left > 0:
            part = os.pread(self.fd, _BLOCK if left is None else min(left, _BLOCK), self.offset)
            if not part:
                break
            parts.append(part)
            self.offset += len(part)
            if left is not None:
                left -= len(part)
        return b"".join(parts)


def _sha256_fd(fd: int) -> tuple[int, str]:
    """(bytes, sha256) of an open file, from its start."""
    reader, h = FileReader(fd), hashlib.sha256()
    while block := reader.read(_BLOCK):
        h.update(block)
    return reader.offset, h.hexdigest()


class IndexFiles:
    """One build's files. The directory is opened once and each file by plain name relative to that handle, never
    following a link and only if it is a regular file of the size the manifest says; with `verify`, the sha256 is
    that of the bytes loaded (`read_bytes`) or of the very open file a reader then parses or maps (`reading`).
    Readers that take only a path get `handle_path`, which names the same directory (Linux `/proc/self/fd`)."""

    def __init__(self, directory: Path, verify: bool = True) -> None:
        self.path = directory
        self.verify = verify
        self.rebuild = rebuild_hint(directory)
        try:
            self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise IndexDirError(f"index directory {directory} does not exist; build one with "
                                "scripts/build_index.py") from None
        except NotADirectoryError:
            raise IndexDirError(f"{directory} is not an index (no {MANIFEST_FILE}); {self.rebuild}") from None
        self._manifest: Manifest | None = None
        self._manifest_id: tuple[int, int, int] | None = None
        self._kept: weakref.finalize | None = None

    def close(self) -> None:
        if self.fd >= 0 and self._kept is None:
            os.close(self.fd)
            self.fd = -1

    def keep_open_while(self, owner: object) -> None:
        """Keep the directory handle (and so `handle_path`) valid until `owner` is garbage-collected: for a reader
        such as SQLite that may open more paths under it later."""
        self._kept = weakref.finalize(owner, os.close, self.fd)

    def open_under_handle(self, make: Callable[[Path], T]) -> T:
        """`make(path)` with `path` naming this very directory (as `handle_path` does) through a handle of its
        own, kept open until the object made is garbage-collected: several readers (one SQLite store per segment)
        can each outlive this `IndexFiles`."""
        fd = os.dup(self.fd)
        proc = Path(f"/proc/self/fd/{fd}")
        try:
            made = make(proc if proc.is_dir() else self.path)
        except BaseException:
            os.close(fd)
            raise
        weakref.finalize(made, os.close, fd)
        return made

    def __enter__(self) -> IndexFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def handle_path(self) -> Path:
        proc = Path(f"/proc/self/fd/{self.fd}")
        # Elsewhere the path is all there is; a swap between the checks and that open is then not excluded.
        return proc if proc.is_dir() else self.path

    def swapped(self) -> bool:
        """True when the path no longer names the directory this reads from (a rebuild swapped a new one in), or
        an update committed a new manifest since this one was read."""
        try:
            now = os.stat(self.path)
        except OSError:
            return True
        own = os.fstat(self.fd)
        if (now.st_dev, now.st_ino) != (own.st_dev, own.st_ino):
            return True
        return self._manifest_id is not None and manifest_identity(self.path) != self._manifest_id

    def _open(self, name: str, listed: bool = True) -> int:
        missing = f"file {name} listed in the manifest is missing" if listed else f"is not an index (no {name})"
        try:
            # O_NONBLOCK: a FIFO planted under a listed name must not block the open; it is refused below.
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except FileNotFoundError:
            raise IndexDirError(f"{self.path}{':' if listed else ''} {missing}; {self.rebuild}") from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise IndexDirError(f"{self.path / name} is a symbolic link; an index holds only its own files; "
                                f"{self.rebuild}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise IndexDirError(f"{self.path / name} is not a regular file; {self.rebuild}")
        os.set_blocking(fd, True)
        return fd

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            fd = self._open(MANIFEST_FILE, listed=False)
            try:
                st = os.fstat(fd)
                self._manifest_id = (st.st_ino, st.st_mtime_ns, st.st_size)
                raw = FileReader(fd).read(MAX_MANIFEST_BYTES + 1)
            finally:
                os.close(fd)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise IndexDirError(f"{self.path / MANIFEST_FILE} is over {MAX_MANIFEST_BYTES} bytes; it was not "
                                    f"written by this library; {self.rebuild}")
            self._manifest = parse_manifest(raw, self.path)
        return self._manifest

    def _entry(self, name: str) -> FileEntry:
        entry = self.manifest.files.get(name)
        if entry is None:
            raise IndexDirError(f"{self.path}: {MANIFEST_FILE} does not list {name}, which this index needs; it was "
                                f"not written by this library or was edited; {self.rebuild}")
        return entry

    def _check(self, name: str, size: int, sha256: str | None = None) -> None:
        """`name`'s size, and its sha256 where given, against the manifest."""
        entry = self._entry(name)
        if size != entry.bytes:
            raise IndexDirError(f"{self.path / name} is truncated or changed ({size} bytes, manifest says "
                                f"{entry.bytes}); {self.rebuild}")
        if sha256 is not None and sha256 != entry.sha256:
            raise IndexDirError(f"{self.path / name} is corrupted (sha256 does not match the manifest); "
                                f"{self.rebuild}")

    @contextmanager
    def reading(self, name: str) -> Iterator[FileReader]:
        """`name` open and checked before any parser sees it: its size and, with `verify`, the sha256 of this
        very open file. Inside the block, read it through the reader or map it by `fileno()`."""
        self._entry(name)
        fd = self._open(name)
        try:
            self._check(name, os.fstat(fd).st_size)
            if self.verify:
                self._check(name, *_sha256_fd(fd))
            yield FileReader(fd)
        finally:
            os.close(fd)

    def read_bytes(self, name: str) -> bytes:
        """`name`'s content, read once and checked as read (the size first, before reading a foreign file)."""
        self._entry(name)
        fd = self._open(name)
        try:
            self._check(name, os.fstat(fd).st_size)
            data = FileReader(fd).read()
        finally:
            os.close(fd)
        self._check(name, len(data), hashlib.sha256(data).hexdigest() if self.verify else None)
        return data

    def check_all(self) -> None:
        """Sizes of every listed file (and, with `verify`, their sha256)."""
        for name in self.manifest.files:
            with self.reading(name):
                pass


class SegmentFiles:
    """One segment's files through an index's checked handle: a component asks for its plain file names
    (`bm25.npz`) and gets the segment's (`s000003-bm25.npz`)."""

    def __init__(self, files: IndexFiles, prefix: str) -> None:
        self.files = files
        self.prefix = prefix
        self.path = files.path
        self.verify = files.verify
        self.rebuild = files.rebuild

    @property
    def manifest(self) -> Manifest:
        return self.files.manifest

    @property
    def handle_path(self) -> Path:
        return self.files.handle_path

    def reading(self, name: str):
        return self.files.reading(self.prefix + name)

    def read_bytes(self, name: str) -> bytes:
        return self.files.read_bytes(self.prefix + name)

    def has(self, name: str) -> bool:
        return self.prefix + name in self.files.manifest.files


def sha256_file(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _sha256_fd(fd)[1]
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def manifest_identity(directory: Path) -> tuple[int, int, int] | None:
    """What changes whenever a new manifest is put in place (inode, mtime, size); None when there is none."""
    try:
        st = os.stat(directory / MANIFEST_FILE)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, content: dict[str, Any], files: list[str],
                   known: dict[str, Any] | None = None, before_replace: Callable[[], None] | None = None) -> None:
    """Write `manifest.json` atomically (a temp file, fsynced, renamed over the old one), listing `files` with
    their sizes and sha256. `known`: entries of files already listed by the current manifest (immutable, so
    not hashed again); `before_replace`: called once the temp file is durable, before the rename (a test hook)."""
    content = dict(content)
    segmented = content.get("segments") is not None
    content["format_version"] = FORMAT_VERSION if segmented else 1
    content["files"] = {}
    for name in files:
        path = directory / name
        if known and name in known:
            content["files"][name] = dict(known[name])
            continue
        fsync_file(path)
        content["files"][name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    Manifest.model_validate(content)  # never write a manifest the loader would refuse
    tmp = directory / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True, default=str), encoding="utf-8")
    fsync_file(tmp)
    if before_replace is not None:
        before_replace()
    os.replace(tmp, directory / MANIFEST_FILE)
    fsync_dir(directory)


def read_one_build(directory: Path, verify: bool, read: Callable[[IndexFiles], T]) -> T:
    """`read(files)` over one build of `directory`. If a rebuild swapped the directory while it ran, whatever it
    hit (a file removed with the old build) says nothing about the index: start over, a bounded number of times."""
    for _ in range(MAX_LOAD_ATTEMPTS):
        with IndexFiles(directory, verify) as files:
            try:
                return read(files)
            except Exception:
                if not files.swapped():
                    raise
            logger.info("%s was replaced by a rebuild while being read; reading the new build", directory)
    raise IndexDirError(f"{directory} was replaced by a rebuild {MAX_LOAD_ATTEMPTS} times while being read; "
                        "load it again once the rebuilds are done")


def read_manifest(directory: Path, verify: bool = True) -> dict[str, Any]:
    """Load and check a manifest and the size of every file it lists; with `verify`, their sha256 too."""
    def read(files: IndexFiles) -> dict[str, Any]:
        files.check_all()
        return files.manifest.model_dump(mode="json")

    return read_one_build(directory, verify, read)
