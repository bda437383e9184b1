"""The wake-up queue: which customers (and refits) to wake at each instant (core.py)."""

from __future__ import annotations

import heapq

from sopkit._runtime.records import CustomerState

HEAP_SLACK = 4096  # the smallest queue worth compacting
RFM_REFIT = "\0rfm"  # the queue entry of the population refit (sorts before every customer id)
CLV_REFIT = "\0clv"  # the queue entry of the [clv] model refit
REFITS = (RFM_REFIT, CLV_REFIT)


class WakeQueue:
    """The wake-ups due: the customer ids (and the coordinator's REFITS) to wake at each
    instant, each customer's live one being its `wake_at`.

    Wake-ups bunch at a few instants (day starts), so the instants are a heap of ints and each
    instant's ids a list, sorted when that instant is taken: a tuple heap compared each
    entry's customer id at every level. Entries that a later `push` replaced stay until
    their instant is taken (skipped then) or the queue compacts.
    """

    def __init__(self, customers: dict[str, CustomerState]) -> None:
        self.times: list[int] = []  # the instants with ids, a heap
        self.due: dict[int, list[str]] = {}  # instant -> the ids to wake then
        self.size = 0  # ids held, dead ones included
        self.limit = HEAP_SLACK  # compact when `size` grows past this
        self._customers = customers

    def push(self, cs: CustomerState, when: int) -> None:
        """Wake `cs` at `when` (replacing its earlier wake-up)."""
        cs.wake_at = when
        self.add(when, cs.customer_id)

    def add(self, when: int, customer_id: str) -> None:
        """Wake `customer_id` (or run a refit) at `when`."""
        ids = self.due.get(when)
        if ids is None:
            self.due[when] = [customer_id]
            heapq.heappush(self.times, when)
        else:
            ids.append(customer_id)
        self.size += 1
        if self.size > self.limit:
            self.compact()

    def first(self) -> int | None:
        """The earliest instant with an id, or None."""
        return self.times[0] if self.times else None

    def take(self, when: int) -> list[str]:
        """The ids to wake at `when` (the first instant), sorted; removed from the queue."""
        heapq.heappop(self.times)
        ids = self.due.pop(when)
        self.size -= len(ids)
        ids.sort()
        return ids

    def compact(self) -> None:
        """Drop the entries later schedules replaced (each customer keeps its one live wake-up),
        so a million customers do not carry several dead entries each."""
        customers = self._customers
        due: dict[int, list[str]] = {}
        for when, ids in self.due.items():
            live = [cid for cid in ids if cid in REFITS or
                    (cid in customers and customers[cid].wake_at == when)]
            if live:
                due[when] = live
        self.due = due
        self.times[:] = due  # in place: the coordinator holds the list
        heapq.heapify(self.times)
        self.size = sum(len(ids) for ids in due.values())
        self.limit = max(HEAP_SLACK, 2 * self.size)
