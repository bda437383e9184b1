"""Incremental metrics: each keeps a small per-customer state updated by events.

Windows hold the events of the trailing window (an event counts while now - ts < window) and
drop them as time passes; `next_change` tells the scheduler when the oldest one leaves. One
process holds the states of millions of customers, so a window keeps its timestamps in an
`array('q')`, 8 bytes an event, oldest first.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any

from ._clock import anniversary_on_or_after

Number = int | float | Decimal


class Metric:
    """Base: `observe` an event, read the `value` at a time, and say when it next changes."""

    kind = ""
    integral = False  # values are whole numbers: windows compare them against boundaries

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
        if self.window is None:
            return None
        stamps = self.stamps(state)
        return stamps[0] + self.window if stamps else None

    def evict(self, state: Any, now: int) -> None:
        """Drop the events that have left the window by `now` (now - ts >= window)."""
        assert self.window is not None
        stamps = self.stamps(state)
        cutoff = now - self.window
        if stamps and stamps[0] <= cutoff:  # most reads find nothing to drop
            self.drop(state, bisect_right(stamps, cutoff))

    def next_crossing(self, state: Any, now: int, thresholds: list[float],
                      boundaries: list[int]) -> int | None:
        """The first instant after `now` at which events leaving the window, with no new
        ones, move the value across a condition's constant; None if none can.

        Integer values (counts) compare against `boundaries`, the whole values where a
        comparison may flip; others against the constants themselves (below, equal, above).
        """
        if self.window is None:
            return None
        self.evict(state, now)
        stamps = self.stamps(state)

        def position(value: Any) -> tuple[int, ...] | None:
            if value is None:
                return None
            if self.integral:
                return tuple(int(value > b) for b in boundaries)
            number = float(value) if isinstance(value, Decimal) else value
            return tuple((number > c) - (number < c) for c in thresholds)

        start = position(self.value(state, now, 0, {}))
        last = len(stamps) - 1
        for i, value in enumerate(self.departures(state)):
            if i < last and stamps[i + 1] == stamps[i]:
                continue  # events with one timestamp leave together
            if position(value) != start:
                return stamps[i] + self.window
        return None

    def departures(self, state: Any) -> Iterator[Any]:
        """The window's value after its oldest event leaves, the two oldest, and so on."""
        raise NotImplementedError

    def stamps(self, state: Any) -> array[int]:
        """A windowed state's timestamps, oldest first."""
        raise NotImplementedError

    def drop(self, state: Any, n: int) -> None:
        """Forget a windowed state's `n` oldest events."""
        raise NotImplementedError


class Count(Metric):
    kind = "count"
    integral = True

    def new(self) -> Any:
        return array("q") if self.window else 0

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

    def stamps(self, state: Any) -> array[int]:
        stamps: array[int] = state  # a windowed count is its timestamps
        return stamps

    def drop(self, state: Any, n: int) -> None:
        del state[:n]

    def next_crossing(self, state: Any, now: int, thresholds: list[float],
                      boundaries: list[int]) -> int | None:
        """A count falls by one a departure: it crosses the highest boundary below it when
        the count reaches that boundary."""
        if self.window is None:
            return None
        self.evict(state, now)
        n = len(state)
        below = [b for b in boundaries if 0 <= b < n]  # a count never falls below 0
        if not below:
            return None
        return int(state[n - max(below) - 1]) + self.window


# A context that never rounds: scaleb in it only moves the exponent.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_COEFFICIENT = 2**55  # packed coefficients lie in [-2**55, 2**55), exponents in [-128, 128)


def _pack(value: Any) -> int | None:
    """An int or Decimal as one int64, coefficient * 256 + exponent + 128; None if it won't fit."""
    if isinstance(value, int):
        coefficient, exponent = value, 0
    elif isinstance(value, Decimal) and value.is_finite():
        exponent = int(value.as_tuple().exponent)
        coefficient = int(value.scaleb(-exponent, _EXACT))
    else:
        return None
    if -_COEFFICIENT <= coefficient < _COEFFICIENT and -128 <= exponent < 128:
        return coefficient * 256 + exponent + 128
    return None


def _unpack(packed: int) -> int | Decimal:
    """The value `_pack` packed, with its exponent; an int when that is 0, +0 for -0.

    Neither changes a sum: an int meets a Decimal total as the Decimal with exponent 0 would,
    and a zero's sign never shows in the total it is subtracted from.
    """
    coefficient, exponent = divmod(packed, 256)
    exponent -= 128
    return coefficient if exponent == 0 else Decimal(coefficient).scaleb(exponent, _EXACT)


class _Sums:
    """The events of a sum/avg window and the running sum of their values.

    The total is kept as before: it starts at the int 0, each value is added when it arrives
    and subtracted when it leaves, so it has the type and Decimal exponent it always had, and
    reading it costs nothing. Only the stored values shrink: each packs into one int64 of an
    `array('q')` (16 bytes an event with its timestamp, against ~200 for a (ts, Decimal)
    tuple) and unpacks, when it leaves, to a value equal to it with the same exponent, so every
    step gives what the old window's did. That is exact by construction (scaling all values to
    one exponent and rebuilding the total would be exact only while no step rounds). A value
    that does not pack (a float, a coefficient past 55 bits, an exponent outside a byte) turns
    `values` into a plain list of the values, for good.
    """

    __slots__ = ("stamps", "total", "values")

    def __init__(self) -> None:
        self.stamps = array("q")
        self.values: array[int] | list[Any] = array("q")
        self.total: Any = 0

    def add(self, ts: int, value: Any) -> None:
        self.total += value
        self.stamps.append(ts)
        values = self.values
        if isinstance(values, array):
            packed = _pack(value)
            if packed is not None:
                values.append(packed)
                return
            self.values = values = [_unpack(v) for v in values]
        values.append(value)

    def drop(self, n: int) -> None:
        values = self.values
        total = self.total
        for value in map(_unpack, values[:n]) if isinstance(values, array) else values[:n]:
            total -= value
        self.total = total
        del values[:n]
        del self.stamps[:n]


class Sum(Metric):
    kind = "sum"

    def new(self) -> Any:
        return _Sums() if self.window else [0, 0]

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        value = fields.get(self.field or "")
        if value is None:
            return state
        if self.window:
            self.evict(state, ts)
            state.add(ts, value)
        else:
            state[0] += value
            state[1] += 1
        return state

    def stamps(self, state: Any) -> array[int]:
        sums: _Sums = state
        return sums.stamps

    def drop(self, state: Any, n: int) -> None:
        state.drop(n)

    def totals(self, state: Any, now: int) -> tuple[Any, int]:
        if self.window:
            self.evict(state, now)
            return state.total, len(state.stamps)
        return state[0], state[1]

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        return self.totals(state, now)[0]

    def next_crossing(self, state: Any, now: int, thresholds: list[float],
                      boundaries: list[int]) -> int | None:
        """With no negative value the total only falls: it first changes place against the
        constants when it reaches the highest one at or below it (or, standing on it, drops
        under it)."""
        if self.window is None:
            return None
        self.evict(state, now)
        values = state.values
        if not isinstance(values, array) or (values and min(values) < 0):
            return super().next_crossing(state, now, thresholds, boundaries)
        total = state.total
        current = float(total)
        under = [c for c in thresholds if c <= current]
        if not under:
            return None
        limit = max(under)
        stamps = state.stamps
        last = len(stamps) - 1
        for i, packed in enumerate(values):
            total -= _unpack(packed)
            if i < last and stamps[i + 1] == stamps[i]:
                continue
            value = float(total)
            if value < limit or (value == limit and current > limit):
                return int(stamps[i]) + self.window
        return None

    def departures(self, state: Any) -> Iterator[Any]:
        total = state.total
        values = state.values
        for value in map(_unpack, values) if isinstance(values, array) else values:
            total -= value
            yield total


class Avg(Sum):
    kind = "avg"

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        total, n = self.totals(state, now)
        return None if n == 0 else Decimal(total) / n

    def next_crossing(self, state: Any, now: int, thresholds: list[float],
                      boundaries: list[int]) -> int | None:
        return Metric.next_crossing(self, state, now, thresholds, boundaries)  # not monotone

    def departures(self, state: Any) -> Iterator[Any]:
        left = len(state.stamps)
        for total in super().departures(state):
            left -= 1
            yield None if left == 0 else Decimal(total) / left


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
        return anniversary_on_or_after(date.month, date.day, today) - today


class _Keys:
    """The events of a max_count_per_key window: timestamps, their keys, and each key's count."""

    __slots__ = ("counts", "keys", "stamps")

    def __init__(self) -> None:
        self.stamps = array("q")
        self.keys: list[Any] = []
        self.counts: Counter[Any] = Counter()

    def add(self, ts: int, key: Any) -> None:
        self.stamps.append(ts)
        self.keys.append(key)
        self.counts[key] += 1

    def drop(self, n: int) -> None:
        counts = self.counts
        for key in self.keys[:n]:
            counts[key] -= 1
            if not counts[key]:
                del counts[key]
        del self.keys[:n]
        del self.stamps[:n]


class MaxCountPerKey(Metric):
    """The largest number of events sharing one value of `field` within the window."""

    kind = "max_count_per_key"
    integral = True

    def new(self) -> Any:
        return _Keys()

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        key = fields.get(self.field or "")
        self.evict(state, ts)
        if key is not None:
            state.add(ts, key)
        return state

    def stamps(self, state: Any) -> array[int]:
        keys: _Keys = state
        return keys.stamps

    def drop(self, state: Any, n: int) -> None:
        state.drop(n)

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        self.evict(state, now)
        return max(state.counts.values(), default=0)

    def departures(self, state: Any) -> Iterator[Any]:
        counts = Counter(state.counts)
        for key in state.keys:
            counts[key] -= 1
            yield max(counts.values(), default=0)


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
        now_anniv = anniversary_on_or_after(birth.month, birth.day, today)
        after = anniversary_on_or_after(birth.month, birth.day, now_anniv + 1)
        days = [now_anniv + 1]  # the value jumps from 0 back up the day after
        for anniv in (now_anniv, after):
            days.extend(anniv - b for b in boundaries if 0 <= b <= 366 and anniv - b > today)
        return min(days)
    return today + 1
