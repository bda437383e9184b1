"""Message templates: `{{ name }}` and `{{ name | default("text") }}` placeholders.

Rendering only looks names up in the facts given; there is no code in a template, so a
template cannot reach anything but the customer's facts and the action's params.

Templates are read by a plain left-to-right scan (no backtracking regular expression), so
reading one takes time in proportion to its length whatever it holds. Rendering substitutes
each placeholder once: a fact's value is data and is never read as a template, so a customer
whose name is `{{ profile.phone }}` is greeted with those braces, not with a phone number.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

_FIRST_PART = re.compile(r"[^\W\d]\w*")  # a name starts with a letter or _
_PART = re.compile(r"\w+")  # later parts may start with a digit: profile.address.2
_QUOTES = "\"'"
_DEFAULT = "default"


class TemplateError(ValueError):
    """A placeholder that cannot be read."""


@dataclass(frozen=True)
class _Placeholder:
    start: int  # offset of its `{{`
    end: int  # offset just past its `}}`
    name: str
    default: str | None


@functools.lru_cache(maxsize=1024)
def _scan(text: str) -> tuple[_Placeholder, ...]:
    """Every placeholder of `text`, in order; one pass, linear in the length of `text`.
    A playbook has few templates, rendered again and again: each is read once (cached)."""
    if text.count("{{") != text.count("}}"):
        raise TemplateError("unbalanced '{{' and '}}' in template")
    out: list[_Placeholder] = []
    pos = 0
    while (start := text.find("{{", pos)) >= 0:
        close = text.find("}}", start + 2)
        if close < 0:
            raise TemplateError("unbalanced '{{' and '}}' in template")
        end = close + 2
        name, default = _read_body(text[start + 2 : close], text[start:end])
        out.append(_Placeholder(start, end, name, default))
        pos = end
    return tuple(out)


def _read_body(body: str, raw: str) -> tuple[str, str | None]:
    """`name` or `name | default("text")` (either quote) -> (name, default)."""
    name_part, bar, filter_part = body.partition("|")
    name = name_part.strip()
    parts = name.split(".")
    if not _FIRST_PART.fullmatch(parts[0]) or not all(_PART.fullmatch(p) for p in parts[1:]):
        raise TemplateError(f"cannot read placeholder '{_shorten(raw)}'")
    if not bar:
        return name, None
    call = filter_part.strip()
    if not call.startswith(_DEFAULT):
        raise TemplateError(f"cannot read placeholder '{_shorten(raw)}'")
    call = call[len(_DEFAULT) :].lstrip()
    if not (call.startswith("(") and call.endswith(")")):
        raise TemplateError(f"cannot read placeholder '{_shorten(raw)}'")
    quoted = call[1:-1].strip()
    if len(quoted) < 2 or quoted[0] not in _QUOTES or quoted[-1] != quoted[0] \
            or "\n" in quoted:
        raise TemplateError(f"cannot read placeholder '{_shorten(raw)}'")
    return name, quoted[1:-1]


def _shorten(raw: str, keep: int = 60) -> str:
    """A placeholder as quoted in an error: a very long one is cut in the middle."""
    if len(raw) <= 2 * keep:
        return raw
    return f"{raw[:keep]} … {raw[-keep:]}"


def _parse(text: str) -> list[tuple[str, str, str | None]]:
    """(placeholder text, name, default) for each placeholder."""
    return [(text[p.start : p.end], p.name, p.default) for p in _scan(text)]


def placeholders(text: str) -> list[str]:
    """The names a template uses, in order; TemplateError if one cannot be read."""
    return [p.name for p in _scan(text)]


def format_value(value: object) -> str:
    """How a fact reads in a message: 12.5 not 12.500000001, dates as YYYY-MM-DD."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float | Decimal):
        rounded = round(float(value), 2)
        return str(int(rounded)) if rounded == int(rounded) else f"{rounded:.2f}".rstrip("0")
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return "、".join(sorted(format_value(v) for v in value))
    if isinstance(value, list | tuple):
        return "、".join(format_value(v) for v in value)
    return str(value)


def render(text: str, lookup: Callable[[str], object]) -> str:
    """Replace each placeholder by its fact; a missing fact renders as its default or ''.

    The template is read once and the pieces joined: a value is inserted as it is and never
    looked at again, so braces inside a customer's data stay literal text.
    """
    return render_checked(text, lookup)[0]


def render_checked(text: str, lookup: Callable[[str], object]) -> tuple[str, list[str]]:
    """The rendered text (as `render`) and the placeholders without a default whose fact
    is missing (None, or blank text), in one pass: a message that needs them would read
    wrong, so it is held with this list as the reason. (An empty collection, such as no
    tags, is a value.)"""
    pieces: list[str] = []
    absent: list[str] = []
    pos = 0
    for p in _scan(text):
        value = lookup(p.name)
        if p.default is None and (value is None or
                                  (isinstance(value, str) and not value.strip())):
            absent.append(p.name)
        shown = format_value(value)
        if not shown and p.default is not None:
            shown = p.default
        pieces += (text[pos : p.start], shown)
        pos = p.end
    pieces.append(text[pos:])
    return "".join(pieces), absent

