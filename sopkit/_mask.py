"""Masking of personal data in what sopkit prints and reports."""

from __future__ import annotations

import re
from typing import Any

_PHONE = re.compile(r"(?<!\d)(\+?86[- ]?)?(1[3-9]\d)(\d{4})(\d{4})(?!\d)")
_ELEVEN_DIGITS = re.compile(r"\d{11}")
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*(@[A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def mask_text(text: str) -> str:
    """Hide the middle of mobile numbers and the local part of e-mail addresses.

    >>> mask_text("call 13812345678 or mail li.lei@example.com")
    'call 138****5678 or mail l***@example.com'
    """
    if "@" in text:
        text = _EMAIL.sub(r"\1***\2", text)
    if not _ELEVEN_DIGITS.search(text):  # every mobile number has 11 digits in a row
        return text
    return _PHONE.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}****{m.group(4)}", text)


def mask(value: Any) -> Any:
    """`mask_text` applied to every string inside a JSON-like value."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value
