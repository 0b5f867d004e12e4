"""Metadata filters: every operator and combination on a small table, each error, and a property test against a
brute-force evaluator written here from the documented semantics."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index.fields import FieldIndex
from index.filters import MAX_FILTER_DEPTH, FilterError, evaluate, parse_filter, parse_filter_json

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TABLE = [  # (doc id, metadata); d1 has two passages
    ("d1", {"source": "pubmed", "year": 2015, "lang": ["en", "de"], "date": "2015-03-01", "open": True,
            "author": {"name": "Ann"}, "score": 1.5}),
    ("d1", {"source": "pubmed", "year": 2015, "lang": ["en", "de"], "date": "2015-03-01", "open": True,
            "author": {"name": "Ann"}, "score": 1.5}),
    ("d2", {"source": "arxiv", "year": 2018, "lang": "en", "date": "2018-06-30T12:00:00Z", "open": False,
            "score": 1, "tags": [True]}),
    ("d3", {"source": "pubmed", "year": 2010.0, "lang": None, "date": "not a date",
            "authors": [{"name": "Bo"}, {"name": "Cy"}]}),
    ("d4", {}),
    ("d5", {"year": "2015", "source": ["arxiv", "pubmed"], "tags": [1, "1"]}),
    ("d6", {"year": [2000, 2020]}),
]
DOC_IDS = [d for d, _ in TABLE]
FIELDS = FieldIndex.build(m for _, m in TABLE)


def rows(spec, doc_ids=DOC_IDS) -> list[int]:
    mask = evaluate(parse_filter(spec), FIELDS, doc_ids)
    assert mask.dtype == bool and mask.shape == (len(TABLE),)
    return np.flatnonzero(mask).tolist()


@pytest.mark.parametrize("spec, expected", [
    ({"source": "pubmed"}, [0, 1, 3, 5]),
    ({"source": {"eq": "arxiv"}}, [2, 5]),
    ({"source": "PubMed"}, []),
    ({"year": 2015}, [0, 1]),  # the text "2015" of d5 is not the number 2015
    ({"year": "2015"}, [5]),
    ({"year": 2010}, [3]),  # 2010 == 2010.0
    ({"year": {"eq": 2015.0}}, [0, 1]),
    ({"year": {"gte": 2015}}, [0, 1, 2, 6]),
    ({"year": {"gt": 2015, "lt": 2020}}, [2]),
    ({"year": {"lte": 2015}}, [0, 1, 3, 6]),
    ({"year": {"gte": 2010, "lte": 2012}}, [3]),  # one value in the range: d6's 2000 and 2020 are not
    ({"and": [{"year": {"gte": 2010}}, {"year": {"lte": 2012}}]}, [3, 6]),
    ({"year": {"in": [2000, 2018, "2015"]}}, [2, 5, 6]),
    ({"lang": {"in": ["de", "fr"]}}, [0, 1]),
    ({"lang": {"in": ["en"]}}, [0, 1, 2]),
    ({"lang": {"exists": True}}, [0, 1, 2]),
    ({"lang": {"exists": False}}, [3, 4, 5, 6]),
    ({"lang": {"in": ["en", "de"], "eq": "de", "exists": True}}, [0, 1]),
    ({"open": True}, [0, 1]),
    ({"open": False}, [2]),
    ({"open": 1}, []),  # a boolean is never a number
    ({"tags": 1}, [5]),
    ({"tags": 1.0}, [5]),
    ({"tags": "1"}, [5]),
    ({"tags": True}, [2]),
    ({"tags": {"in": [True, 7]}}, [2]),
    ({"score": {"gt": 1}}, [0, 1]),
    ({"score": 1}, [2]),
    ({"score": {"lt": math.inf}}, [0, 1, 2]),
    ({"date": {"gte": "2016-01-01"}}, [2]),
    ({"date": {"lt": "2015-03-01T00:00:01"}}, [0, 1]),
    ({"date": {"gte": "2018-06-30T14:00:00+02:00", "lte": "2018-06-30T12:00:00"}}, [2]),  # the same instant
    ({"date": "2015-03-01"}, [0, 1]),  # eq compares text
    ({"date": "2015-03-01T00:00:00"}, []),
    ({"date": {"in": ["not a date"]}}, [3]),
    ({"author.name": "Ann"}, [0, 1]),
    ({"authors.name": "Cy"}, [3]),
    ({"doc_id": "d1"}, [0, 1]),
    ({"doc_id": {"in": ["d2", "d4", "zz"]}}, [2, 4]),
    ({"doc_id": {"in": [f"x{i}" for i in range(40)] + ["d3"]}}, [3]),
    ({"doc_id": {"exists": True}}, [0, 1, 2, 3, 4, 5, 6]),
    ({"doc_id": {"exists": False}}, []),
    ({"doc_id": {"eq": "d1", "in": ["d1", "d2"]}}, [0, 1]),
    ({"not": {"source": "pubmed"}}, [2, 4, 6]),
    ({"not": {"lang": "en"}}, [3, 4, 5, 6]),  # rows without the field included
    ({"not": {"not": {"lang": "en"}}}, [0, 1, 2]),
    ({"or": [{"source": "arxiv"}, {"year": {"lt": 2012}}]}, [2, 3, 5, 6]),
    ({"and": [{"source": "pubmed"}, {"not": {"doc_id": "d3"}}]}, [0, 1, 5]),
    ({"source": "pubmed", "year": {"gte": 2015}}, [0, 1]),
    ({"source": "pubmed", "or": [{"doc_id": "d3"}, {"open": True}], "not": {"doc_id": "d1"}}, [3]),
    ({"or": [{"doc_id": f"d{i}"} for i in range(50)]}, [0, 1, 2, 3, 4, 5, 6]),
    ({"and": [{"or": [{"not": {"source": "arxiv"}}]}, {"year": {"exists": True}}]}, [0, 1, 3, 6]),
])
def test_operators_and_combinations(spec, expected):
    assert rows(spec) == expected
    assert rows(spec, np.array(DOC_IDS)) == expected  # ids as a numpy array of str, the fast path
    assert rows(spec, tuple(DOC_IDS)) == expected
    assert np.flatnonzero(evaluate(parse_filter_json(json.dumps(spec)), FIELDS, DOC_IDS)).tolist() == expected


def test_a_filter_is_immutable_and_keyed_by_meaning():
    spec = {"year": {"gte": 2015}, "lang": {"in": ["en", "de"]}}
    flt = parse_filter(spec)
    assert flt.spec == spec and flt.fields == {"year", "lang"}
    flt.spec["year"]["gte"] = 1
    spec["year"]["gte"] = 1
    assert flt.spec == {"year": {"gte": 2015}, "lang": {"in": ["en", "de"]}}
    with pytest.raises(AttributeError):
        flt.key = "x"  # type: ignore[misc]
    assert parse_filter(flt) is flt
    same = [({"f": 1}, {"f": {"eq": 1.0}}), ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
            ({"or": [{"a": 1}, {"b": 2}]}, {"or": [{"b": 2}, {"a": 1}]}),
            ({"f": {"in": ["x", "y", "x"]}}, {"f": {"in": ["y", "x"]}}),
            ({"d": {"gte": "2015-03-01"}}, {"d": {"gte": "2015-03-01T00:00:00Z"}})]
    for a, b in same:
        assert parse_filter(a).key == parse_filter(b).key and parse_filter(a) == parse_filter(b)
        assert hash(parse_filter(a)) == hash(parse_filter(b))
    different = [({"f": 1}, {"f": True}), ({"f": "1"}, {"f": 1}), ({"f": {"in": [True]}}, {"f": {"in": [1]}}),
                 ({"f": {"gt": 1}}, {"f": {"gte": 1}}), ({"f": 1}, {"not": {"f": 1}}), ({"f": 1}, {"g": 1})]
    for a, b in different:
        assert parse_filter(a).key != parse_filter(b).key
    assert parse_filter({"doc_id": "x", "or": [{"a.b": 1}]}).fields == {"doc_id", "a.b"}


def _nested(levels: int) -> dict:
    spec: dict = {"f": 1}
    for _ in range(levels - 1):
        spec = {"not": spec}
    return spec


@pytest.mark.parametrize("spec, parts", [
    ({"year": {"gtee": 2015}}, ["filter['year']['gtee']: unknown operator 'gtee'", "eq, in, gt, gte, lt, lte, exists",
                                "did you mean 'gte'?"]),
    ({"author": {"name": "x"}}, ["filter['author']['name']", "'author.name'"]),
    ({"year": {"or": [1]}}, ["filter['year']['or']", "combines whole filters"]),
    ({"lang": {"in": "en"}}, ["filter['lang']['in']: needs a non-empty list", "got 'en'"]),
    ({"lang": {"in": []}}, ["filter['lang']['in']", "an empty list"]),
    ({"lang": {"in": ["en", None]}}, ["filter['lang']['in'][1]: null", '{"exists": false}']),
    ({"lang": {"in": [["en"]]}}, ["filter['lang']['in'][0]: needs a string, number or boolean"]),
    ({"year": {"gte": True}}, ["filter['year']['gte']: needs a number or an ISO 8601 date", "the boolean true"]),
    ({"year": {"gte": [2015]}}, ["filter['year']['gte']: needs a number", "a list"]),
    ({"year": {"gte": "2015"}}, ["filter['year']['gte']", "not an ISO 8601 date"]),
    ({"year": {"gte": None}}, ["filter['year']['gte']", "null"]),
    ({"year": {"gte": math.nan}}, ["filter['year']['gte']", "NaN"]),
    ({"year": math.nan}, ["filter['year']", "NaN"]),
    ({"year": {"gte": 2015, "lt": "2020-01-01"}}, ["filter['year']", "mix numbers and ISO dates"]),
    ({"x": {"exists": "yes"}}, ["filter['x']['exists']: needs true or false", "'yes'"]),
    ({"x": {"exists": 1}}, ["filter['x']['exists']: needs true or false"]),
    ({}, ["filter: an empty filter"]),
    ({"x": {}}, ["filter['x']: an empty condition"]),
    ({"and": []}, ["filter['and']: needs a non-empty list of filters", "an empty list"]),
    ({"or": {"a": 1}}, ["filter['or']: needs a non-empty list of filters", "an object"]),
    ({"not": []}, ["filter['not']: a filter must be an object"]),
    ({"not": {}}, ["filter['not']: an empty filter"]),
    ({"and": [{"a": 1}, 5]}, ["filter['and'][1]: a filter must be an object", "got 5"]),
    ({"or": [{"and": [{"a": {"lt": "x"}}]}]}, ["filter['or'][0]['and'][0]['a']['lt']"]),
    ({"x": None}, ["filter['x']: null is not a value", '{"exists": false}']),
    ({"x": ["a", "b"]}, ["filter['x']: a list is not a value", '{"in": [...]}']),
    ({"x": {"eq": ["a"]}}, ["filter['x']['eq']", '{"in": [...]}']),
    ({"x": object()}, ["filter['x']: needs a string, number or boolean", "a object"]),
    ({1: "x"}, ["filter: the key 1 is not a string"]),
    ({"x": {1: 2}}, ["filter['x']: the operator 1 is not a string"]),
    (["a"], ["filter: a filter must be an object", "a list"]),
    ("source", ["filter: a filter must be an object"]),
    (None, ["filter: a filter must be an object", "null"]),
    ({"doc_id": {"gte": "a"}}, ["filter['doc_id']['gte']: doc_id takes only eq, in and exists"]),
    ({"doc_id": 5}, ["filter['doc_id']: document ids are strings", "got 5"]),
    ({"doc_id": {"in": ["a", True]}}, ["filter['doc_id']['in'][1]: document ids are strings"]),
    (_nested(MAX_FILTER_DEPTH + 1), ["more than 16 levels", "filter" + "['not']" * MAX_FILTER_DEPTH + ":"]),
    ({"x" * 10_000: {"bad": 1}}, ["unknown operator 'bad'"]),
])
def test_malformed_filters_say_where(spec, parts):
    with pytest.raises(FilterError) as caught:
        parse_filter(spec)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    for part in parts:
        assert part in message


def test_the_deepest_allowed_filter_parses():
    assert parse_filter(_nested(MAX_FILTER_DEPTH)).fields == {"f"}
    flt = parse_filter({"and": [_nested(MAX_FILTER_DEPTH - 1)]})
    assert flt.fields == {"f"}


def test_the_deepest_allowed_filter_evaluates():
    fi = FieldIndex.build([{"f": 1}, {"f": 2}])
    assert evaluate(parse_filter(_nested(MAX_FILTER_DEPTH)), fi, ["a", "b"]).tolist() == [False, True]


@pytest.mark.parametrize("text, parts", [
    ('{"year": {"gte" 2015}}', ["filter is not valid JSON", "line 1, column 17", "near", '{"source": "pubmed"}']),
    ('{\n "a": 1,\n "b" 2}', ["line 3, column 6"]),
    ('{"a": "' + "x" * 10_000 + '"' + ", 3}", ["not valid JSON", "..."]),
    ("", ["not valid JSON"]),
    ("source=pubmed", ["not valid JSON", "line 1, column 1"]),
    ('{"a": 1, "a": 2}', ["the key 'a' appears twice"]),
    ('{"a": {"gte": 1, "gte": 2}}', ["the key 'gte' appears twice"]),
    ("[" * 100_000, ["filter"]),
    ('{"a": ' + "1" * 5000 + "}", ["not valid JSON"]),
    ('{"a": NaN}', ["filter['a']", "NaN"]),
    ('["a"]', ["filter: a filter must be an object"]),
])
def test_json_filters_say_where(text, parts):
    with pytest.raises(FilterError) as caught:
        parse_filter_json(text)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    for part in parts:
        assert part in message


@pytest.mark.parametrize("spec, parts", [
    ({"yaer": 2015}, ["filter['yaer']: no document has the field 'yaer'; known fields: author.name, authors.name, "
                      "date, doc_id, lang, open, score, source, tags, year; did you mean 'year'?"]),
    ({"or": [{"source": "x"}, {"not": {"yaer": {"exists": False}}}]}, ["filter['or'][1]['not']['yaer']: no document"]),
    ({"author": {"exists": True}}, ["no document has the field 'author'", "author.name"]),
    ({"source": {"gte": 5}}, ["filter['source']: field 'source' holds only text values; ranges need numbers or "
                              "ISO dates"]),
    ({"open": {"gt": 0}}, ["field 'open' holds only true/false values; ranges need numbers or ISO dates"]),
    ({"score": {"gte": "2015-01-01"}}, ["field 'score' holds no ISO dates (it holds numbers)", '{"gte": 2015}']),
    ({"date": {"gte": 5}}, ["field 'date' holds no numbers (it holds text values and ISO dates)", '"2015-03-01"']),
    ({"lang": {"lt": "2020-01-01"}}, ["field 'lang' holds only text values"]),
])
def test_filters_that_do_not_fit_the_index_say_why(spec, parts):
    flt = parse_filter(spec)  # well-formed
    with pytest.raises(FilterError) as caught:
        evaluate(flt, FIELDS, DOC_IDS)
    for part in parts:
        assert part in str(caught.value)


def test_the_list_of_known_fields_is_bounded():
    fi = FieldIndex.build([{f"field{i:03d}": i for i in range(100)}])
    with pytest.raises(FilterError, match=r"known fields: doc_id, field000, .*field018, \.\.\. \(81 more\)"):
        evaluate(parse_filter({"nope": 1}), fi, ["a"])


def test_evaluate_checks_its_arguments():
    with pytest.raises(ValueError, match="6 document ids for 7 rows"):
        evaluate(parse_filter({"source": "x"}), FIELDS, DOC_IDS[:-1])
    with pytest.raises(TypeError, match="expected a Filter"):
        evaluate({"source": "x"}, FIELDS, DOC_IDS)  # type: ignore[arg-type]
    # An index without rows matches nothing, and has no fields to check against.
    assert evaluate(parse_filter({"nope": {"gte": 1}}), FieldIndex.build([]), []).shape == (0,)


# -- property test against a brute-force evaluator ---------------------------------------------------------------

UTC = timezone.utc
DATES = {  # by hand: what each ISO text of the domain means, in seconds since the epoch
    "2015-03-01": datetime(2015, 3, 1, tzinfo=UTC).timestamp(),
    "2015-03-01T00:00:00Z": datetime(2015, 3, 1, tzinfo=UTC).timestamp(),
    "2015-03-01T02:00:00+02:00": datetime(2015, 3, 1, tzinfo=UTC).timestamp(),
    "2016-01-01T12:00:00+02:00": datetime(2016, 1, 1, 10, tzinfo=UTC).timestamp(),
    "2016-01-01 10:00": datetime(2016, 1, 1, 10, tzinfo=UTC).timestamp(),
    "2014-12-31T23:59:59.5": (datetime(2015, 1, 1, tzinfo=UTC) - timedelta(seconds=0.5)).timestamp(),
}
NOT_DATES = ["x", "y", "", "2015", "2015-3-1", "2015-03-01x"]
SCALAR_DOMAIN = [0, 1, 2, 0.5, 1.0, 2.0, -1.5, True, False, *NOT_DATES[:4], *list(DATES)[:4]]
NUMBER_BOUNDS = [0, 1, 1.5, 2, -1.5]
DATE_BOUNDS = list(DATES)
RANGE_OPS = ["gt", "gte", "lt", "lte"]
DOC_POOL = ["d0", "d1", "d2", "d3"]


class BruteError(Exception):
    pass


def leaves(meta: dict) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []

    def walk(name: str, value: object) -> None:
        if value is None:
            return
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{name}.{key}", child)
        elif isinstance(value, list):
            for child in value:
                walk(name, child)
        else:
            out.append((name, value))

    for key, value in meta.items():
        walk(key, value)
    return out


def is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def same(value: object, operand: object) -> bool:
    if isinstance(operand, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(operand, bool) and value == operand
    if isinstance(operand, str) or isinstance(value, str):
        return isinstance(value, str) and isinstance(operand, str) and value == operand
    return float(value) == float(operand)


def brute_check(spec: dict, table: list[list[tuple[str, object]]]) -> None:
    """The evaluate-time errors, from the whole table."""
    for key, value in spec.items():
        if key in ("and", "or"):
            for child in value:
                brute_check(child, table)
        elif key == "not":
            brute_check(value, table)
        elif key != "doc_id":
            held = [v for row in table for name, v in row if name == key]
            if not held:
                raise BruteError(f"unknown {key}")
            bounds = [b for op, b in value.items() if op in RANGE_OPS] if isinstance(value, dict) else []
            if bounds and isinstance(bounds[0], str) and not any(isinstance(v, str) and v in DATES for v in held):
                raise BruteError(f"no dates in {key}")
            if bounds and not isinstance(bounds[0], str) and not any(is_num(v) for v in held):
                raise BruteError(f"no numbers in {key}")


def brute_row(spec: dict, row: list[tuple[str, object]], doc_id: str) -> bool:
    results = []
    for key, value in spec.items():
        if key == "and":
            results.append(all(brute_row(c, row, doc_id) for c in value))
        elif key == "or":
            results.append(any(brute_row(c, row, doc_id) for c in value))
        elif key == "not":
            results.append(not brute_row(value, row, doc_id))
        else:
            values = [doc_id] if key == "doc_id" else [v for name, v in row if name == key]
            ops = value if isinstance(value, dict) else {"eq": value}
            for op, operand in ops.items():
                if op == "eq":
                    results.append(any(same(v, operand) for v in values))
                elif op == "in":
                    results.append(any(same(v, o) for v in values for o in operand))
                elif op == "exists":
                    results.append(bool(values) == operand)
            bounds = [(op, b) for op, b in ops.items() if op in RANGE_OPS]
            if bounds:
                if isinstance(bounds[0][1], str):
                    points = [DATES[v] for v in values if isinstance(v, str) and v in DATES]
                    bounds = [(op, DATES[b]) for op, b in bounds]
                else:
                    points = [float(v) for v in values if is_num(v)]
                test = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
                        "lte": lambda a, b: a <= b}
                results.append(any(all(test[op](p, b) for op, b in bounds) for p in points))
    return all(results)


def brute(spec: dict, metadata: list[dict], doc_ids: list[str]) -> list[bool]:
    if not metadata:
        return []
    table = [leaves(m) for m in metadata]
    brute_check(spec, table)
    return [brute_row(spec, row, d) for row, d in zip(table, doc_ids)]


SCALARS = st.sampled_from(SCALAR_DOMAIN + ["2015-03-01x", "2016-01-01 10:00", "2014-12-31T23:59:59.5"])
META_VALUES = st.one_of(st.none(), SCALARS, st.lists(st.one_of(st.none(), SCALARS), max_size=3),
                        st.lists(SCALARS, min_size=2, max_size=3))  # multi-valued: a range must hold for one value
NESTED = st.one_of(st.dictionaries(st.just("d"), META_VALUES, max_size=1),
                   st.lists(st.dictionaries(st.just("d"), META_VALUES, max_size=1), max_size=2))
META = st.fixed_dictionaries({}, optional={"a": META_VALUES, "b": META_VALUES, "c": NESTED, "c.d": META_VALUES})
# Filters are drawn as templates from one fixed strategy (building strategies per example is slow), then resolved
# against the table: the field "#k" is the k-th field some row has, the operand "@vk" the k-th value some row holds,
# "@nk"/"@dk" the k-th number/date; "zz" is a field no row has, so that the evaluate-time errors are compared too.
PICK = st.integers(0, 50)
OPERANDS = st.one_of(st.sampled_from(SCALAR_DOMAIN), PICK.map(lambda k: f"@v{k}"))
IDS = st.sampled_from(DOC_POOL)
NUMBERS = st.one_of(st.sampled_from(NUMBER_BOUNDS), PICK.map(lambda k: f"@n{k}"))
DATE_OPERANDS = st.one_of(st.sampled_from(DATE_BOUNDS), PICK.map(lambda k: f"@d{k}"))


def _condition(field: st.SearchStrategy, scalar: st.SearchStrategy, ranges: bool) -> st.SearchStrategy:
    ops = st.fixed_dictionaries({}, optional={"eq": scalar, "in": st.lists(scalar, min_size=1, max_size=3),
                                              "exists": st.booleans()})
    if ranges:
        bounds = st.one_of(st.just({}),
                           st.dictionaries(st.sampled_from(RANGE_OPS), NUMBERS, min_size=1),
                           st.dictionaries(st.sampled_from(RANGE_OPS), DATE_OPERANDS, min_size=1),
                           st.fixed_dictionaries({"gte": NUMBERS, "lte": NUMBERS}))
        ops = st.tuples(ops, bounds).map(lambda pair: {**pair[0], **pair[1]})
    return st.tuples(field, st.one_of(scalar, ops.filter(bool))).map(lambda fv: {fv[0]: fv[1]})


FIELD = st.one_of(PICK.map(lambda k: f"#{k}"), PICK.map(lambda k: f"#{k}"), st.just("zz"))
LEAF = st.one_of(_condition(FIELD, OPERANDS, True), _condition(FIELD, OPERANDS, True),
                 _condition(st.just("doc_id"), IDS, False))


def _filters(depth: int) -> st.SearchStrategy:
    if depth == 1:
        return LEAF
    inner = _filters(depth - 1)
    return st.one_of(
        LEAF,
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"and": fs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"or": fs}),
        inner.map(lambda f: {"not": f}),
        st.lists(st.one_of(LEAF, inner), min_size=2, max_size=3).map(lambda fs: {k: v for f in fs
                                                                                 for k, v in f.items()}),
    )


TEMPLATES = _filters(3)  # nested at most 3 levels


def resolve(template: dict, names: list[str], held: list) -> dict:
    numbers = [v for v in held if is_num(v)] or NUMBER_BOUNDS
    dates = [v for v in held if isinstance(v, str) and v in DATES] or DATE_BOUNDS
    pools = {"v": held or SCALAR_DOMAIN, "n": numbers, "d": dates}

    def operand(x):
        if isinstance(x, list):
            return [operand(v) for v in x]
        if isinstance(x, str) and x[:1] == "@":
            pool = pools[x[1]]
            return pool[int(x[2:]) % len(pool)]
        return x

    out: dict = {}
    for key, value in template.items():
        if key in ("and", "or"):
            out[key] = [resolve(c, names, held) for c in value]
        elif key == "not":
            out[key] = resolve(value, names, held)
        else:
            name = names[int(key[1:]) % len(names)] if key[:1] == "#" and names else "zz" if key[:1] == "#" else key
            out[name] = {op: operand(v) for op, v in value.items()} if isinstance(value, dict) else operand(value)
    return out


@FAST
@given(st.lists(META, max_size=10), st.data())
def test_evaluate_equals_a_brute_force_evaluator(metadata, data):
    doc_ids = data.draw(st.lists(st.sampled_from(DOC_POOL), min_size=len(metadata), max_size=len(metadata)))
    present = [leaves(m) for m in metadata]
    names = sorted({name for row in present for name, _ in row})
    spec = resolve(data.draw(TEMPLATES), names, [v for row in present for _, v in row])
    flt = parse_filter(spec)
    assert parse_filter_json(json.dumps(spec)).key == flt.key
    try:
        expected = brute(spec, metadata, doc_ids)
    except BruteError:
        expected = None
    fields = FieldIndex.build(metadata)
    ids = np.array(doc_ids, dtype=object) if data.draw(st.booleans()) else doc_ids
    if expected is None:
        with pytest.raises(FilterError):
            evaluate(flt, fields, ids)
    else:
        assert evaluate(flt, fields, ids).tolist() == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 4), st.lists(st.sampled_from([0, 1, 2.5, 3, 4, "2"]), max_size=3)),
                min_size=1, max_size=8),
       st.dictionaries(st.sampled_from(RANGE_OPS), st.sampled_from([0, 1, 2, 2.5, 3, 4]), min_size=1))
def test_range_bounds_hold_for_one_value_of_a_multi_valued_field(values, bounds):
    metadata = [{"x": v} for v in values]
    spec = {"x": bounds}
    try:
        expected = brute(spec, metadata, ["d"] * len(values))
    except BruteError:  # no row holds a number (or any value)
        with pytest.raises(FilterError, match="no document has the field|holds only text values"):
            evaluate(parse_filter(spec), FieldIndex.build(metadata), ["d"] * len(values))
        return
    assert evaluate(parse_filter(spec), FieldIndex.build(metadata), ["d"] * len(values)).tolist() == expected


@pytest.mark.parametrize("spec, part", [
    ({"x": {"in": ("a", "b")}}, "filter['x']['in']: needs a non-empty list of strings, numbers or booleans, got a "
                                "tuple"),
    ({"x": {"in": np.array(["a"])}}, "filter['x']['in']: needs a non-empty list"),
    ({"and": np.array([{"a": 1}])}, "filter['and']: needs a non-empty list of filters"),
    ({"x": ("a",)}, "filter['x']: a list is not a value"),
])
def test_python_values_that_are_not_json_are_named(spec, part):
    with pytest.raises(FilterError) as caught:
        parse_filter(spec)
    assert part in str(caught.value)


def test_numpy_scalars_are_numbers_and_booleans():
    fi = FieldIndex.build([{"n": np.int64(3), "b": np.bool_(True)}, {"n": np.float32(0.5)}])
    assert evaluate(parse_filter({"n": np.int64(3)}), fi, ["a", "b"]).tolist() == [True, False]
    assert evaluate(parse_filter({"n": {"lt": np.float64(1)}}), fi, ["a", "b"]).tolist() == [False, True]
    assert evaluate(parse_filter({"b": np.bool_(True)}), fi, ["a", "b"]).tolist() == [True, False]


def test_a_field_known_elsewhere_matches_as_absent():
    """A shard none of whose rows has a field the rest of the corpus holds: conditions on it match as on rows
    without it (nothing, or everything for `exists: false`); a field nobody holds is still refused."""
    fi = FieldIndex.build([{"lang": "en"}, {"lang": "de"}])
    ids = ["a", "b"]
    known = {"lang", "year"}
    assert evaluate(parse_filter({"year": 2020}), fi, ids, known).tolist() == [False, False]
    assert evaluate(parse_filter({"year": {"gte": 2000, "lt": 2030}}), fi, ids, known).tolist() == [False, False]
    assert evaluate(parse_filter({"year": {"exists": False}}), fi, ids, known).tolist() == [True, True]
    assert evaluate(parse_filter({"not": {"year": {"in": [1, 2]}}}), fi, ids, known).tolist() == [True, True]
    assert evaluate(parse_filter({"or": [{"year": 1}, {"lang": "de"}]}), fi, ids, known).tolist() == [False, True]
    with pytest.raises(FilterError, match="no document has the field 'yaer'"):
        evaluate(parse_filter({"yaer": 2020}), fi, ids, known)
