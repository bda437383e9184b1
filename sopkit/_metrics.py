"""Incremental metrics: each keeps a small per-customer state updated by events.

Windows hold the events of the trailing window (an event counts while now - ts < window) and
drop them as time passes; `next_change` tells the scheduler when the oldest one leaves.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, deque
from decimal import Decimal
from typing import Any

from ._clock import next_anniversary

Number = int | float | Decimal


class Metric:
    """Base: `observe` an event, read the `value` at a time, and say when it next changes."""

    kind = ""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["name"]
        self.event: str | None = spec["event"]
        self.field: str | None = spec["field"]
        self.attribute: str | None = spec["attribute"]
        self.window: int | None = spec["window"]

    def new(self) -> Any:
        return None

    def matches(self, etype: str) -> bool:
        return self.event == "*" or self.event == etype

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        return state

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        raise NotImplementedError

    def next_change(self, state: Any) -> int | None:
        """The instant the window's oldest event leaves it, for windowed metrics."""
        if self.window is None or not state:
            return None
        head = state[0]
        return int((head[0] if isinstance(head, tuple) else head) + self.window)

    def evict(self, state: Any, now: int) -> None:
        assert self.window is not None
        while state and now - (state[0][0] if isinstance(state[0], tuple) else state[0]) \
                >= self.window:
            self.dropped(state, state.popleft())

    def dropped(self, state: Any, item: Any) -> None:
        return None


class Count(Metric):
    kind = "count"

    def new(self) -> Any:
        return deque() if self.window else 0

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        if self.window:
            self.evict(state, ts)
            state.append(ts)
            return state
        return state + 1

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        if self.window:
            self.evict(state, now)
            return len(state)
        return state


class _Window(deque[Any]):
    """A deque of (ts, value) that also keeps the running sum of the values."""

    total: Decimal | int = 0


class Sum(Metric):
    kind = "sum"

    def new(self) -> Any:
        return _Window() if self.window else [0, 0]

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        value = fields.get(self.field or "")
        if value is None:
            return state
        if self.window:
            self.evict(state, ts)
            state.append((ts, value))
            state.total += value
        else:
            state[0] += value
            state[1] += 1
        return state

    def dropped(self, state: Any, item: Any) -> None:
        state.total -= item[1]

    def totals(self, state: Any, now: int) -> tuple[Any, int]:
        if self.window:
            self.evict(state, now)
            return state.total, len(state)
        return state[0], state[1]

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        return self.totals(state, now)[0]


class Avg(Sum):
    kind = "avg"

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        total, n = self.totals(state, now)
        return None if n == 0 else Decimal(total) / n


class Last(Metric):
    kind = "last"

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        value = fields.get(self.field or "")
        return state if value is None else value

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        return state


class DaysSince(Metric):
    """Whole playbook days since the last (or first) event of the type; None before any."""

    kind = "days_since"
    first = False

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        return state if (self.first and state is not None) else day

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        return None if state is None else today - state

    def anchor(self, state: Any, profile: dict[str, Any]) -> int | None:
        return state  # type: ignore[no-any-return]  # the day ordinal of the event


class DaysSinceFirst(DaysSince):
    kind = "days_since_first"
    first = True


class DaysUntil(Metric):
    """Whole days from today until a profile date (negative once it has passed)."""

    kind = "days_until"

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        date = profile.get(self.attribute or "")
        return None if date is None else date.toordinal() - today


class DaysToAnniversary(Metric):
    """Days until the next anniversary of a profile date, 0 on the day itself."""

    kind = "days_to_anniversary"

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        date = profile.get(self.attribute or "")
        if date is None:
            return None
        return next_anniversary(date, dt.date.fromordinal(today)).toordinal() - today


class _Keyed(deque[Any]):
    counts: Counter[Any]


class MaxCountPerKey(Metric):
    """The largest number of events sharing one value of `field` within the window."""

    kind = "max_count_per_key"

    def new(self) -> Any:
        state = _Keyed()
        state.counts = Counter()
        return state

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        key = fields.get(self.field or "")
        self.evict(state, ts)
        if key is not None:
            state.append((ts, key))
            state.counts[key] += 1
        return state

    def dropped(self, state: Any, item: Any) -> None:
        state.counts[item[1]] -= 1
        if not state.counts[item[1]]:
            del state.counts[item[1]]

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        self.evict(state, now)
        return max(state.counts.values(), default=0)


KINDS: dict[str, type[Metric]] = {
    cls.kind: cls
    for cls in (Count, Sum, Avg, Last, DaysSince, DaysSinceFirst, DaysUntil, DaysToAnniversary,
                MaxCountPerKey)
}


def build(spec: dict[str, Any]) -> Metric:
    return KINDS[spec["kind"]](spec)


def next_day_crossing(metric: Metric, state: Any, profile: dict[str, Any], today: int,
                      boundaries: list[int], any_day: bool) -> int | None:
    """The next day ordinal after `today` on which a condition on this metric may flip.

    A boundary b means a comparison may differ between the values b and b + 1: a metric
    counting up (days_since) crosses it on the day it reaches b + 1, one counting down
    (days_until, days_to_anniversary) on the day it reaches b.
    """
    if any_day:
        has_value = metric.value(state, 0, today, profile) is not None
        return today + 1 if has_value else None
    if isinstance(metric, DaysSince):
        anchor = metric.anchor(state, profile)
        if anchor is None:
            return None
        later = [b + 1 for b in boundaries if b + 1 > today - anchor]
        return anchor + min(later) if later else None
    if isinstance(metric, DaysUntil):
        date = profile.get(metric.attribute or "")
        if date is None:
            return None
        target = date.toordinal()
        earlier = [b for b in boundaries if b < target - today]
        return target - max(earlier) if earlier else None
    if isinstance(metric, DaysToAnniversary):
        birth = profile.get(metric.attribute or "")
        if birth is None:
            return None
        now_anniv = next_anniversary(birth, dt.date.fromordinal(today)).toordinal()
        after = next_anniversary(birth, dt.date.fromordinal(now_anniv + 1)).toordinal()
        days = [now_anniv + 1]  # the value jumps from 0 back up the day after
        for anniv in (now_anniv, after):
            days.extend(anniv - b for b in boundaries if 0 <= b <= 366 and anniv - b > today)
        return min(days)
    return today + 1
