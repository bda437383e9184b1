"""Issues 16/17: outbox messages, receipts and jsonl lines are written by orjson where it
writes the standard library's bytes, and exactly as before everywhere else."""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopkit import _json

EXAMPLES = int(os.environ.get("SOPKIT_FUZZ_EXAMPLES", "300"))


class _Level(enum.IntEnum):
    LOW = 1


class _Name(str):
    pass


def _outcome(write: Any, value: Any, **options: Any) -> Any:
    """The text written, or the type of the error raised."""
    try:
        return write(value, **options)
    except Exception as exc:  # the error's type is what is compared
        return type(exc)


def _reference(value: Any, **options: Any) -> str:
    """The writer as it was: the standard library's compact encoder, non-ASCII as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), **options)


_keys = (st.text(max_size=3) | st.sampled_from(["$dec", "é", "\U0001f600", "\uffff"])
         | st.text(st.characters(categories=["Cs", "Ll", "Cc"]), max_size=2))
_scalars = (st.none() | st.booleans() | st.integers()
            | st.integers(min_value=2 ** 63 - 2, max_value=2 ** 64 + 2).map(
                lambda n: -n if n % 2 else n)
            | st.floats() | st.floats(min_value=-1e-3, max_value=1e-3)
            | st.sampled_from([1e-4, -1e-4, 9.999999999999999e-05, 1e16, 1e22, 5e-324, -0.0])
            | st.text(max_size=6)
            | st.text(st.characters(categories=["Cs", "Cc", "Lo", "Zl"]), max_size=3)
            | st.sampled_from([_Level.LOW, _Name("n"), Decimal("1.20"), dt.date(2024, 5, 1)]))
_values = st.recursive(
    _scalars,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(_keys, inner, max_size=4)
                   | st.dictionaries(st.integers() | st.none() | st.just(_Name("k")), inner,
                                     min_size=1, max_size=2)
                   | st.dictionaries(_keys, inner, max_size=2).map(OrderedDict)
                   | st.tuples(inner, inner)),
    max_leaves=12)


@settings(max_examples=EXAMPLES)
@given(_values, st.booleans())
def test_every_value_is_written_as_the_standard_library_writes_it(value: Any,
                                                                  sort_keys: bool) -> None:
    """Any value gives the standard library's compact text, or the same error."""
    assert _outcome(_json.dumps, value, sort_keys=sort_keys) == \
        _outcome(_reference, value, sort_keys=sort_keys)


@settings(max_examples=EXAMPLES)
@given(_values)
def test_a_default_writes_what_orjson_cannot_as_before(value: Any) -> None:
    """With `default=str` (the jsonl channel's lines) the bytes are the same as before."""
    expected = _outcome(lambda v: _reference(v, default=str).encode(), value)
    assert _outcome(_json.dumpb, value, default=str) == expected


def test_a_value_that_holds_itself_is_refused_as_before() -> None:
    """A cycle is the standard library's ValueError, not a hang."""
    looped: dict[str, Any] = {"a": [1]}
    looped["a"].append(looped)
    with pytest.raises(ValueError, match="Circular reference"):
        _json.dumps(looped)


def test_nesting_deeper_than_orjson_goes_is_written_as_before() -> None:
    """300 levels (orjson stops at 255) are written whole, as the standard library does."""
    deep: Any = "x"
    for level in range(300):
        deep = [deep] if level % 2 else {"k": deep}
    assert _json.dumps(deep) == _reference(deep)
