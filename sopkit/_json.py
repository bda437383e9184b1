"""`json.loads` and compact `json.dumps`, exactly, at orjson's speed where orjson is sure
to agree.

orjson decodes a typical event line about four times faster than the standard library, but
it does not read JSON quite the same way: it refuses NaN and Infinity, lone surrogates such
as "\\ud800", a number too large for a double (1e400), a byte-order mark, control characters
in strings and input that is not UTF-8, and it reads an integer beyond 64 bits as a float.
`loads` therefore takes orjson's answer only when orjson succeeded and nothing in the answer
could have come from a widened integer (no float of magnitude 2**63 or more) or from nesting
deep enough for the standard library to run out of recursion; for every other text it asks
the standard library, so the value, or the error, is exactly what `json.loads` gives.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import orjson

_BIG = 2.0 ** 63  # orjson widens an integer outside [-2**63, 2**64) to a float this large
_DEEP = 100  # deeper containers: the standard library decides (its RecursionError included)
_MISS = object()
UNKNOWN = _MISS  # what loads_known returns when it cannot tell


def loads(text: str | bytes, decoder: json.JSONDecoder | None = None) -> Any:
    """`json.loads(text)`, or `decoder.decode(text)` when a decoder is given (for text only;
    a decoder that differs from the default only in refusing NaN and Infinity, whose
    hooks orjson never needs, since it refuses those itself)."""
    return loads_within(text, _DEEP, decoder)[0]


def loads_within(text: str | bytes, depth: int,
                 decoder: json.JSONDecoder | None = None) -> tuple[Any, bool]:
    """`loads(text, decoder)`, and whether the value is known to nest lists and objects no
    more than `depth` levels deep (the outermost is level 1; False: not checked, as for
    every value the standard library decoded)."""
    value = _fast(text, min(depth, _DEEP))
    if value is not _MISS:
        return value, True
    if decoder is not None and isinstance(text, str):
        return decoder.decode(text), False
    return json.loads(text), False


def loads_known(data: bytes, depth: int) -> Any:
    """The value of a UTF-8 JSON text given as bytes, when orjson reads it as the standard
    library would read the decoded text and it nests no more than `depth` levels deep;
    else `UNKNOWN` (invalid, not UTF-8, or a case only the standard library decides)."""
    return _fast(data, min(depth, _DEEP))


def _fast(text: str | bytes, depth: int) -> Any:
    """orjson's value of `text` when it equals the standard library's and nests no more
    than `depth` levels deep; else `_MISS`."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _MISS
    return value if _plain(value, depth) else _MISS


def _plain(value: Any, depth: int) -> bool:
    """Whether a decoded value holds no float of magnitude 2**63 or more (one may be an
    integer orjson widened) and nests no more than `depth` levels deep (checked without
    recursion; a flat object costs one type test a field)."""
    kind = type(value)
    if kind is float:
        return bool(-_BIG < value < _BIG)
    if kind is dict:
        stack: list[tuple[Any, int]] = [(value.values(), 1)]
    elif kind is list:
        stack = [(value, 1)]
    else:
        return True
    while stack:
        items, level = stack.pop()
        for item in items:
            kind = type(item)
            if kind is str or kind is int:
                continue
            if kind is float:
                if not -_BIG < item < _BIG:
                    return False
            elif kind is dict or kind is list:
                if level >= depth:
                    return False
                stack.append((item.values() if kind is dict else item, level + 1))
    return True


# Writing. orjson writes compact UTF-8 JSON like the standard library's compact encoder with
# `ensure_ascii=False`, but not for every value: it spells floats below 1e-4 otherwise
# (0.00001, not 1e-05), writes NaN and Infinity as null, refuses integers beyond 64 bits,
# non-str keys, lone surrogates and deep nesting, and writes subclasses (an IntEnum, a str
# subclass) in its own way. `writes_alike` lets only what it writes the same way through.
PLAIN: frozenset[type] = frozenset({str, int, bool, type(None)})
_TINY = 1e-4
_INF = math.inf
_WRITE_DEPTH = 200  # orjson refuses more than 255 levels; past this, the standard library


def writes_alike(value: Any, leaves: frozenset[type] = PLAIN, *, tuples: bool = True,
                 dollar_keys: bool = True) -> bool:
    """Whether orjson writes `value` as the standard library's compact encoder would:
    dicts with str keys (none starting with "$" unless `dollar_keys`), lists (and tuples,
    with `tuples`), values whose exact type is in `leaves`, and floats that are finite and
    not tiny. Walked depth first, giving up deeper than orjson goes (a value that holds
    itself is left to the standard library, which names the cycle)."""
    try:
        return _alike([value], leaves, tuples, dollar_keys, 0)
    except RecursionError:  # called near the interpreter's limit: the standard library
        return False


def _alike(item: Any, leaves: frozenset[type], tuples: bool, dollar_keys: bool,
           level: int) -> bool:
    """`writes_alike` of a dict, list or tuple `level` levels down (recursive: cheaper per
    container than a stack of pending ones)."""
    if type(item) is dict:
        try:
            joined = "".join(item)
        except TypeError:  # a key that is not a str
            return False
        if not dollar_keys and "$" in joined and any(key[:1] == "$" for key in item):
            return False
        items = item.values()
    else:
        items = item
    for inner in items:
        kind = type(inner)
        if kind in leaves:
            continue
        if kind is dict or kind is list or (kind is tuple and tuples):
            if level >= _WRITE_DEPTH or not _alike(inner, leaves, tuples, dollar_keys,
                                                   level + 1):
                return False
        elif kind is float:
            if not (_TINY <= abs(inner) < _INF or inner == 0.0):
                return False
        else:
            return False
    return True


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_COMPACT_SORTED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def dumps(value: Any, *, sort_keys: bool = False,
          default: Callable[[Any], Any] | None = None) -> str:
    """`json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys,
    default=default)`: the same text or the same error, by orjson where `writes_alike`
    says it agrees."""
    fast = _written(value, sort_keys)
    if fast is not None:
        return fast.decode()
    if default is None:
        return (_COMPACT_SORTED if sort_keys else _COMPACT).encode(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys,
                      default=default)


def dumpb(value: Any, *, sort_keys: bool = False,
          default: Callable[[Any], Any] | None = None) -> bytes:
    """`dumps(...)` as UTF-8, without decoding orjson's bytes and encoding them again."""
    fast = _written(value, sort_keys)
    if fast is not None:
        return fast
    return dumps(value, sort_keys=sort_keys, default=default).encode()


def _written(value: Any, sort_keys: bool) -> bytes | None:
    """orjson's bytes for `value` when they are the standard library's, else None."""
    if writes_alike(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
        except TypeError:  # orjson.JSONEncodeError: a lone surrogate, a huge integer
            pass
    return None
