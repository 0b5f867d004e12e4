"""FieldIndex: the field model (flattening, kinds, dates), files round trip, damaged files, concat."""

from __future__ import annotations

import io
import json
import math
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index.fields import FIELDS_FILES, FieldIndex, parse_date

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def entries(fi: FieldIndex, name: str, kind: str) -> list[tuple[int, object]]:
    col = fi.column(name)
    assert col is not None
    if kind == "str":
        return [(int(r), col.strings[c]) for r, c in zip(col.str_rows, col.str_codes)]
    rows, values = getattr(col, f"{kind}_rows"), getattr(col, f"{kind}_values")
    return [(int(r), v.item()) for r, v in zip(rows, values)]


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def test_nested_objects_and_lists_flatten_to_dotted_multi_valued_fields():
    fi = FieldIndex.build([
        {"author": {"name": "x", "age": 3}, "tags": ["b", "a", "b"], "n": None, "e": [], "o": {},
         "authors": [{"name": "y"}, {"name": "z", "gone": None}], "deep": [["p", ["q"]], None]},
        {"tags": "c", "author": None},
    ])
    assert fi.num_rows == 2
    assert fi.fields == ["author.age", "author.name", "authors.name", "deep", "tags"]
    assert entries(fi, "tags", "str") == [(0, "a"), (0, "b"), (1, "c")]  # sorted by row then value, no duplicates
    assert entries(fi, "authors.name", "str") == [(0, "y"), (0, "z")]
    assert entries(fi, "deep", "str") == [(0, "p"), (0, "q")]
    assert entries(fi, "author.age", "num") == [(0, 3.0)]
    assert fi.column("author") is None and fi.column("n") is None and fi.column("e") is None
    assert fi.column("tags").present(2).tolist() == [True, True]
    assert fi.column("author.name").present(2).tolist() == [True, False]


def test_values_are_kept_by_kind_and_a_bool_is_never_a_number():
    fi = FieldIndex.build([{"v": [1, 2.5, True, "s", None, False]}, {"v": 10**400}, None, {}])
    assert fi.num_rows == 4
    assert entries(fi, "v", "num") == [(0, 1.0), (0, 2.5), (1, math.inf)]
    assert entries(fi, "v", "bool") == [(0, False), (0, True)]
    assert entries(fi, "v", "str") == [(0, "s")]
    assert fi.column("v").kinds() == ["text values", "numbers", "true/false values"]


def test_iso_date_strings_are_also_dates():
    texts = ["2015-03-01", "2015-03-01T10:00:00Z", "2015-03-01T12:00:00+02:00", "2015-03-01 10:00", "2015",
             "2015-13-01", "2015-03-01 garbage", "1970-01-01", "march", "２０１５-03-01"]
    fi = FieldIndex.build([{"d": t} for t in texts])
    assert entries(fi, "d", "date") == [(0, utc(2015, 3, 1)), (1, utc(2015, 3, 1, 10)), (2, utc(2015, 3, 1, 10)),
                                        (3, utc(2015, 3, 1, 10)), (7, 0.0)]
    assert len(entries(fi, "d", "str")) == len(texts)  # dates stay text values too
    assert fi.column("d").kinds() == ["text values", "ISO dates"]
    assert parse_date("1970-01-02") == 86400.0 and parse_date("2015") is None and parse_date("") is None


@pytest.mark.parametrize("rows, message", [
    ([["not", "a", "dict"]], "row 0 is a list"),
    ([{1: "x"}], "key 1 at the top level is not a string"),
    ([{}, {"a": {2: "x"}}], "row 1: key 2 under 'a' is not a string"),
    ([{"a": {1, 2}}], "field 'a' holds a set"),
    ([{"a": "\ud800"}], "unpaired surrogate"),
])
def test_bad_metadata_is_one_clear_error(rows, message):
    with pytest.raises(ValueError, match=message):
        FieldIndex.build(rows)


def test_nesting_is_bounded_even_for_a_self_containing_dict():
    loop: dict = {}
    loop["me"] = loop
    with pytest.raises(ValueError, match="nests more than 64 levels"):
        FieldIndex.build([loop])


META = [{"source": "pubmed", "year": 2015, "lang": ["en", "de"], "date": "2015-03-01", "ok": True},
        {"source": "arxiv", "year": 2016.5, "author": {"name": "Zoë ✓"}},
        {},
        {"source": "pubmed", "lang": "en"}]


def test_save_and_from_bytes_round_trip(tmp_path):
    fi = FieldIndex.build(META)
    assert fi.save(tmp_path) == list(FIELDS_FILES)
    again = FieldIndex.from_bytes(*((tmp_path / n).read_bytes() for n in FIELDS_FILES))
    assert again == fi and again.num_rows == 4 and again.fields == fi.fields
    assert FieldIndex.load(tmp_path) == fi
    col = again.column("source")
    assert col.str_rows.dtype == np.int32 and col.str_codes.dtype == np.int32
    assert not col.str_rows.flags.writeable
    assert again != FieldIndex.build(META[:3])


def test_an_empty_index_round_trips(tmp_path):
    for fi in (FieldIndex.build([]), FieldIndex.build([{}, {"x": None}])):
        fi.save(tmp_path)
        assert FieldIndex.load(tmp_path) == fi and fi.fields == []


def _files(fi: FieldIndex, tmp_path) -> tuple[dict[str, np.ndarray], dict]:
    fi.save(tmp_path)
    with np.load(tmp_path / FIELDS_FILES[0]) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((tmp_path / FIELDS_FILES[1]).read_text(encoding="utf-8"))


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _damage(arrays, meta, what):
    arrays, meta = dict(arrays), json.loads(json.dumps(meta))
    if what == "code out of range":
        arrays["str_codes"] = arrays["str_codes"].copy()
        arrays["str_codes"][0] = 99
    elif what == "negative code":
        arrays["str_codes"] = arrays["str_codes"].copy()
        arrays["str_codes"][-1] = -1
    elif what == "row out of range":
        arrays["num_rows"] = arrays["num_rows"].copy()
        arrays["num_rows"][0] = 4
    elif what == "lengths disagree":
        arrays["num_values"] = arrays["num_values"][:-1]
    elif what == "rows out of order":
        arrays["str_rows"] = arrays["str_rows"][::-1].copy()
    elif what == "offsets wrong":
        arrays["str_ptr"] = arrays["str_ptr"].copy()
        arrays["str_ptr"][1] += 1
    elif what == "array missing":
        del arrays["bool_values"]
    elif what == "wrong dtype":
        arrays["bool_values"] = arrays["bool_values"].astype(np.float64)
    elif what == "2-d array":
        arrays["date_values"] = arrays["date_values"].reshape(1, -1)
    elif what == "object array":
        arrays["date_values"] = np.array([None], dtype=object)
    elif what == "fewer rows":
        meta["num_rows"] = 3
    elif what == "field dropped":
        meta["fields"] = meta["fields"][1:]
    elif what == "strings unsorted":
        next(f for f in meta["fields"] if len(f["strings"]) > 1)["strings"].reverse()
    elif what == "names unsorted":
        meta["fields"].reverse()
    elif what == "a field without values":
        arrays = {k: (np.concatenate([v, v[-1:]]) if k.endswith("_ptr") else v) for k, v in arrays.items()}
        meta["fields"].append({"name": "zzz", "strings": []})
    elif what == "other format":
        meta["format"] = 2
    return arrays, meta


DAMAGE = ["code out of range", "rows out of order", "negative code", "row out of range", "lengths disagree",
          "offsets wrong", "array missing", "wrong dtype", "2-d array", "object array", "fewer rows", "field dropped",
          "strings unsorted", "names unsorted", "a field without values", "other format"]


@pytest.mark.parametrize("what", DAMAGE)
def test_inconsistent_files_raise_value_error(tmp_path, what):
    arrays, meta = _files(FieldIndex.build(META), tmp_path)
    assert FieldIndex.from_bytes(_npz(arrays), json.dumps(meta).encode()) is not None  # the undamaged pair
    arrays, meta = _damage(arrays, meta, what)
    with pytest.raises(ValueError, match="inconsistent"):
        FieldIndex.from_bytes(_npz(arrays), json.dumps(meta).encode())


@pytest.mark.parametrize("npz, meta_json", [
    (b"not a zip", None), (b"PK\x03\x04 truncated", None), (None, b"{not json"), (None, b"\xff\xfe"),
    (None, b"[]"), (None, b'{"format": 1, "num_rows": "4", "fields": []}'),
])
def test_unreadable_files_raise_value_error(tmp_path, npz, meta_json):
    arrays, meta = _files(FieldIndex.build(META), tmp_path)
    with pytest.raises(ValueError, match="inconsistent"):
        FieldIndex.from_bytes(npz if npz is not None else _npz(arrays),
                              meta_json if meta_json is not None else json.dumps(meta).encode())


# -- concat ------------------------------------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, -0.0, 2.0, math.inf]),
                    st.sampled_from(["a", "b", "", "2015-03-01", "2015-03-01T10:00:00+02:00", "ü"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(st.sampled_from(["x", "y"]), SCALARS, max_size=2),
                   st.lists(st.dictionaries(st.sampled_from(["x"]), SCALARS, max_size=1), max_size=2))
ROWS = st.lists(st.one_of(st.none(), st.dictionaries(st.sampled_from(["f", "g", "h.x", "h"]), VALUES, max_size=3)),
                max_size=6)


@st.composite
def parts_and_keeps(draw):
    parts = draw(st.lists(ROWS, min_size=0, max_size=4))
    keeps = [draw(st.one_of(st.none(), st.sets(st.integers(0, len(p) - 1)).map(sorted) if p else st.just([])))
             for p in parts]
    return parts, keeps


@FAST
@given(parts_and_keeps())
def test_concat_equals_build_on_the_kept_rows(case):
    parts, keeps = case
    built = [FieldIndex.build(p) for p in parts]
    keep_arrays = [None if k is None else np.asarray(k, dtype=np.int64) for k in keeps]
    merged = FieldIndex.concat(built, keep_arrays)
    kept_rows = [row for p, k in zip(parts, keeps) for row in (p if k is None else [p[i] for i in k])]
    assert merged == FieldIndex.build(kept_rows)


def test_concat_checks_its_keep_arrays():
    part = FieldIndex.build([{"a": "x"}, {"a": "y"}])
    assert FieldIndex.concat([part], [np.array([], dtype=np.int64)]).num_rows == 0
    assert FieldIndex.concat([part], [[]]).num_rows == 0  # an empty list reads as no rows, whatever its dtype
    for bad in ([1, 0], [0, 0], [2], [-1], [[0]], [0.5], [True, False], np.array([1, 0], dtype=np.uint64)):
        with pytest.raises(ValueError, match="ascending row numbers"):
            FieldIndex.concat([part], [np.asarray(bad)])
    assert FieldIndex.concat([part], [np.array([1], dtype=np.uint8)]) == FieldIndex.build([{"a": "y"}])
    with pytest.raises(ValueError, match="one per part"):
        FieldIndex.concat([part], [])
