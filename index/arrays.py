"""Reading NumPy arrays out of an index's files: `.npy`/`.npz` bytes already read (and checked), or memory-mapped
where they lie in an open file.

Every header is parsed under one process-wide lock. NumPy parses a header with `ast.literal_eval`, and CPython
3.11's AST constructor keeps its recursion depth in state shared by all threads, so two threads parsing at once
can fail with `SystemError: AST constructor recursion depth mismatch` (python/cpython#106905; seen in our CI
while queries refreshed an index under threads). A header is a few hundred bytes, so the lock costs nothing.

Example:
    >>> import io, numpy as np
    >>> from index.arrays import read_npz
    >>> buf = io.BytesIO(); np.savez(buf, rows=np.arange(3))
    >>> read_npz(buf.getvalue(), ("rows",))["rows"].tolist()
    [0, 1, 2]
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zipfile
from collections.abc import Sequence

import numpy as np

from index.manifest import FileReader

HEADER_LOCK = threading.Lock()
# Members of an .npz smaller than this are read into memory (an empty array cannot be mapped, and a small one is
# not worth a map).
MAP_MIN_BYTES = 1 << 20


def read_npz(data: bytes, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The named arrays (default: all) of an `.npz` file's bytes, never unpickling; a missing name: `KeyError`."""
    with HEADER_LOCK, np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {name: z[name] for name in (z.files if names is None else names)}


def read_npy(data: bytes) -> np.ndarray:
    """The array of an `.npy` file's bytes, never unpickling."""
    with HEADER_LOCK:
        return np.load(io.BytesIO(data), allow_pickle=False)


def map_npy(reader: FileReader) -> np.ndarray:
    """Memory-map the array of an open `.npy` file, as `np.load(mmap_mode="r")` does for a path."""
    with HEADER_LOCK:
        version = np.lib.format.read_magic(reader)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(reader)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(reader)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    if dtype.hasobject:  # np.load's own refusal, word for word
        raise ValueError("Array can't be memory-mapped: Python objects in dtype.")
    with os.fdopen(reader.fileno(), "rb", closefd=False) as fh:  # the map keeps its own handle on the file
        return np.memmap(fh, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C",
                         offset=reader.tell())


def map_npz(reader: FileReader, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named arrays of an open `.npz` file, each stored (uncompressed) member memory-mapped where it lies in
    the file, as `map_npy` maps a `.npy`: `np.savez` stores members uncompressed, so opening a large index maps
    its BM25 arrays instead of reading them, and memory grows with the postings queries read."""
    fd = reader.fileno()
    out: dict[str, np.ndarray] = {}
    with os.fdopen(os.dup(fd), "rb") as fh, zipfile.ZipFile(fh) as archive:
        for name in names:
            info = archive.getinfo(f"{name}.npy")
            if info.compress_type != zipfile.ZIP_STORED or info.file_size < MAP_MIN_BYTES:
                with archive.open(info) as member, HEADER_LOCK:
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            local = os.pread(fd, 30, info.header_offset)  # the member's local header: where its data starts
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"{name}.npy: not a zip local header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            member_reader = FileReader(fd)
            member_reader.offset = info.header_offset + 30 + name_len + extra_len
            out[name] = map_npy(member_reader)
    return out
