"""Customer search by phone number for the console (docs/console.md#search-by-phone).

The store indexes customers by id only, so a search reads the stored customers in the
store's own pages (`Store.load_customers`, 1,000 a page) on a connection of its own, and
stops after `MAX_MATCHES`. A customer whose stored state does not hold the number's last
four digits is skipped without decoding it. A number matches a profile value that sopkit's
masking takes for a phone number (`sopkit._mask`) and that reads as the same digits once
spaces, dashes, brackets and a +86 / 0086 / 86 prefix are set aside: a whole number, never a
part of one. One search runs at a time.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from sopkit._mask import mask_text
from sopkit._runtime import codec
from sopkit._runtime.codec import StateError
from sopkit._serve.reads import Reads

MAX_MATCHES = 20  # a search stops after this many customers
MAX_QUERY = 40  # characters of a typed number
_SEPARATORS = re.compile(r"[\s\-().]+")


def phone_digits(text: str) -> str | None:
    """A phone number as its national digits (`+86 138-1234-5678` -> `13812345678`,
    `+86 10 8888 6666` -> `01088886666`); None for text that is not a whole number.

    >>> phone_digits("(+86) 138 1234 5678"), phone_digits("010-8888 6666"), phone_digits("12")
    ('13812345678', '01088886666', None)
    """
    bare = _SEPARATORS.sub("", text.strip())
    plus = bare.startswith("+")
    digits = bare[1:] if plus else bare
    if not digits.isascii() or not digits.isdigit():
        return None
    abroad = False
    if digits.startswith("0086"):
        digits, abroad = digits[4:], True
    elif digits.startswith("86") and (plus or len(digits) == 13):
        digits, abroad = digits[2:], True
    elif plus:
        return None  # another country's number: not one sopkit masks
    mobile = len(digits) == 11 and digits[0] == "1" and digits[1] in "3456789"
    if abroad and not mobile and not digits.startswith("0"):
        digits = "0" + digits  # +86 10 8888 6666: the area code lost its 0
    return digits if 7 <= len(digits) <= 12 else None


@dataclass
class Found:
    """A search's answer: the customers found, and how much of the store it read."""

    matches: list[dict[str, Any]] = field(default_factory=list)
    scanned: int = 0
    complete: bool = True  # False: stopped at MAX_MATCHES before the last customer


class Busy(Exception):
    """Another search is running."""


class PhoneSearch:
    """Finds customers by a profile phone number, one search at a time."""

    def __init__(self, reads: Reads) -> None:
        self.reads = reads
        self._running = threading.Lock()

    def find(self, wanted: str, unmasked: bool) -> Found:
        """The customers whose profile holds the phone number `wanted` (already
        `phone_digits`); phones and ids masked unless `unmasked` (Busy: one runs)."""
        if not self._running.acquire(blocking=False):
            raise Busy()
        try:
            return self._scan(wanted, unmasked)
        finally:
            self._running.release()

    def _scan(self, wanted: str, unmasked: bool) -> Found:
        tail = wanted[-4:].encode()
        found = Found()
        with self.reads.opened() as store:
            for customer_id, blob in store.load_customers():
                found.scanned += 1
                if tail not in blob:  # every written form keeps the last 4 digits together
                    continue
                fields = _phone_fields(customer_id, blob, wanted)
                if not fields:
                    continue
                if len(found.matches) == MAX_MATCHES:
                    found.complete = False
                    break
                shown = {name: value if unmasked else mask_text(value)
                         for name, value in fields.items()}
                found.matches.append({
                    "customer_id": customer_id if unmasked else mask_text(customer_id),
                    # an id that is a phone number is never put in a link's address
                    "link": customer_id if mask_text(customer_id) == customer_id else None,
                    "phones": shown})
        return found


def _phone_fields(customer_id: str, blob: bytes, wanted: str) -> dict[str, str]:
    """The profile fields of a stored customer that hold the phone number `wanted`."""
    try:
        data = codec.loads(blob, f"customer {customer_id}")
    except StateError:
        return {}  # not readable here; the customer page says why
    profile = data.get("profile") if isinstance(data, dict) else None
    if not isinstance(profile, dict):
        return {}
    out: dict[str, str] = {}
    for name, value in profile.items():
        if isinstance(value, bool) or not isinstance(value, str | int):
            continue
        text = str(value)
        if mask_text(text) != text and phone_digits(text) == wanted:
            out[str(name)] = text
    return out
