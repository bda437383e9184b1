"""Live state beyond memory: a live run holds a bounded cache of customers, the rest stay in
its store (`sopkit run --cache-customers N`, docs/live.md#memory).

A customer is read from the store when an event for them arrives, their wake-up is due (the
store's indexed next_wake column, read in (time, customer id) pages), a campaign's audience
or a hand-over needs them (every customer streamed by id in pages), or the dispatcher screens
a message of theirs. After each commit the customers held beyond the bound are dropped, least
recently changed first: only committed customers are ever dropped, so the store always has
what was dropped. Decisions are the same as when every customer is held.
"""

from __future__ import annotations

import itertools
from collections.abc import Container, Iterable, Iterator

from sopkit._errors import UsageError
from sopkit._live.store import Store
from sopkit._runtime.records import CustomerState
from sopkit._runtime.runtime import Runtime
from sopkit._runtime.state import load_customer

DEFAULT_CACHE = 100_000
"""Customers a live run holds by default (about 3.3 KB each: some 330 MB at most)."""

POPULATION_FEATURES = (("rfm", "[rfm] (its refits score every customer at once)"),
                       ("clv", "[clv] (its refits fit and rescore every customer at once)"))


class StoreSource:
    """The `CustomerSource` of a live run: customers and due wake-ups read from its store.

    `all_held`: every customer the store has is held by the runtime (a run that began with
    an empty store and has dropped nobody since; only the run's event loop writes customers).
    While it is true the store is not asked: an unknown customer is new, the stored wake-ups
    are the held customers' own (in the runtime's heap), and a campaign sees the held ones.
    """

    def __init__(self, store: Store, runtime: Runtime, *, all_held: bool = False) -> None:
        self.store = store
        self.runtime = runtime
        self.all_held = all_held

    def fetch(self, customer_id: str) -> CustomerState | None:
        if self.all_held:
            return None
        blob = self.store.load_customer(customer_id)
        return None if blob is None else load_customer(self.runtime, customer_id, blob)

    def due(self, until: int, after: tuple[int, str] | None,
            limit: int) -> list[tuple[int, str]]:
        return [] if self.all_held else self.store.due_customers(until, after, limit)

    def stored(self, skip: Container[str] = ()) -> Iterator[CustomerState]:
        if self.all_held:
            return
        for customer_id, blob in self.store.load_customers():
            if customer_id not in skip:
                yield load_customer(self.runtime, customer_id, blob)


def cache_size(runtime: Runtime, wanted: int | None) -> int:
    """How many customers a run holds: `wanted` (0: every one), by default DEFAULT_CACHE,
    or every one for a playbook whose population-wide refits need all of them at once (a
    UsageError, exit 2, when a bound was asked for)."""
    needs_all = [text for key, text in POPULATION_FEATURES if runtime.ir.get(key)]
    if needs_all:
        if wanted:
            raise UsageError(
                f"--cache-customers {wanted}: this playbook uses {' and '.join(needs_all)}, "
                "so a run holds every customer in memory; leave --cache-customers out (or "
                "give 0) for this playbook, or move [rfm]/[clv] scoring to a batch job that "
                "writes the scores into profiles (docs/live.md#memory)")
        return 0
    if wanted is None:
        return DEFAULT_CACHE
    if wanted < 0:
        raise UsageError(f"--cache-customers {wanted}: give a number of customers (0: hold "
                         "every customer)")
    return wanted


class CustomerCache:
    """Keeps a runtime's held customers within `size` after each commit (0: no bound)."""

    def __init__(self, runtime: Runtime, store: Store, size: int, *,
                 fresh: bool = False) -> None:
        """`fresh`: the store is new (no customers yet), so until the first customer is
        dropped the run holds every stored customer and need not read any back."""
        self.runtime = runtime
        self.size = size
        self.source: StoreSource | None = None
        if size:
            self.source = StoreSource(store, runtime,
                                      all_held=fresh and store.count_customers() == 0)
            runtime.core.use_source(self.source)

    @property
    def bounded(self) -> bool:
        return self.size > 0

    def committed(self, touched: Iterable[str]) -> None:
        """After a commit: the customers just changed become the most recent, the least
        recent beyond the bound are dropped (all are committed now), and stored wake-ups are
        read afresh."""
        if not self.size:
            return
        core = self.runtime.core
        customers = core.population.customers
        for customer_id in touched:
            if customer_id in customers:
                customers[customer_id] = customers.pop(customer_id)  # to the end: recent
        excess = len(customers) - self.size
        if excess > 0:
            if self.source is not None:
                self.source.all_held = False  # the store has customers the run does not hold
            for customer_id in list(itertools.islice(customers, excess)):
                core.evict(customer_id)
        if core.stored_wakes is not None:
            core.stored_wakes.reset()
