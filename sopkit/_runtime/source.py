"""Customers a runtime does not hold: where it reads them from, and their wake-ups.

A live run with a bounded cache (`sopkit run --cache-customers`) holds only the customers it
needs; the others are in its store. The core asks a `CustomerSource` for a customer when an
event or a firing needs it, and merges the stored wake-ups (`StoredWakes`, read from the
store's next_wake index in pages) with the held customers' heap, so wake-ups run in the same
(time, customer id) order as when every customer is held.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from typing import Protocol

from sopkit._runtime.records import CustomerState


class CustomerSource(Protocol):
    """Where a runtime finds the customers it does not hold: a live run's store, read as
    customers are needed (`sopkit run --cache-customers`). The runtime stays the one that
    decides; the source only reads."""

    def fetch(self, customer_id: str) -> CustomerState | None:
        """The stored customer, read into the runtime's layout; None when none is stored."""
        ...

    def due(self, until: int, after: tuple[int, str] | None,
            limit: int) -> list[tuple[int, str]]:
        """(wake-up, customer id) of stored customers due by `until`, after `after` in that
        order, at most `limit`."""
        ...

    def stored(self, skip: Container[str] = ()) -> Iterator[CustomerState]:
        """Every stored customer in customer-id order, read one at a time (not held), but
        those in `skip` (the runtime holds them: their stored state is not even decoded)."""
        ...


class StoredWakes:
    """The wake-ups of stored customers not held, read in (time, customer id) pages and
    merged with the held customers' heap, so both run in one order. Each is taken once until
    `reset` (after a commit: the store changed)."""

    PAGE = 1000

    def __init__(self, source: CustomerSource) -> None:
        self.source = source
        self.reset()

    def reset(self) -> None:
        self.page: list[tuple[int, str]] = []
        self.at = 0  # the next entry of `page`
        self.after: tuple[int, str] | None = None  # the last entry taken
        self.until: int | None = None  # the page covers due times up to this
        self.more = False  # the page was full: more may follow at or before `until`

    def head(self, until: int) -> tuple[int, str] | None:
        """The earliest stored wake-up due by `until` not taken yet (a page read if needed)."""
        if self.at < len(self.page):
            return self.page[self.at] if self.page[self.at][0] <= until else None
        if self.more or self.until is None or until > self.until:
            self.page = self.source.due(until, self.after, self.PAGE)
            self.at, self.until, self.more = 0, until, len(self.page) == self.PAGE
            return self.page[0] if self.page else None
        return None

    def take(self) -> tuple[int, str]:
        self.after = self.page[self.at]
        self.at += 1
        return self.after
