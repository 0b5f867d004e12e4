"""Document metadata as columns: every row's values, by field, as arrays that filters read without Python loops.

Field model (what `index.filters` matches against):

- Every top-level key of a row's metadata is a field; nested objects flatten to dotted names
  (``{"author": {"name": "x"}}`` is the field ``author.name``). Only leaves are fields: ``author`` itself is not.
- A list is multi-valued: each element is one more value of the field (a filter matches the row when any value
  does); objects in a list flatten the same way (``{"authors": [{"name": "x"}, {"name": "y"}]}`` gives
  ``authors.name`` the values x and y), and lists in lists add their elements too.
- ``None`` is absence: a field "exists" in a row when the row has at least one non-None value for it (an empty
  list or ``None`` gives none).
- Values are kept by kind: text (dictionary-encoded: the field's sorted distinct strings, and (row, code) pairs),
  numbers (int and float, never bool: (row, float64)), booleans ((row, bool)), and dates: every text value that
  ``datetime.fromisoformat`` reads as an ISO 8601 date or datetime beginning ``YYYY-MM-DD`` ("2015-03-01",
  "2015-03-01T10:00:00Z"; not "2015") is also a date ((row, float64 seconds since the epoch); a value without a
  time zone counts as UTC). Numbers are compared as float64, so integers beyond 2**53 lose precision.

Within a field and kind, entries are sorted by row, then value, without duplicates: two indexes of the same rows
hold equal arrays, however they were made (`build` or `concat`).

Example:
    >>> fi = FieldIndex.build([{"year": 2015, "lang": ["en", "de"]}, {"year": 2020}, {}])
    >>> fi.num_rows, fi.fields
    (3, ['lang', 'year'])
    >>> fi.column("lang").strings
    ['de', 'en']
"""

from __future__ import annotations

import json
import math
import numbers
import re
import sys
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from index.arrays import read_npz
from index.documents import MAX_JSON_DEPTH

FIELDS_FILES = ("fields.npz", "fields.json")  # what a segment writes
_FORMAT = 1
_KINDS = ("str", "num", "bool", "date")
_VALUES = {"str": "codes", "num": "values", "bool": "values", "date": "values"}
_KIND_WORDS = {"str": "text values", "num": "numbers", "bool": "true/false values", "date": "ISO dates"}
_INT32_MAX = int(np.iinfo(np.int32).max)
# A cheap test before fromisoformat, which is far slower at rejecting ordinary text.
_DATE_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ZULU_NEEDS_HELP = sys.version_info < (3, 11)  # 3.10's fromisoformat does not read a trailing "Z"


def parse_date(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 date or datetime beginning ``YYYY-MM-DD`` (naive means UTC), or None
    when `text` is not one. ``parse_date("1970-01-02") == 86400.0``."""
    if not _DATE_PREFIX.match(text):
        return None
    if _ZULU_NEEDS_HELP and text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None


def to_float(value: Any) -> float:
    """A number as float64; an integer too large for one becomes +-inf (float() would raise)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def is_number(value: Any) -> bool:
    """An int or float (numpy's too), never a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True, eq=False)
class FieldColumn:
    """One field's values: per kind, (row, value) entries sorted by row then value. Arrays are read-only views."""

    name: str
    strings: list[str]  # sorted distinct text values; str_codes index into it
    str_rows: np.ndarray
    str_codes: np.ndarray
    num_rows: np.ndarray
    num_values: np.ndarray  # float64
    bool_rows: np.ndarray
    bool_values: np.ndarray  # bool
    date_rows: np.ndarray  # a subset of str_rows: the rows whose text value is an ISO date
    date_values: np.ndarray  # float64 seconds since the epoch

    def kinds(self) -> list[str]:
        """What the field holds, in words ("text values", "numbers", ...), for messages."""
        return [_KIND_WORDS[k] for k in _KINDS if len(getattr(self, f"{k}_rows"))]

    def present(self, num_rows: int) -> np.ndarray:
        """Bool mask of the rows that have at least one value of this field."""
        mask = np.zeros(num_rows, dtype=bool)
        for kind in ("str", "num", "bool"):  # date rows are text rows already
            mask[getattr(self, f"{kind}_rows")] = True
        return mask


class _Values:
    """Values of one field collected while building, in row order."""

    __slots__ = ("str_rows", "strs", "num_rows", "nums", "bool_rows", "bools")

    def __init__(self) -> None:
        self.str_rows: list[int] = []
        self.strs: list[str] = []
        self.num_rows: list[int] = []
        self.nums: list[float] = []
        self.bool_rows: list[int] = []
        self.bools: list[bool] = []


def _not_a_string_key(row: int, prefix: str, key: Any) -> ValueError:
    where = f"under {prefix[:-1]!r}" if prefix else "at the top level"
    return ValueError(f"metadata of row {row}: key {key!r} {where} is not a string; metadata keys must be strings")


def _collect(meta: Mapping[str, Any], row: int, out: dict[str, _Values]) -> None:
    """Add one row's flattened values to `out`. Iterative, with a depth bound, so that neither a deep nor a
    self-containing object (possible from Python, never from JSON) can exhaust the stack or loop."""
    stack: list[tuple[str, Any, int]] = []
    for key, value in meta.items():
        if type(key) is not str and not isinstance(key, str):
            raise _not_a_string_key(row, "", key)
        stack.append((key, value, 2))
    while stack:
        name, value, depth = stack.pop()
        kind = type(value)
        # Exact types first: JSON gives only these, and isinstance against the abstract types is slow.
        if kind is str:
            values = out.get(name) or out.setdefault(name, _Values())
            values.str_rows.append(row)
            values.strs.append(value)
        elif kind is int or kind is float:
            values = out.get(name) or out.setdefault(name, _Values())
            values.num_rows.append(row)
            values.nums.append(value if kind is float else to_float(value))
        elif value is None:
            continue
        elif kind is bool or isinstance(value, np.bool_):
            values = out.get(name) or out.setdefault(name, _Values())
            values.bool_rows.append(row)
            values.bools.append(bool(value))
        elif kind is list or kind is dict or isinstance(value, (Mapping, list, tuple)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"metadata of row {row}: field {name!r} nests more than {MAX_JSON_DEPTH} levels "
                                 "deep; flatten it")
            if kind is dict or (kind is not list and isinstance(value, Mapping)):
                for key, child in value.items():
                    if not isinstance(key, str):
                        raise _not_a_string_key(row, name + ".", key)
                    stack.append((f"{name}.{key}", child, depth + 1))
            else:
                stack.extend((name, child, depth + 1) for child in value)
        elif isinstance(value, str):  # a str subclass
            stack.append((name, str(value), depth))
        elif isinstance(value, numbers.Real):  # numpy's numbers, Fraction, an int or float subclass
            stack.append((name, to_float(value), depth))
        else:
            raise ValueError(f"metadata of row {row}: field {name!r} holds a {type(value).__name__}, which is not "
                             "JSON; use a str, int, float, bool, None, list or dict")


def _int_dtype(limit: int) -> type:
    return np.int32 if limit <= _INT32_MAX else np.int64


def _canonical(rows: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entries sorted by (row, value), duplicates dropped (a list may repeat a value)."""
    if len(rows) > 1:
        step = np.diff(rows)
        if np.all((step > 0) | ((step == 0) & (values[1:] > values[:-1]))):
            return rows, values  # already so (concat keeps its parts' order): skip the sort
        order = np.lexsort((values, rows))
        rows, values = rows[order], values[order]
        keep = np.ones(len(rows), dtype=bool)
        keep[1:] = (rows[1:] != rows[:-1]) | (values[1:] != values[:-1])
        rows, values = rows[keep], values[keep]
    return rows, values


class FieldIndex:
    """Metadata values of every row, by field, as arrays (see the module docstring for the field model).

    Made by `build` (from metadata dicts), `from_bytes` (a saved segment) or `concat` (segments merged); read
    through `fields` and `column`. Immutable.
    """

    def __init__(self, num_rows: int, names: list[str], strings: list[list[str]],
                 arrays: dict[str, np.ndarray]) -> None:
        # arrays: per kind, "<kind>_ptr" (offsets of each field's entries, len(names) + 1), "<kind>_rows" and
        # "<kind>_codes"/"<kind>_values"; checked by the callers.
        self.num_rows = num_rows
        self._names = names
        self._strings = strings
        self._arrays = arrays
        for array in arrays.values():
            array.flags.writeable = False
        self._columns: dict[str, FieldColumn] = {}
        for i, name in enumerate(names):
            parts: dict[str, Any] = {}
            for kind in _KINDS:
                start, end = int(arrays[f"{kind}_ptr"][i]), int(arrays[f"{kind}_ptr"][i + 1])
                parts[f"{kind}_rows"] = arrays[f"{kind}_rows"][start:end]
                parts[f"{kind}_{_VALUES[kind]}"] = arrays[f"{kind}_{_VALUES[kind]}"][start:end]
            self._columns[name] = FieldColumn(name=name, strings=strings[i], **parts)

    @property
    def fields(self) -> list[str]:
        """Sorted names of the fields present in at least one row."""
        return list(self._names)

    def column(self, name: str) -> FieldColumn | None:
        """The field's values, or None when no row has the field."""
        return self._columns.get(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldIndex):
            return NotImplemented
        return (self.num_rows == other.num_rows and self._names == other._names
                and self._strings == other._strings and self._arrays.keys() == other._arrays.keys()
                and all(np.array_equal(a, other._arrays[k], equal_nan=a.dtype.kind == "f")
                        for k, a in self._arrays.items()))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FieldIndex(num_rows={self.num_rows}, fields={len(self._names)})"

    # -- making one --------------------------------------------------------------------------------------------

    @classmethod
    def build(cls, metadata: Iterable[Mapping[str, Any] | None]) -> FieldIndex:
        """Index the metadata of each row, in row order (None: a row without metadata).

        Example:
            >>> FieldIndex.build([{"source": "pubmed", "year": 2015}, {"source": "arxiv"}]).fields
            ['source', 'year']
        """
        collected: dict[str, _Values] = {}
        num_rows = 0
        for row, meta in enumerate(metadata):
            num_rows = row + 1
            if meta is None:
                continue
            if not isinstance(meta, Mapping):
                raise ValueError(f"metadata of row {row} is a {type(meta).__name__}; it must be a dict (or None)")
            _collect(meta, row, collected)
        columns: dict[str, dict[str, Any]] = {}
        for name, values in collected.items():
            strings = sorted(set(values.strs))
            for text in (name, *strings):
                if _SURROGATE.search(text):
                    raise ValueError(f"metadata field {name!r} holds an unpaired surrogate (like \\ud800), which is "
                                     "not valid Unicode; fix the text at its source")
            position = {s: i for i, s in enumerate(strings)}
            codes = np.fromiter((position[s] for s in values.strs), dtype=np.int64, count=len(values.strs))
            str_rows = np.asarray(values.str_rows, dtype=np.int64)
            # Dates: parsed once per distinct string, then spread to the entries with one gather.
            seconds = np.array([math.nan if (t := parse_date(s)) is None else t for s in strings], dtype=np.float64)
            is_date = ~np.isnan(seconds)
            dated = is_date[codes]
            columns[name] = {
                "strings": strings,
                "str": (str_rows, codes),
                "num": (np.asarray(values.num_rows, dtype=np.int64), np.asarray(values.nums, dtype=np.float64)),
                "bool": (np.asarray(values.bool_rows, dtype=np.int64), np.asarray(values.bools, dtype=bool)),
                "date": (str_rows[dated], seconds[codes[dated]]),
            }
        return cls._assemble(num_rows, columns)

    @classmethod
    def _assemble(cls, num_rows: int, columns: dict[str, dict[str, Any]]) -> FieldIndex:
        """From per-field entries (any order, duplicates allowed; every string used): canonical arrays."""
        names = sorted(name for name, col in columns.items() if any(len(col[k][0]) for k in _KINDS))
        row_type = _int_dtype(num_rows)
        pieces: dict[str, list[np.ndarray]] = {f"{k}_{p}": [] for k in _KINDS for p in ("rows", _VALUES[k])}
        ptrs = {k: np.zeros(len(names) + 1, dtype=np.int64) for k in _KINDS}
        strings: list[list[str]] = []
        value_types = {"num": np.float64, "bool": bool, "date": np.float64}
        for i, name in enumerate(names):
            col = columns[name]
            strings.append(col["strings"])
            for kind in _KINDS:
                rows, values = _canonical(*col[kind])
                pieces[f"{kind}_rows"].append(rows.astype(row_type, copy=False))
                pieces[f"{kind}_{_VALUES[kind]}"].append(values)
                ptrs[kind][i + 1] = ptrs[kind][i] + len(rows)
        code_type = _int_dtype(max((len(s) for s in strings), default=0))
        arrays: dict[str, np.ndarray] = {}
        for kind in _KINDS:
            arrays[f"{kind}_ptr"] = ptrs[kind]
            arrays[f"{kind}_rows"] = np.concatenate(pieces[f"{kind}_rows"]) if names else np.zeros(0, row_type)
            dtype = code_type if kind == "str" else value_types[kind]
            key = f"{kind}_{_VALUES[kind]}"
            arrays[key] = (np.concatenate(pieces[key]) if names else np.zeros(0)).astype(dtype, copy=False)
        return cls(num_rows, names, strings, arrays)

    @classmethod
    def concat(cls, parts: Sequence[FieldIndex], keep: Sequence[np.ndarray | None]) -> FieldIndex:
        """The kept rows of each part, in order, renumbered 0..n-1; string dictionaries merged, fields and strings
        no kept row has dropped. ``keep[i]``: ascending row numbers of ``parts[i]`` to keep, or None for all.

        Example:
            >>> a, b = FieldIndex.build([{"x": "a"}, {"x": "b"}]), FieldIndex.build([{"x": "c"}])
            >>> FieldIndex.concat([a, b], [np.array([1]), None]) == FieldIndex.build([{"x": "b"}, {"x": "c"}])
            True
        """
        if len(parts) != len(keep):
            raise ValueError(f"concat: {len(parts)} parts but {len(keep)} keep entries; give one per part")
        new_rows: list[np.ndarray] = []  # per part: the new number of each old row, -1 when dropped
        total = 0
        for i, (part, kept) in enumerate(zip(parts, keep)):
            mapping = np.full(part.num_rows, -1, dtype=np.int64)
            if kept is None:
                mapping[:] = np.arange(total, total + part.num_rows)
                total += part.num_rows
            else:
                kept = np.asarray(kept)
                if kept.ndim != 1 or (len(kept) and kept.dtype.kind not in "iu"):
                    raise ValueError(f"concat: keep[{i}] must be ascending row numbers in 0..{part.num_rows - 1}")
                kept = kept.astype(np.int64)  # np.diff of unsigned numbers would wrap around
                if len(kept) and (kept[0] < 0 or kept[-1] >= part.num_rows or np.any(np.diff(kept) <= 0)):
                    raise ValueError(f"concat: keep[{i}] must be ascending row numbers in 0..{part.num_rows - 1}")
                mapping[kept] = np.arange(total, total + len(kept))
                total += len(kept)
            new_rows.append(mapping)
        columns: dict[str, dict[str, Any]] = {}
        for name in sorted(set().union(*(p.fields for p in parts))):
            found = [(col, mapping) for p, mapping in zip(parts, new_rows) if (col := p.column(name)) is not None]
            entries: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in _KINDS}
            used_codes = []
            for col, mapping in found:
                for kind in _KINDS:
                    rows = mapping[getattr(col, f"{kind}_rows")]
                    kept_entries = rows >= 0
                    values = getattr(col, f"{kind}_{_VALUES[kind]}")[kept_entries]
                    entries[kind].append((rows[kept_entries], values))
                used_codes.append(np.unique(entries["str"][-1][1]))
            merged = sorted(set().union(*({col.strings[c] for c in used.tolist()}
                                          for (col, _), used in zip(found, used_codes))))
            position = {s: i for i, s in enumerate(merged)}
            str_entries = []
            for (col, _), (rows, codes) in zip(found, entries["str"]):
                # Old code -> merged code, for this part's strings (unused ones map to -1, never read).
                lookup = np.array([position.get(s, -1) for s in col.strings], dtype=np.int64)
                str_entries.append((rows, lookup[codes] if len(codes) else codes.astype(np.int64)))
            entries["str"] = str_entries
            column: dict[str, Any] = {"strings": merged}
            for kind, dtype in (("str", np.int64), ("num", np.float64), ("bool", bool), ("date", np.float64)):
                column[kind] = (np.concatenate([r for r, _ in entries[kind]]).astype(np.int64),
                                np.concatenate([v for _, v in entries[kind]]).astype(dtype))
            columns[name] = column
        return cls._assemble(total, columns)

    # -- files -------------------------------------------------------------------------------------------------

    def save(self, directory: Path) -> list[str]:
        """Write `FIELDS_FILES` into `directory`; returns their names."""
        npz_name, json_name = FIELDS_FILES
        with open(Path(directory) / npz_name, "wb") as out:
            np.savez(out, **self._arrays)
        meta = {"format": _FORMAT, "num_rows": self.num_rows,
                "fields": [{"name": n, "strings": s} for n, s in zip(self._names, self._strings)]}
        (Path(directory) / json_name).write_bytes(json.dumps(meta, ensure_ascii=False).encode("utf-8"))
        return list(FIELDS_FILES)

    @classmethod
    def load(cls, directory: Path) -> FieldIndex:
        """Read `FIELDS_FILES` from `directory` (unchecked: an index loader reads and checks the bytes itself)."""
        npz_name, json_name = FIELDS_FILES
        return cls.from_bytes((Path(directory) / npz_name).read_bytes(), (Path(directory) / json_name).read_bytes())

    @classmethod
    def from_bytes(cls, npz: bytes, meta_json: bytes) -> FieldIndex:
        """From the two files' contents. Every array is checked against the others (row numbers and codes in
        range, lengths agree), so a damaged or foreign pair ends in one ValueError saying "inconsistent"."""
        try:
            meta = json.loads(meta_json.decode("utf-8"))
            num_rows, names, strings = _check_meta(meta)
            arrays = read_npz(npz)
            expected = {f"{k}_{p}" for k in _KINDS for p in ("ptr", "rows", _VALUES[k])}
            if set(arrays) != expected:
                raise _Inconsistent(f"{len(arrays)} arrays, not the {len(expected)} expected")
            _check_arrays(arrays, num_rows, names, strings)
        except _Inconsistent as exc:
            raise ValueError(f"{' and '.join(FIELDS_FILES)} are inconsistent ({exc})") from None
        except (ValueError, TypeError, KeyError, OSError, EOFError, RecursionError, zipfile.BadZipFile,
                zlib.error) as exc:
            # np.load and json raise many kinds of error for bytes that are not what they should be.
            raise ValueError(f"{' and '.join(FIELDS_FILES)} are unreadable or inconsistent "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
        return cls(num_rows, names, strings, arrays)


class _Inconsistent(Exception):
    pass


def _check_meta(meta: Any) -> tuple[int, list[str], list[list[str]]]:
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT or set(meta) != {"format", "num_rows", "fields"}:
        raise _Inconsistent(f"{FIELDS_FILES[1]} is not format {_FORMAT}")
    num_rows, fields = meta["num_rows"], meta["fields"]
    if not isinstance(num_rows, int) or isinstance(num_rows, bool) or num_rows < 0 or not isinstance(fields, list):
        raise _Inconsistent("bad num_rows or fields")
    names, strings = [], []
    for entry in fields:
        if (not isinstance(entry, dict) or set(entry) != {"name", "strings"} or not isinstance(entry["name"], str)
                or not isinstance(entry["strings"], list) or not all(isinstance(s, str) for s in entry["strings"])):
            raise _Inconsistent("bad field entry")
        names.append(entry["name"])
        strings.append(entry["strings"])
        if any(a >= b for a, b in zip(entry["strings"], entry["strings"][1:])):
            raise _Inconsistent(f"strings of field {entry['name']!r} not sorted and distinct")
    if any(a >= b for a, b in zip(names, names[1:])):
        raise _Inconsistent("field names not sorted and distinct")
    return num_rows, names, strings


def _check_arrays(arrays: dict[str, np.ndarray], num_rows: int, names: list[str], strings: list[list[str]]) -> None:
    present = np.zeros(len(names), dtype=np.int64)
    for kind in _KINDS:
        ptr, rows, values = arrays[f"{kind}_ptr"], arrays[f"{kind}_rows"], arrays[f"{kind}_{_VALUES[kind]}"]
        want = {"str": "iu", "num": "f", "bool": "b", "date": "f"}[kind]
        if (ptr.ndim != 1 or rows.ndim != 1 or values.ndim != 1 or ptr.dtype.kind not in "iu"
                or rows.dtype.kind not in "iu" or values.dtype.kind not in want or len(rows) != len(values)):
            raise _Inconsistent(f"{kind} arrays have the wrong shape or type")
        if len(ptr) != len(names) + 1 or ptr[0] != 0 or ptr[-1] != len(rows) or np.any(np.diff(ptr) < 0):
            raise _Inconsistent(f"{kind} offsets do not match the {len(names)} fields")
        if len(rows) and (rows.min() < 0 or rows.max() >= num_rows):
            raise _Inconsistent(f"{kind} row numbers out of range 0..{num_rows - 1}")
        counts = np.diff(ptr)
        present += counts
        # Rows ascend within each field (they restart at a field's first entry): an offset moved by damage shows.
        step_ok = np.diff(rows.astype(np.int64)) >= 0
        step_ok[ptr[1:-1][(ptr[1:-1] > 0) & (ptr[1:-1] < len(rows))] - 1] = True
        if not step_ok.all():
            raise _Inconsistent(f"{kind} rows out of order")
        if kind == "str" and len(values):
            limits = np.repeat(np.array([len(s) for s in strings], dtype=np.int64), counts)
            if values.min() < 0 or np.any(values >= limits):
                raise _Inconsistent("string codes out of range of their field's strings")
    if np.any(present == 0):
        raise _Inconsistent("a field without values")
