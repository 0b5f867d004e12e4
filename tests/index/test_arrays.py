"""index.arrays: every NumPy header an index load parses is parsed under the one lock (CPython 3.11's AST
constructor is not safe under threads), and no array is ever unpickled."""

from __future__ import annotations

import ast
import io
import shutil

import numpy as np
import pytest


def test_every_header_of_an_index_load_is_parsed_under_the_lock(sample_index, tmp_path, monkeypatch):
    import index.arrays as arrays
    from index.directory import IndexDirectory
    from index.writer import IndexWriter

    index = tmp_path / "idx"
    shutil.copytree(sample_index, index)
    with IndexWriter(index) as writer:  # a delta segment's tombstones too
        writer.delete(["tides"])
        writer.add([{"_id": "new", "title": "New", "text": "a passage added after the build"}])
        writer.commit()
    held: list[bool] = []
    literal_eval = ast.literal_eval

    def watched(source):
        held.append(arrays.HEADER_LOCK.locked())
        return literal_eval(source)

    monkeypatch.setattr(ast, "literal_eval", watched)
    for map_min in (0, 1 << 40):  # bm25.npz mapped, and read
        monkeypatch.setattr(arrays, "MAP_MIN_BYTES", map_min)
        assert IndexDirectory.load(index).num_rows == 24
    assert len(held) >= 10 and all(held)


def test_arrays_are_never_unpickled():
    from index.arrays import read_npy, read_npz

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        read_npy(buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        read_npz(buf.getvalue())
