"""One writer at a time per index: an exclusive `flock` on a lock file beside the index, holding the writer's pid.

The kernel releases the lock when its holder dies, so a lock file left by a killed writer is stale by
construction: the next writer takes it (and says so), never waits on it. Builds and updates both take it, so a
rebuild cannot swap the directory away under an update's commit.

Example:
    >>> from index.lock import WriterLock
    >>> with WriterLock("/tmp/idx/sample"):  # doctest: +SKIP
    ...     pass
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class IndexLockedError(RuntimeError):
    """Another process (or writer) is updating or building the index."""


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


class WriterLock:
    """Held from `acquire` (or `with`) to `release`; a second holder gets `IndexLockedError` at once."""

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self.fd: int | None = None

    def acquire(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)  # OSError: the caller's to report
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise IndexLockedError(
                    f"{self.target} is being updated or built by process {holder} (lock file {self.path}); wait "
                    "for it to finish, or stop that process (a killed writer's lock is taken over automatically)"
                ) from None
            # The file may have been removed (by a holder releasing it) between our open and our lock: then we
            # hold a lock on a name nobody else sees; start over on the file now at the path.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        if previous and previous != str(os.getpid()):
            logger.warning("took over the lock of %s left by process %s, which is no longer running (a killed "
                           "writer); its uncommitted changes were never part of the index", self.target, previous)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        except OSError:  # a full disk: the lock holds all the same; only the pid shown to others is missing
            pass
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
