"""Message templates: `{{ name }}` and `{{ name | default("text") }}` placeholders.

Rendering only looks names up in the facts given; there is no code in a template, so a
template cannot reach anything but the customer's facts and the action's params.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_BODY = re.compile(
    r"""^\s*(?P<name>[^\W\d][\w]*(?:\.[^\W\d][\w]*|\.\w+)*)\s*
        (?:\|\s*default\(\s*(?P<q>["'])(?P<default>.*?)(?P=q)\s*\)\s*)?$""",
    re.VERBOSE,
)


class TemplateError(ValueError):
    """A placeholder that cannot be read."""


def _parse(text: str) -> list[tuple[str, str, str | None]]:
    """(placeholder text, name, default) for each placeholder."""
    out = []
    if text.count("{{") != text.count("}}"):
        raise TemplateError("unbalanced '{{' and '}}' in template")
    for match in _PLACEHOLDER.finditer(text):
        body = _BODY.match(match.group(1))
        if not body:
            raise TemplateError(f"cannot read placeholder '{match.group(0)}'")
        out.append((match.group(0), body.group("name"), body.group("default")))
    return out


def placeholders(text: str) -> list[str]:
    """The names a template uses, in order; TemplateError if one cannot be read."""
    return [name for _, name, _ in _parse(text)]


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
    """Replace each placeholder by its fact; a missing fact renders as its default or ''."""
    for raw, name, default in _parse(text):
        value = lookup(name)
        shown = format_value(value)
        if not shown and default is not None:
            shown = default
        text = text.replace(raw, shown, 1)
    return text


def missing(text: str, lookup: Callable[[str], object]) -> list[str]:
    """The placeholders without a default whose fact is missing (None, or blank text): a
    message that needs them would read wrong, so it is held with this list as the reason.
    (An empty collection, such as no tags, is a value.)"""
    out = []
    for _, name, default in _parse(text):
        if default is None:
            value = lookup(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                out.append(name)
    return out
