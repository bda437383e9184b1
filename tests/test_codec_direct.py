"""The stored state's writer gives the documented format's exact bytes, or its refusal."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import uuid
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopkit._runtime.codec import StateError, dumps, encode, loads


class _Level(enum.IntEnum):
    LOW = 1


class _Name(str):
    pass


def _reference_dumps(value: Any) -> bytes:
    """The writer as it was: `encode`'s tagged data (the documented table, which
    tests/test_codec.py checks) through the standard library's encoder."""
    return json.dumps(encode(value), ensure_ascii=False, separators=(",", ":"),
                      sort_keys=True, allow_nan=False).encode()


def _outcome(write: Any, value: Any) -> Any:
    """The bytes written, or the type of the error raised."""
    try:
        return write(value)
    except Exception as exc:  # the error's type is what is compared
        return type(exc)


_keys = (st.text(max_size=3) | st.sampled_from(["$dec", "$x", "a$", "$"])
         | st.text(st.characters(categories=["Cs", "Ll"]), max_size=2))
_scalars = (st.none() | st.booleans() | st.integers()
            | st.integers(min_value=2 ** 63 - 2, max_value=2 ** 64 + 2).map(
                lambda n: -n if n % 2 else n)
            | st.floats() | st.floats(min_value=-1e-3, max_value=1e-3)
            | st.sampled_from([1e-4, -1e-4, 9.999999999999999e-05, 1e16, 1e22, 5e-324, -0.0])
            | st.decimals(places=None) | st.dates() | st.datetimes()
            | st.text(max_size=6)
            | st.text(st.characters(categories=["Cs", "Cc", "Lo"]), max_size=3)
            | st.sampled_from([_Level.LOW, _Name("n"), uuid.UUID(int=1), object()]))
_values = st.recursive(
    _scalars,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(_keys, inner, max_size=4)
                   | st.dictionaries(st.integers() | st.just(_Name("k")), inner, min_size=1,
                                     max_size=2)
                   | st.dictionaries(_keys, inner, max_size=2).map(OrderedDict)
                   | st.frozensets(st.text(max_size=3) | st.integers()
                                   | st.decimals(allow_nan=False, places=2), max_size=4)
                   | st.sets(st.integers(), max_size=3)
                   | st.tuples(inner, inner)),
    max_leaves=12)


@settings(max_examples=300)
@given(_values)
def test_every_value_is_written_as_the_documented_format_says(value: Any) -> None:
    """Any value gives the table's bytes (keys sorted), or is refused just as before."""
    assert _outcome(dumps, value) == _outcome(_reference_dumps, value)


@given(st.recursive(
    st.integers() | st.integers(min_value=2 ** 63, max_value=2 ** 70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.floats(-1e-4, 1e-4)
    | st.decimals(allow_nan=False, places=None) | st.dates() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=3) | st.sampled_from(["$dec", "$x", "a$"]), inner,
                      max_size=4)
    | st.tuples(inner) | st.frozensets(st.integers() | st.text(max_size=2), max_size=3),
    max_leaves=10))
def test_big_ints_tiny_floats_and_dollar_keys_read_back_exactly(value: Any) -> None:
    """Ints beyond 64 bits, floats below 1e-4 and '$' keys come back equal and as written
    (writing what was read gives the same bytes: the same types, Decimal exponents kept)."""
    blob = dumps(value)
    assert loads(blob) == value
    assert dumps(loads(blob)) == blob


@pytest.mark.parametrize("value", [float("nan"), [1, float("inf")], {"a": [-math.inf]},
                                   dt.datetime(2024, 5, 1), {1: "a"}, [uuid.UUID(int=3)],
                                   (object(),)])
def test_what_json_cannot_hold_is_still_refused(value: Any) -> None:
    """A non-finite float, a datetime, a non-str key or an unknown object is a StateError."""
    with pytest.raises(StateError):
        dumps(value)


def test_an_int_enum_is_stored_as_its_int() -> None:
    """An IntEnum member is written as the plain int it is, as before."""
    assert dumps({"a": [_Level.LOW]}) == b'{"a":[1]}'


def test_a_customer_state_is_written_with_the_same_bytes_as_before() -> None:
    """A typical customer's state: sorted keys, tagged Decimals and dates, compact."""
    value = {"v": 3, "id": "c1", "profile": {"birthday": dt.date(1965, 8, 7), "city": "北京"},
             "metrics": {"spend": {"stamps": [855541020], "total": Decimal("19.97"),
                                   "values": [Decimal("19.97")]}, "n": 0, "d": None},
             "scores": {"risk": 30.0}, "event_ids": {"$e": 1}}
    assert dumps(value) == (
        '{"event_ids":{"$map":{"$e":1}},"id":"c1","metrics":{"d":null,"n":0,"spend":'
        '{"stamps":[855541020],"total":{"$dec":"19.97"},"values":[{"$dec":"19.97"}]}},'
        '"profile":{"birthday":{"$date":"1965-08-07"},"city":"北京"},"scores":{"risk":30.0},'
        '"v":3}').encode()
