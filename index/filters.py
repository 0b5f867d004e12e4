"""Metadata filters: one syntax (a Python dict, the command line's ``--filter '<JSON>'``, the HTTP API), parsed and
checked once, then evaluated per query to a boolean row mask over a `FieldIndex` with numpy alone.

Syntax (field values follow the field model of `index.fields`: dotted names for nested objects, lists are
multi-valued, None is absence):

- ``{"source": "pubmed", "year": {"gte": 2015}, "lang": {"in": ["en", "de"]}}``: the keys of one object are ANDed.
- A field's condition is a value (equality: ``{"f": v}`` is ``{"f": {"eq": v}}``) or an object of operators, all of
  which must hold:
  ``eq`` (a string, number or boolean), ``in`` (a non-empty list of them: any matches),
  ``gt``/``gte``/``lt``/``lte`` (a number, compared with the field's numbers, or an ISO date string such as
  "2015-03-01", compared with the field's dates) and ``exists`` (true/false: whether the row has the field).
  The range operators of one object bound the same value: ``{"year": {"gte": 2010, "lte": 2012}}`` matches a row
  one of whose years lies in [2010, 2012] (for a field with one value per row, the same as ANDing them); they must
  all be numbers or all be dates.
- Equality is by kind: text equals text exactly (an ISO date operand of ``eq``/``in`` is compared as text), a number
  equals a number (1 == 1.0, as float64), a boolean equals a boolean; a boolean is never a number. A multi-valued
  field matches when any of its values does.
- ``{"and": [f, ...]}``, ``{"or": [f, ...]}`` (non-empty lists) and ``{"not": f}`` (the rows where ``f`` is false,
  rows without the field included) combine filters, nested at most `MAX_FILTER_DEPTH` levels. ``and``, ``or`` and
  ``not`` are reserved at filter level: a metadata field of one of those names cannot be filtered.
- ``doc_id`` is the row's document id, with ``eq``, ``in`` and ``exists`` (every row has one); a metadata field named
  ``doc_id`` cannot be filtered either.
- ``null`` is never a value (match rows without a field with ``{"exists": false}``).

Errors are one-line `FilterError`s naming where the problem is, as a path such as ``filter['year']['gtee']``:
malformed filters when parsed; fields that no row has, and ranges on fields holding no numbers (or no dates), when
evaluated against an index.

Example:
    >>> from index.fields import FieldIndex
    >>> fi = FieldIndex.build([{"year": 2014}, {"year": 2016, "lang": "en"}, {"lang": "de"}])
    >>> flt = parse_filter({"or": [{"year": {"gte": 2015}}, {"lang": "de"}]})
    >>> evaluate(flt, fi, ["d1", "d2", "d3"]).tolist()
    [False, True, True]
"""

from __future__ import annotations

import bisect
import copy
import difflib
import json
import math
import reprlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from index.fields import FieldColumn, FieldIndex, is_number, parse_date, to_float

MAX_FILTER_DEPTH = 16
OPERATORS = ("eq", "in", "gt", "gte", "lt", "lte", "exists")
RANGES = ("gt", "gte", "lt", "lte")
LOGICAL = ("and", "or", "not")
DOC_ID = "doc_id"
_KNOWN_SHOWN = 20  # field names listed in an unknown-field message
_IN_BY_EQUALITY = 16  # up to this many values, `in` compares one by one: faster than np.isin's sort
_EXAMPLE = '{"source": "pubmed"}'

_short = reprlib.Repr()
_short.maxstring = 60  # filters come from users: a message shows their names and values bounded
_short.maxother = 60

Scalar = str | float | bool


class FilterError(ValueError):
    """A filter is malformed, or does not fit the index; one line naming where (``filter['year']['gte']``) and the
    fix."""


@dataclass(frozen=True)
class _Condition:
    name: str
    where: str
    eq: Scalar | None  # numbers as float
    any_of: tuple[Scalar, ...] | None
    bounds: tuple[tuple[str, float], ...]  # (range operator, number or seconds since the epoch)
    dates: bool  # bounds are dates
    exists: bool | None


@dataclass(frozen=True)
class _Logic:
    op: str  # "and" or "or"
    children: tuple[_Node, ...]


@dataclass(frozen=True)
class _Not:
    child: _Node


_Node = _Condition | _Logic | _Not


class Filter:
    """A parsed, checked filter; immutable. Made by `parse_filter` or `parse_filter_json`.

    Attributes:
        spec: the filter as given (a copy).
        fields: the field names it uses (``doc_id`` included when used).
        key: canonical JSON of what it means, equal for equivalent spellings (``{"f": 1}``, ``{"f": {"eq": 1.0}}``),
            for caching.
    """

    __slots__ = ("_spec", "_node", "fields", "key")

    def __init__(self, spec: dict[str, Any], node: _Node, fields: frozenset[str], key: str) -> None:
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "key", key)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Filter is immutable")

    @property
    def spec(self) -> dict[str, Any]:
        return copy.deepcopy(self._spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Filter({_short.repr(self.key)})"


# -- parsing ---------------------------------------------------------------------------------------------------


def _at(where: str, key: Any) -> str:
    return f"{where}[{_short.repr(key)}]"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return f"the boolean {str(bool(value)).lower()}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if is_number(value) or isinstance(value, str):
        return _short.repr(value)
    return f"a {type(value).__name__}"


def _close(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {_short.repr(match[0])}?" if match else ""


def _value(value: Any, where: str, doc_id: bool) -> Scalar:
    """An eq/in operand: a string, number (as float) or boolean."""
    if value is None:
        raise FilterError(f"{where}: null is not a value to compare with; to match rows without the field use "
                          '{"exists": false}')
    if doc_id and not isinstance(value, str):
        raise FilterError(f"{where}: document ids are strings, got {_kind(value)}; quote it")
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if is_number(value):
        if math.isnan(value):
            raise FilterError(f"{where}: NaN equals nothing; give a number")
        return to_float(value)
    if isinstance(value, str):
        return value
    hint = ' (for any of several values use {"in": [...]})' if isinstance(value, (list, tuple)) else ""
    raise FilterError(f"{where}: needs a string, number or boolean, got {_kind(value)}{hint}")


def _bound(value: Any, where: str) -> tuple[float, bool]:
    """A range operand: (number, False) or (seconds since the epoch, True)."""
    if is_number(value):
        if math.isnan(value):
            raise FilterError(f"{where}: NaN bounds nothing; give a number")
        return to_float(value), False
    if isinstance(value, str) and (seconds := parse_date(value)) is not None:
        return seconds, True
    hint = " (not an ISO 8601 date)" if isinstance(value, str) else ""
    raise FilterError(f"{where}: needs a number or an ISO 8601 date string such as '2015-03-01', got "
                      f"{_kind(value)}{hint}")


def _in_order(values: Sequence[Scalar]) -> tuple[Scalar, ...]:
    """Distinct values in a canonical order; by kind first, since True == 1.0 in Python."""
    tagged = {(0 if isinstance(v, bool) else 1 if isinstance(v, float) else 2, v) for v in values}
    return tuple(v for _, v in sorted(tagged))


def _parse_condition(name: str, value: Any, where: str) -> _Condition:
    doc_id = name == DOC_ID
    if not isinstance(value, dict):
        if isinstance(value, (list, tuple)):
            raise FilterError(f"{where}: a list is not a value; to match any of several values use "
                              '{"in": [...]}')
        return _Condition(name, where, _value(value, where, doc_id), None, (), False, None)
    if not value:
        raise FilterError(f"{where}: an empty condition; give an operator ({', '.join(OPERATORS)}) or a value")
    eq: Scalar | None = None
    any_of: tuple[Scalar, ...] | None = None
    bounds: list[tuple[str, float]] = []
    kinds: set[bool] = set()
    exists: bool | None = None
    for op, operand in value.items():
        at = _at(where, op)
        if not isinstance(op, str):
            raise FilterError(f"{where}: the operator {_kind(op)} is not a string; use one of {', '.join(OPERATORS)}")
        if op not in OPERATORS:
            if op in LOGICAL:
                hint = f"; {op!r} combines whole filters, such as {{\"{op}\": [{{{json.dumps(name)[:60]}: ...}}, ...]}}"
            else:
                dotted = _short.repr(f"{name}.{op}")
                hint = _close(op, OPERATORS) or f" (a nested field is written with a dot: {dotted})"
            raise FilterError(f"{at}: unknown operator {_short.repr(op)}; use one of {', '.join(OPERATORS)}{hint}")
        if op == "eq":
            eq = _value(operand, at, doc_id)
        elif op == "in":
            if not isinstance(operand, list) or not operand:
                raise FilterError(f"{at}: needs a non-empty list of strings, numbers or booleans, got "
                                  f"{'an empty list' if isinstance(operand, list) else _kind(operand)}")
            any_of = _in_order([_value(v, f"{at}[{i}]", doc_id) for i, v in enumerate(operand)])
        elif op == "exists":
            if not isinstance(operand, (bool, np.bool_)):
                raise FilterError(f"{at}: needs true or false, got {_kind(operand)}")
            exists = bool(operand)
        else:
            if doc_id:
                raise FilterError(f"{at}: doc_id takes only eq, in and exists; ranges over document ids are not "
                                  "supported")
            number, is_date = _bound(operand, at)
            bounds.append((op, number))
            kinds.add(is_date)
    if len(kinds) > 1:
        raise FilterError(f"{where}: the range operators mix numbers and ISO dates; bound one value with numbers "
                          "only or dates only (use {\"and\": [...]} for both)")
    return _Condition(name, where, eq, any_of, tuple(sorted(bounds)), kinds == {True}, exists)


def _parse(spec: Any, where: str, depth: int, fields: set[str]) -> _Node:
    if not isinstance(spec, dict):
        raise FilterError(f"{where}: a filter must be an object such as {_EXAMPLE}, got {_kind(spec)}")
    if depth > MAX_FILTER_DEPTH:
        raise FilterError(f"{where}: filters nest more than {MAX_FILTER_DEPTH} levels deep here; flatten it "
                          "(several keys of one object are ANDed, and an 'or' takes any number of filters)")
    if not spec:
        raise FilterError(f"{where}: an empty filter; give at least one condition such as {_EXAMPLE}")
    nodes: list[_Node] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise FilterError(f"{where}: the key {_kind(key)} is not a string; field names are strings")
        at = _at(where, key)
        if key in ("and", "or"):
            if not isinstance(value, list) or not value:
                got = "an empty list" if isinstance(value, list) else _kind(value)
                raise FilterError(f"{at}: needs a non-empty list of filters such as [{_EXAMPLE}], got {got}")
            nodes.append(_Logic(key, tuple(_parse(v, f"{at}[{i}]", depth + 1, fields) for i, v in enumerate(value))))
        elif key == "not":
            nodes.append(_Not(_parse(value, at, depth + 1, fields)))
        else:
            fields.add(key)
            nodes.append(_parse_condition(key, value, at))
    return nodes[0] if len(nodes) == 1 else _Logic("and", tuple(nodes))


def _canonical(node: _Node) -> Any:
    """What `node` means, as JSON-able data; equivalent spellings give equal data."""
    if isinstance(node, _Not):
        return {"not": _canonical(node.child)}
    if isinstance(node, _Logic):
        children = [_canonical(c) for c in node.children]
        return {node.op: sorted(children, key=lambda c: json.dumps(c, sort_keys=True))}
    out: dict[str, Any] = {"field": node.name}
    if node.eq is not None:
        out["eq"] = node.eq
    if node.any_of is not None:
        out["in"] = list(node.any_of)
    if node.bounds:
        out["range"] = [[op, bound] for op, bound in node.bounds]
        out["dates"] = node.dates
    if node.exists is not None:
        out["exists"] = node.exists
    return out


def parse_filter(spec: Any) -> Filter:
    """Check a filter's syntax (no index needed) and parse it; a `Filter` is returned as it is.

    Example:
        >>> parse_filter({"year": {"gte": 2015}, "source": "pubmed"}).fields == {"year", "source"}
        True
        >>> parse_filter({"year": {"gtee": 2015}})
        Traceback (most recent call last):
        ...
        index.filters.FilterError: filter['year']['gtee']: unknown operator 'gtee'; use one of eq, in, gt, gte, \
lt, lte, exists; did you mean 'gte'?
    """
    if isinstance(spec, Filter):
        return spec
    fields: set[str] = set()
    node = _parse(spec, "filter", 1, fields)
    key = json.dumps(_canonical(node), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Filter(copy.deepcopy(spec), node, frozenset(fields), key)


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_filter_json(text: str) -> Filter:
    """`parse_filter` of a JSON text (the command line's ``--filter``); bad JSON is a `FilterError` saying where.

    Example:
        >>> parse_filter_json('{"lang": {"in": ["en", "de"]}}').key
        '{"field":"lang","in":["de","en"]}'
    """
    try:
        spec = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise FilterError(f"filter: the key {_short.repr(exc.args[0])} appears twice in one object; put several "
                          "operators in one object ({\"gte\": 1, \"lt\": 5}) or use {\"and\": [...]}") from None
    except json.JSONDecodeError as exc:
        start, end = max(0, exc.pos - 30), exc.pos + 30
        near = ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")
        raise FilterError(f"filter is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}, near "
                          f"{near!r}; write one JSON object such as '{_EXAMPLE}' (quoted for the shell)") from None
    except RecursionError:
        raise FilterError(f"filter: nested far too deeply to read (at most {MAX_FILTER_DEPTH} filter levels); "
                          "flatten it") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise FilterError(f"filter is not valid JSON: {_short.repr(str(exc))}") from None
    return parse_filter(spec)


# -- evaluation ------------------------------------------------------------------------------------------------


def _all(masks: list[np.ndarray]) -> np.ndarray:
    out = masks[0]
    for mask in masks[1:]:
        out = out & mask
    return out


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class _Evaluator:
    def __init__(self, fields: FieldIndex, doc_ids: Sequence[str], known: Collection[str] = ()) -> None:
        self.fields = fields
        self.n = fields.num_rows
        self.doc_ids = doc_ids
        self.known = known
        self._ids: np.ndarray | None = None

    def mask(self, node: _Node) -> np.ndarray:
        if isinstance(node, _Not):
            return ~self.mask(node.child)
        if isinstance(node, _Logic):
            # One child at a time, in place: memory stays two masks however many children there are. No early exit,
            # so that every condition is checked against the index whatever the rows.
            out = self.mask(node.children[0]).copy()
            for child in node.children[1:]:
                if node.op == "and":
                    out &= self.mask(child)
                else:
                    out |= self.mask(child)
            return out
        return self.condition(node)

    def condition(self, cond: _Condition) -> np.ndarray:
        if cond.name == DOC_ID:
            return self.doc_id(cond)
        col = self.fields.column(cond.name)
        if col is None and cond.name in self.known:  # held by other parts of the corpus, by no row here
            masks = [np.zeros(self.n, dtype=bool)] if cond.eq is not None or cond.any_of is not None or cond.bounds \
                else []
            if cond.exists is not None:
                masks.append(np.full(self.n, not cond.exists))
            return _all(masks)
        if col is None:
            known = sorted({DOC_ID, *self.fields.fields})
            shown = ", ".join(k if k.isprintable() and len(k) <= 60 else _short.repr(k) for k in known[:_KNOWN_SHOWN])
            more = f", ... ({len(known) - _KNOWN_SHOWN} more)" if len(known) > _KNOWN_SHOWN else ""
            raise FilterError(f"{cond.where}: no document has the field {_short.repr(cond.name)}; known fields: "
                              f"{shown}{more}{_close(cond.name, known)}")
        masks = []
        if cond.eq is not None:
            masks.append(self.match(col, (cond.eq,)))
        if cond.any_of is not None:
            masks.append(self.match(col, cond.any_of))
        if cond.bounds:
            masks.append(self.range(col, cond))
        if cond.exists is not None:
            present = col.present(self.n)
            masks.append(present if cond.exists else ~present)
        return _all(masks)

    def match(self, col: FieldColumn, values: Sequence[Scalar]) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        strings = col.strings
        codes = [i for v in values if isinstance(v, str)
                 and (i := bisect.bisect_left(strings, v)) < len(strings) and strings[i] == v]
        numbers = [v for v in values if isinstance(v, float)]
        bools = [v for v in values if isinstance(v, bool)]
        if codes and len(col.str_codes):
            if len(codes) == 1:
                hit = col.str_codes == codes[0]
            else:  # a lookup table over the field's strings: one gather, however many values (np.isin sorts)
                table = np.zeros(len(strings), dtype=bool)
                table[codes] = True
                hit = table[col.str_codes]
            mask[col.str_rows[hit]] = True
        for wanted, rows, held in ((numbers, col.num_rows, col.num_values), (bools, col.bool_rows, col.bool_values)):
            if wanted and len(held):
                hit = held == wanted[0]
                for value in wanted[1:_IN_BY_EQUALITY]:
                    hit |= held == value
                if len(wanted) > _IN_BY_EQUALITY:
                    hit |= np.isin(held, wanted[_IN_BY_EQUALITY:])
                mask[rows[hit]] = True
        return mask

    def range(self, col: FieldColumn, cond: _Condition) -> np.ndarray:
        rows, values = (col.date_rows, col.date_values) if cond.dates else (col.num_rows, col.num_values)
        if not len(rows):
            self.no_range(col, cond)
        hit = np.ones(len(values), dtype=bool)
        for op, bound in cond.bounds:
            hit &= {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}[op](values, bound)
        mask = np.zeros(self.n, dtype=bool)
        mask[rows[hit]] = True
        return mask

    def no_range(self, col: FieldColumn, cond: _Condition) -> None:
        kinds = col.kinds()
        name = _short.repr(cond.name)
        if not len(col.num_rows) and not len(col.date_rows):
            raise FilterError(f"{cond.where}: field {name} holds only {_words(kinds)}; ranges need numbers or ISO "
                              "dates")
        if cond.dates:
            raise FilterError(f"{cond.where}: field {name} holds no ISO dates (it holds {_words(kinds)}); compare "
                              "it with a number, such as {\"gte\": 2015}")
        raise FilterError(f"{cond.where}: field {name} holds no numbers (it holds {_words(kinds)}); compare it "
                          "with an ISO date, such as {\"gte\": \"2015-03-01\"}")

    def doc_id(self, cond: _Condition) -> np.ndarray:
        masks = []
        if cond.eq is not None:
            masks.append(np.asarray(self.ids() == cond.eq, dtype=bool))
        if cond.any_of is not None:
            ids = self.ids()
            if len(cond.any_of) <= _IN_BY_EQUALITY:
                hit = np.zeros(self.n, dtype=bool)
                for v in cond.any_of:
                    hit |= np.asarray(ids == v, dtype=bool)
                masks.append(hit)
            else:
                wanted = set(cond.any_of)
                masks.append(np.fromiter((d in wanted for d in ids), dtype=bool, count=self.n))
        if cond.exists is not None:  # every row has a document id
            masks.append(np.full(self.n, cond.exists, dtype=bool))
        return _all(masks)

    def ids(self) -> np.ndarray:
        if self._ids is None:
            ids = self.doc_ids
            self._ids = ids if isinstance(ids, np.ndarray) else np.asarray(list(ids), dtype=object)
        return self._ids


def evaluate(flt: Filter, fields: FieldIndex, doc_ids: Sequence[str], known: Collection[str] = ()) -> np.ndarray:
    """The rows `flt` matches, as a bool mask of length ``fields.num_rows``; ``doc_ids[row]`` is the row's
    document id (read only when the filter uses ``doc_id``; a numpy array of str is fastest). `known`: fields that
    other parts of the corpus hold (a sharded index's other shards): on rows without them they match as absent.

    Raises `FilterError` when the filter uses a field that no row has, or a range on a field that holds no numbers
    (for a date operand, no dates). An index without rows matches nothing, without those checks.

    Example:
        >>> from index.fields import FieldIndex
        >>> fi = FieldIndex.build([{"lang": "en"}, {"lang": "de"}])
        >>> evaluate(parse_filter({"not": {"lang": "en"}}), fi, ["a", "b"]).tolist()
        [False, True]
        >>> evaluate(parse_filter({"lnag": "en"}), fi, ["a", "b"])
        Traceback (most recent call last):
        ...
        index.filters.FilterError: filter['lnag']: no document has the field 'lnag'; known fields: doc_id, lang; \
did you mean 'lang'?
    """
    if not isinstance(flt, Filter):
        raise TypeError(f"evaluate: expected a Filter (from parse_filter), got {type(flt).__name__}")
    if len(doc_ids) != fields.num_rows:
        raise ValueError(f"evaluate: {len(doc_ids)} document ids for {fields.num_rows} rows; give one per row")
    if fields.num_rows == 0:
        return np.zeros(0, dtype=bool)
    return _Evaluator(fields, doc_ids, known).mask(flt._node)
