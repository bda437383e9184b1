"""The one-pass JSON Lines reader reads every line as the line-by-line reader does."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sopkit._io import BadRecord, Record, _decoded, _jsonl_fast, _jsonl_records, read_records

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)
_objects = st.dictionaries(st.text(max_size=5), _json_values, max_size=4)
_pads = st.sampled_from(["", " ", "\t", "\r", "\u3000", "\x0b", "\ufeff"])
_lines = st.one_of(
    st.builds(lambda o, a, b: (a + json.dumps(o, ensure_ascii=False) + b).encode(),
              _objects, _pads, _pads),
    st.builds(lambda v: json.dumps(v).encode(), _json_values),  # not an object
    st.sampled_from([b"", b"   ", b"{", b'{"a": NaN}', b'{"a": 1e400}', b'{"a": "\\ud800"}',
                     b'{"n": 18446744073709551616}', b"\xff\xfe{}", b'{"a": 1}{"b": 2}',
                     b"[" * 40 + b"]" * 40, b'{"d": ' + b"[" * 40 + b"]" * 40 + b"}"]),
    st.binary(max_size=12))


def _slow(lines: list[bytes]) -> list[Record | BadRecord]:
    bad: list[BadRecord] = []
    out = list(_jsonl_records(_decoded(iter(lines), bad, lambda: None), bad))
    return [*out, *bad]


def _fast(lines: list[bytes]) -> list[Record | BadRecord]:
    bad: list[BadRecord] = []
    out = list(_jsonl_fast(iter(lines), bad, lambda: None))
    return [*out, *bad]


@settings(max_examples=300, deadline=None)
@given(st.lists(_lines, max_size=6))
def test_fast_and_line_by_line_readers_agree(lines: list[bytes]) -> None:
    """Valid, padded, invalid, deep, huge, non-UTF-8 and non-object lines alike."""
    raw = [line + b"\n" for line in lines]
    assert _fast(raw) == _slow(raw)


def test_a_file_reads_the_same_both_ways(tmp_path: Path) -> None:
    """read_records on a file mixing good and bad lines gives the records in file order."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\n  {"b": 2}  \n[1]\n\n{"c": 3}')
    got = [(type(r).__name__, r.line) for r in read_records(path)]
    assert got == [("Record", 1), ("BadRecord", 2), ("Record", 3), ("BadRecord", 4),
                   ("Record", 6)]
