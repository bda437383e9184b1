"""The stored state's value format: typed values round-trip exactly through JSON."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sopkit._runtime.codec import StateError, decode, dumps, encode, loads

_scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=8)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.decimals(allow_nan=False, allow_infinity=False, places=None)
            | st.dates())
_values = st.recursive(
    _scalars,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=4), inner, max_size=4)
                   | st.frozensets(st.text(max_size=4) | st.integers(), max_size=4)
                   | st.tuples(inner, inner)),
    max_leaves=12)


def _same(a: object, b: object) -> bool:
    """Equal with the same types all the way down (1 is not 1.0, Decimal keeps its exponent)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()  # type: ignore[attr-defined]  # b is a Decimal too
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]  # same type as a
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)  # type: ignore[attr-defined,index]  # b is a dict too
    return a == b


@given(_values)
def test_every_value_round_trips_exactly(value: object) -> None:
    """Whatever a customer's state holds comes back with the same value and type."""
    assert _same(loads(dumps(value)), value)


def test_decimal_keeps_its_exponent_and_dates_stay_dates() -> None:
    """1.20 is stored as 1.20 (not 1.2), and a date is readable text in the JSON."""
    blob = dumps({"amount": Decimal("1.20"), "birthday": dt.date(1990, 5, 10), "n": 3})
    assert json.loads(blob) == {"amount": {"$dec": "1.20"}, "birthday": {"$date": "1990-05-10"},
                                "n": 3}


def test_a_dict_whose_key_looks_like_a_tag_stays_a_dict() -> None:
    """Customer data with a key such as '$dec' is never mistaken for a tagged value."""
    value = {"$dec": "not a number"}
    assert loads(dumps(value)) == value


@pytest.mark.parametrize("blob", [b"\x80\x04pickle", b'{"$dec": "abc"}', b'{"$date": 5}',
                                  b"[" * 100_000])
def test_unreadable_state_is_a_clear_error(blob: bytes) -> None:
    """Bytes that are not sopkit's state (an old pickle, a bad tag) give a StateError."""
    with pytest.raises(StateError, match="customer c1"):
        loads(blob, "customer c1")


def test_values_json_cannot_hold_are_refused() -> None:
    """An infinite float or an unknown object is refused when stored, not written wrongly."""
    with pytest.raises(StateError):
        encode(float("inf"))
    with pytest.raises(StateError):
        encode(object())
    assert decode(encode([1, "a"])) == [1, "a"]
