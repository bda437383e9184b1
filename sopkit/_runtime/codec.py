"""Typed values as plain JSON: the stored state's value format (docs/live.md#stored-state).

JSON has no decimals, dates or sets, and sopkit's facts need all three exactly: a Decimal
keeps its exponent (1.20 stays 1.20), an int stays an int, a date stays a date. So a value is
written as itself when JSON holds it exactly (None, bool, int, str, finite float, lists, and
dicts with string keys), and otherwise as an object with one tagged key:

| value | written as |
| --- | --- |
| `Decimal("1.20")` | `{"$dec": "1.20"}` |
| `datetime.date(2024, 5, 1)` | `{"$date": "2024-05-01"}` |
| `frozenset({"a", "b"})` or a set | `{"$set": ["a", "b"]}` (sorted by their JSON text) |
| a tuple | `{"$tuple": [...]}` |
| a dict with a key starting with `$` | `{"$map": {...}}` |

Reading never runs code: `decode` only builds these types. Anything else is a `StateError`.
Keys are written sorted, so the same value always gives the same bytes; `dumps` lets orjson
write a value only where it is sure to give the standard library's bytes, so the bytes never
depend on which encoder wrote them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from sopkit import _json
from sopkit._errors import SopkitError


class StateError(SopkitError):
    """Stored state that cannot be read (or a value that cannot be stored)."""

    exit_code = 2


_PLAIN = frozenset({str, int, bool, type(None)})


def encode(value: Any) -> Any:
    """A typed value as JSON-compatible data (see the module's table)."""
    kind = type(value)  # the common cases first, by exact type (subclasses go the long way)
    if kind in _PLAIN:
        return value
    if kind is dict:
        out = {key: item if type(item) in _PLAIN else encode(item)
               for key, item in value.items()}
        try:
            joined = "".join(out)  # every key a str, and one test for a "$" in any of them
        except TypeError:
            bad = next(key for key in out if not isinstance(key, str))
            raise StateError(f"cannot store a mapping with the key {bad!r}") from None
        if "$" in joined and any(key.startswith("$") for key in out):
            return {"$map": out}
        return out
    if kind is list:
        return [item if type(item) in _PLAIN else encode(item) for item in value]
    if kind is Decimal:
        return {"$dec": str(value)}
    return _encode_other(value)


def _encode_other(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StateError(f"cannot store the number {value!r}")
        return value
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, dt.datetime):
        raise StateError(f"cannot store a datetime ({value!r}); timestamps are ints")
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, frozenset | set):
        items = [encode(v) for v in value]
        items.sort(key=lambda v: json.dumps(v, sort_keys=True, ensure_ascii=False))
        return {"$set": items}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StateError(f"cannot store a mapping with the key {key!r}")
            out[key] = encode(item)
        if any(key.startswith("$") for key in out):
            return {"$map": out}
        return out
    raise StateError(f"cannot store a value of type {type(value).__name__}")


def decode(data: Any) -> Any:
    """What `encode` wrote, as the typed value again."""
    if data is None or isinstance(data, bool | str | int | float):
        return data
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict):
        if len(data) == 1:
            (tag, inner), = data.items()
            if tag.startswith("$"):
                return _tagged(tag, inner)
        return {key: decode(item) for key, item in data.items()}
    raise StateError(f"unreadable stored value {data!r}")


def _tagged(tag: str, inner: Any) -> Any:
    try:
        if tag == "$dec" and isinstance(inner, str):
            return Decimal(inner)
        if tag == "$date" and isinstance(inner, str):
            return dt.date.fromisoformat(inner)
        if tag == "$set" and isinstance(inner, list):
            return frozenset(decode(v) for v in inner)
        if tag == "$tuple" and isinstance(inner, list):
            return tuple(decode(v) for v in inner)
        if tag == "$map" and isinstance(inner, dict):
            return {key: decode(item) for key, item in inner.items()}
    except (InvalidOperation, ValueError, TypeError):
        pass
    raise StateError(f"unreadable stored value {{{tag!r}: {inner!r}}}")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                            allow_nan=False)  # made once: json.dumps with options makes one


def dumps(value: Any) -> bytes:
    """`encode` as compact UTF-8 JSON text (keys in a stable order).

    orjson writes the value directly when `_direct` finds only what it writes exactly as
    the standard library would (the same bytes); anything else, and whatever orjson
    refuses (an int beyond 64 bits, a non-str key, a lone surrogate, deep nesting), takes
    `encode` and the standard library's encoder, which give the answer or the error.
    """
    return dumps_checked(value, value)


def dumps_checked(value: Any, check: Any) -> bytes:
    """`dumps(value)` for a caller that knows which parts of `value` could be written
    otherwise by orjson: `check` holds them (or is `value` itself). Everything in `value`
    outside `check` must be a dict with str keys none of which starts with "$", a list, or
    an int, a str, a bool or None."""
    if _direct(check):
        try:
            return orjson.dumps(value, default=_tagged_leaf, option=_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError
            pass
    return _ENCODER.encode(encode(value)).encode()


# dates and subclasses reach `default` (or are refused) rather than being written natively
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | \
    orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
# written by orjson as themselves, or (Decimal, date) by `_tagged_leaf` (exact types only)
_LEAVES: frozenset[type] = frozenset({str, int, bool, type(None), Decimal, dt.date})


def _direct(value: Any) -> bool:
    """Whether orjson writes `value` (with `_tagged_leaf`) as `encode` and the standard
    library would: dicts with str keys none of which starts with "$", lists, the exact
    `_LEAVES` types, and floats that are finite and not tiny (tuples, sets, subclasses and
    the rest take the exact path)."""
    return _json.writes_alike(value, _LEAVES, tuples=False, dollar_keys=False)


def _tagged_leaf(value: Any) -> dict[str, str]:
    """orjson's `default`: a Decimal or a date, as `encode` writes it (`_direct` let no
    other type through)."""
    if type(value) is Decimal:
        return {"$dec": str(value)}
    return {"$date": value.isoformat()}


def loads(blob: bytes | str, what: str = "stored state") -> Any:
    """What `dumps` wrote; StateError naming `what` when it is not that."""
    try:
        data = _json.loads(blob)  # json.loads, exactly (orjson where it agrees)
    except (ValueError, RecursionError) as exc:
        raise StateError(f"{what}: not sopkit's stored state ({exc})") from None
    try:
        return decode(data)
    except RecursionError:
        raise StateError(f"{what}: nested too deeply") from None
    except StateError as exc:
        raise StateError(f"{what}: {exc}") from None
