"""Masking of personal data in what sopkit prints and reports.

Masking is for display only: what is stored, sent or compared (outbox keys, channel
requests, `sopkit diff`'s comparison) is never masked.

What is masked:

- mainland-China mobile numbers `1[3-9]x xxxx xxxx`: 11 digits, with a space or a dash
  allowed between the 3-4-4 groups and an optional `+86` / `0086` / `86` / `(+86)` prefix;
  the first 3 and last 4 digits stay (`138****5678`, `+86 138 **** 5678`);
- landlines: `010-8888 6666`, `(0755) 1234 5678`, `+86 10 8888 6666`, and 11-12 digits
  starting with `0[1-9]`; the area code and last 4 digits stay (`010-**** 6666`);
- e-mail addresses with any local part (any script: `王小明@example.com`) and a domain with or
  without a dot (`li@localhost`); the first character of the local part and the domain stay
  (`王***@example.com`).

Not masked: ISO times, amounts, ids and order numbers of up to 10 digits (11 digits starting
with 1[3-9] or 0[1-9] are taken for a phone number).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

_PHONE = re.compile(
    r"(?<![0-9])(?:"
    # mobile: optional prefix, then 3-4-4 digits with an optional space or dash between groups
    r"(?P<mp>(?:\+86|0086|86|\(\+?86\))[ -]?)?"
    r"(?P<mh>1[3-9][0-9])(?P<ms1>[ -]?)[0-9]{4}(?P<ms2>[ -]?)(?P<mt>[0-9]{4})"
    # landline with the country code: the area code loses its 0 (+86 10 8888 6666)
    r"|(?P<ip>(?:\+86|0086|\(\+?86\))[ -]?)(?P<ia>10|2[0-9]|[3-9][0-9][0-9])(?P<is1>[ -]?)"
    r"[0-9]{3,4}(?P<is2>[ -]?)(?P<it>[0-9]{4})"
    # landline with an area code set apart: 010-8888 6666, (0755) 1234-5678
    r"|(?P<la>\(0[1-9][0-9]{1,2}\) ?|0[1-9][0-9]{1,2}[ -])[0-9]{3,4}(?P<ls>[ -]?)(?P<lt>[0-9]{4})"
    # landline in one run of 11 or 12 digits: 01088886666
    r"|(?P<da>0[1-9][0-9])[0-9]{4,5}(?P<dt>[0-9]{4})"
    r")(?![0-9])"
)
# Every phone form above holds 3 digits, maybe a space or dash, then 4 digits: most text
# has no such run, and this search is much cheaper than the pattern above.
_PHONE_HINT = re.compile(r"[0-9]{3}[ -]?[0-9]{4}").search
# The local part: a run of anything but space, `@` and what sets an address apart in text
# (ASCII and full-width brackets, quotes and punctuation, `=` and `:` as in `email=…` or
# `key:…`), and `*`, so that masked text stays as it is when masked again. The run starts
# after such a character (the lookbehind) and is taken whole (`++`): one pass, no
# backtracking, however long the text.
_NOT_LOCAL = r"\s@*<>()\[\]{}\"'`,;:=/\\|（）【】「」《》〈〉『』，。；：、！？“”‘’"
# The domain: labels of letters (any script), digits and dashes; without a dot, it must start
# with a letter (`li@localhost`, not `5@10`).
_DOMAIN = r"(?:[\w-]+(?:\.[\w-]+)+|[^\W\d_][\w-]*)"
_EMAIL = re.compile(f"(?<![^{_NOT_LOCAL}])([^{_NOT_LOCAL}]++)(@{_DOMAIN})")


def _hide_phone(m: re.Match[str]) -> str:
    if m.group("mh") is not None:
        return f"{m.group('mp') or ''}{m.group('mh')}{m.group('ms1')}****{m.group('ms2')}" \
               f"{m.group('mt')}"
    if m.group("ia") is not None:
        return f"{m.group('ip')}{m.group('ia')}{m.group('is1')}****{m.group('is2')}" \
               f"{m.group('it')}"
    if m.group("la") is not None:
        return f"{m.group('la')}****{m.group('ls')}{m.group('lt')}"
    return f"{m.group('da')}****{m.group('dt')}"


def _hide_local(m: re.Match[str]) -> str:
    return f"{m.group(1)[0]}***{m.group(2)}"


def mask_text(text: str) -> str:
    """Hide the middle of phone numbers and the local part of e-mail addresses.

    >>> mask_text("call 13812345678 or +86 138-1234-5678, mail li.lei@example.com")
    'call 138****5678 or +86 138-****-5678, mail l***@example.com'
    >>> mask_text("王小明@example.com, 010-8888 6666, order 1234567890 at 2024-05-01T10:00")
    '王***@example.com, 010-**** 6666, order 1234567890 at 2024-05-01T10:00'
    """
    if "@" in text:
        text = _EMAIL.sub(_hide_local, text)
    if len(text) < 7 or _PHONE_HINT(text) is None:  # the fast path: no phone number in here
        return text
    return _PHONE.sub(_hide_phone, text)


# For `writes_unmasked`: an ASCII digit becomes "0", a space and a dash stay, anything else
# (every byte of a character outside ASCII too) becomes "x".
_DIGITS = bytes(ord("0") if 48 <= b <= 57 else b if b in b" -" else ord("x")
                for b in range(256))


def writes_unmasked(text: str) -> bool:
    """Whether `mask` leaves every string, dict key and integer of a JSON-like value as it is,
    judged from `text`, that value written by the standard library's JSON encoder (any
    layout, `ensure_ascii=False`). False when unsure: then mask the value.

    Exact where it says True: `mask_text` changes nothing without an "@" or a run of 3 digits,
    maybe a space or a dash, and 4 digits (`_PHONE_HINT`), and `mask` changes no integer under
    10 digits. The encoder writes an "@", a digit, a space or a dash of a string as it is (it
    escapes only quotes, backslashes and control characters), so every such run or "@" is in
    `text`, where, with digits read as "0", it is "0000000", "000 0000" or "000-0000"; an
    integer of 10 digits or more holds the first.

    >>> writes_unmasked('{"coupon": "BDAY20", "days": 3}')
    True
    >>> writes_unmasked('{"phone": "138 1234 5678"}'), writes_unmasked('{"to": "li@x.cn"}')
    (False, False)
    """
    if "@" in text:
        return False
    shape = text.encode("utf-8", "surrogatepass").translate(_DIGITS)
    return b"0000000" not in shape and b"000 0000" not in shape and b"000-0000" not in shape


def mask(value: Any) -> Any:
    """`mask_text` applied to every string inside a JSON-like value, dict keys included.

    An integer that reads as a phone number (`13812345678` in a JSON record) becomes the
    masked text.
    """
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {_mask_name(k) if isinstance(k, str) else k: mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    if isinstance(value, int) and _LONG <= value < _TOO_LONG:
        shown = mask_text(str(value))
        return value if shown.isdigit() else shown
    return value


_LONG, _TOO_LONG = 10**9, 10**13  # 10 to 13 digits: a phone number, with 0 or 86 or not


@functools.lru_cache(maxsize=4096)
def _mask_name(name: str) -> str:
    """`mask_text` for the keys of dicts: names of facts, fields and params, over and over."""
    return mask_text(name)


def mask_key(key: str, customer_id: str) -> str:
    """An idempotency key for display: its customer-id part masked as `mask_text` would.

    Keys look like `playbook:version:rule:customer:occurrence:index`; only the customer id
    is personal, so the numbers around it stay as they are. The key stored and sent is never
    the one shown.

    >>> mask_key("p:1:r:13812345678:1:0", "13812345678")
    'p:1:r:138****5678:1:0'
    """
    return _shown_key(key, customer_id, mask_text(customer_id))


def _shown_key(key: str, customer_id: str, shown: str) -> str:
    if shown == customer_id:
        return key
    part = f":{customer_id}:"
    if part in key:
        return key.replace(part, f":{shown}:")
    return mask_text(key)


# Fields of an action record that never hold personal data (names from the playbook, times).
_AS_IS = frozenset({"time", "rule", "action", "status", "trigger"})


def mask_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """An action record as a person may read it: everything masked, the customer id and the
    key's customer-id part included; times, rule, action, status and trigger as they are."""
    customer = record.get("customer_id")
    if not isinstance(customer, str):  # not an action record: mask every field
        return {name: value if name in _AS_IS else mask(value) for name, value in record.items()}
    shown = mask_text(customer)
    out: dict[str, Any] = {}
    for name, value in record.items():
        if name in _AS_IS:
            out[name] = value
        elif name == "customer_id":
            out[name] = shown
        elif name == "key" and isinstance(value, str):
            out[name] = _shown_key(value, customer, shown)
        else:
            out[name] = mask(value)
    return out
