"""Issue 17: records are decoded with orjson where it agrees with `json.loads`, and exactly as
before everywhere else: the same values, the same quarantine reasons (real files, the real
reader)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopkit import _json
from sopkit._io import BadRecord, Record, read_records

EXAMPLES = int(os.environ.get("SOPKIT_FUZZ_EXAMPLES", "300"))
DIGITS_5000 = "9" * 5000


def _read(tmp_path: Path, *lines: str) -> list[Record | BadRecord]:
    path = tmp_path / "events.jsonl"
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass"))
    return sorted(read_records(path), key=lambda item: item.line)


def _value(tmp_path: Path, text: str) -> Any:
    (item,) = _read(tmp_path, '{"v":' + text + "}")
    assert isinstance(item, Record), item
    return item.data["v"]


def _reason(tmp_path: Path, line: str) -> str:
    (item,) = _read(tmp_path, line)
    assert isinstance(item, BadRecord), item
    return item.reason


def test_integers_beyond_64_bits_stay_exact_integers(tmp_path: Path) -> None:
    """An integer orjson would widen to a float is read as the exact integer json.loads gives."""
    for number in (2**64, 2**64 - 1, 2**63, -(2**63) - 1, -(2**63), 10**30, -(10**40)):
        value = _value(tmp_path, str(number))
        assert type(value) is int and value == number


def test_large_float_literals_stay_floats(tmp_path: Path) -> None:
    """A float literal as large as a widened integer is still the float json.loads reads."""
    for text in ("9.3e18", "-1e19", "18446744073709551616.0", "1.7976931348623157e308"):
        value = _value(tmp_path, text)
        assert type(value) is float and value == float(text)


def test_numbers_orjson_refuses_are_read_as_before(tmp_path: Path) -> None:
    """1e400 is infinity and 1e-400 zero, as json.loads reads them; -0 an int, -0.0 a float."""
    assert _value(tmp_path, "1e400") == math.inf
    assert _value(tmp_path, "-1e400") == -math.inf
    assert _value(tmp_path, "1e-400") == 0.0
    assert type(_value(tmp_path, "-0")) is int
    assert math.copysign(1.0, _value(tmp_path, "-0.0")) == -1.0


def test_lone_surrogates_are_read_as_before(tmp_path: Path) -> None:
    """An escaped lone surrogate, which orjson refuses, is kept as json.loads keeps it."""
    assert _value(tmp_path, '"\\ud800"') == "\ud800"
    assert _value(tmp_path, '"a\\udc00b"') == "a\udc00b"
    assert _value(tmp_path, '"\\ud83d\\ude00"') == "\U0001f600"


def test_duplicate_keys_keep_the_last_value_in_the_first_place(tmp_path: Path) -> None:
    """A repeated key keeps its last value, at the place of its first appearance."""
    (item,) = _read(tmp_path, '{"a":1,"b":{"x":1,"x":[2]},"a":3}')
    assert isinstance(item, Record)
    assert list(item.data.items()) == [("a", 3), ("b", {"x": [2]})]


def test_quarantine_reasons_are_unchanged(tmp_path: Path) -> None:
    """Every line orjson refuses is quarantined with the reason the standard decoder gives."""
    expected = {
        '{"a":NaN}': "not valid JSON: NaN is not a JSON number",
        '{"a":-Infinity}': "not valid JSON: -Infinity is not a JSON number",
        '{"a":[Infinity]}': "not valid JSON: Infinity is not a JSON number",
        '\ufeff{"a":1}': "not valid JSON: Expecting value at column 1",  # a BOM, mid-file too
        '{"a":"x\x01"}': "not valid JSON: Invalid control character at at column 8",
        '{"a":1} {"b":2}': "not valid JSON: Extra data at column 9",
        '{"a":1,}': "not valid JSON: Expecting property name enclosed in double "
                    "quotes at column 8",
        '{"a":' + DIGITS_5000 + "}": "number too large: an integer of more than 4,300 digits",
        "[1, 2]": "not a JSON object",
        '"text"': "not a JSON object",
        '{"a":' + "[" * 40 + "]" * 40 + "}":
            "nesting too deep: lists or objects more than 32 levels deep",
        '{"a":' + "[" * 500 + "]" * 500 + "}":
            "nesting too deep: lists or objects more than 32 levels deep",
        "[" * 100_000 + "]" * 100_000:
            "nesting too deep: lists or objects more than 32 levels deep",
    }
    for line, reason in expected.items():
        assert _reason(tmp_path, line) == reason, line[:40]


def test_a_file_mixing_good_and_bad_lines_keeps_its_order(tmp_path: Path) -> None:
    """Good and bad lines come out with their line numbers, each as json.loads would have it."""
    items = _read(tmp_path, '{"n":1}', '{"n":NaN}', '{"n":' + str(2**70) + "}",
                  '{"n":"\\ud800"}', "", '{"n":1.5}')
    assert [(type(i).__name__, i.line) for i in items] == [
        ("Record", 1), ("BadRecord", 2), ("Record", 3), ("Record", 4), ("Record", 6)]
    assert [i.data["n"] for i in items if isinstance(i, Record)] == [1, 2**70, "\ud800", 1.5]


def _outcome(decode: Any, text: str | bytes) -> tuple[str, str]:
    try:
        return "value", repr(decode(text))  # repr tells 1 from 1.0, -0.0 from 0.0, key order
    except RecursionError:
        return "error", "RecursionError"
    except ValueError as exc:
        return "error", f"{type(exc).__name__}: {exc}"


_SCALARS = (st.none() | st.booleans()
            | st.integers() | st.integers(min_value=2**62, max_value=2**66)
            | st.integers(min_value=-(2**66), max_value=-(2**62))
            | st.floats(allow_nan=True, allow_infinity=True)
            | st.text(st.characters(codec=None, exclude_categories=()), max_size=8))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_VALUES, st.booleans(), st.booleans())
def test_fast_decoding_equals_json_loads(value: Any, ascii_only: bool, as_bytes: bool) -> None:
    """On any JSON document json.dumps writes (NaN, surrogates and huge integers included),
    the fast decoder gives exactly json.loads's value or error."""
    text: str | bytes = json.dumps(value, ensure_ascii=ascii_only)
    if as_bytes:
        text = text.encode("utf-8", "surrogatepass")
    assert _outcome(_json.loads, text) == _outcome(json.loads, text)


_TOKENS = st.sampled_from([
    "{", "}", "[", "]", ",", ":", " ", "\t", "\n", "\x0b", '"', '"a"', "\\", "\\u", "d800",
    "\\ud800", "0", "-", "1", "9" * 20, ".", "e", "E", "+", "400", "true", "null", "NaN",
    "Infinity", "\ufeff", "\x00", "é", "\U0001f600"])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TOKENS, max_size=16).map("".join), st.booleans())
def test_fast_decoding_equals_json_loads_on_near_json(text: str, as_bytes: bool) -> None:
    """On text made of JSON's pieces, valid or not, the fast decoder gives exactly json.loads's
    value or error."""
    data: str | bytes = text.encode("utf-8") if as_bytes else text
    assert _outcome(_json.loads, data) == _outcome(json.loads, data)
