"""Incremental metrics: each keeps a small per-customer state updated by events.

Windows hold the events of the trailing window (an event counts while now - ts < window) and
drop them as time passes; `next_change` tells the scheduler when the oldest one leaves. One
process holds the states of millions of customers, so a window keeps its timestamps in an
`array('q')`, 8 bytes an event, oldest first, and costs O(1) amortised per event that
arrives or leaves, however many it holds (sopkit._runtime.windows).

Stored state is data, never pickle: `dump_state` gives a state as values that
`sopkit._runtime.codec.encode` writes as JSON (a Decimal keeps its exponent, an int stays an
int), and
`load_state` builds the same state again from what `decode` read back. Only live events are
written, oldest first; a window's derived parts (key counts, the exact sums a crossing search
keeps) are rebuilt on loading. The shapes, by kind:

| kind | no window | with a window |
| --- | --- | --- |
| `count` | the int count | `{"stamps": [ts, ...]}` |
| `sum`, `avg` | `{"total": t, "count": n}` | `{"stamps": [ts, ...], "values": [v, ...],` |
| | | `"total": t}` |
| `max_count_per_key` | (always windowed) | `{"stamps": [ts, ...], "keys": [k, ...]}` |
| `last` | the last value, or None | |
| `days_since`, `days_since_first` | the day ordinal of the event, or None | |
| `days_until`, `days_to_anniversary` | None (read from the profile) | |

`ts` are whole-second UTC timestamps (ints); `t` is the running total with its type and
exponent (an int while only ints came in, `Decimal("0.000")` after 0.125 left a window);
`v` each event's value (int, Decimal, or a float where one came in); `k` each event's key
(str, int, Decimal, date ...).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from decimal import Decimal
from itertools import pairwise
from typing import Any

from sopkit._lang import cncal
from sopkit._lang.clock import anniversary_on_or_after
from sopkit._runtime.codec import StateError
from sopkit._runtime.windows import Keys, Stamps, Sums, exact_float, pack, skipping_walk, unpack
from sopkit._runtime.windows import frame as exact_frame

Number = int | float | Decimal

READ_CALL, READ_STATE, READ_DAYS_SINCE = 0, 1, 2  # `Metric.reading`'s answers
_LONG = 64  # a crossing search on a longer window searches from both ends


class Metric:
    """Base: `observe` an event, read the `value` at a time, and say when it next changes."""

    kind = ""
    integral = False  # values are whole numbers: windows compare them against boundaries
    # `dump_state` gives only ints, None, str-keyed dicts and lists of those, whatever was
    # observed or loaded (`_load` refuses anything else): the stored state's writer need not
    # look inside it (sopkit._runtime.state.dump_customer)
    plain_state = False

    def __init__(self, spec: Mapping[str, Any]) -> None:
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

    def reading(self) -> int:
        """How a facts vector reads `value` without a call: READ_CALL (call it), READ_STATE
        (the value is the state) or READ_DAYS_SINCE (today minus the state). A subclass
        that changes `value` says so here too."""
        return READ_CALL

    def dump_state(self, state: Any) -> Any:
        """The state as data for `sopkit._runtime.codec.encode` (the shapes: the module's table)."""
        return state

    def load_state(self, data: Any) -> Any:
        """The state `dump_state` gave, from that data as `sopkit._runtime.codec.decode` read it."""
        try:
            return self._load(data)
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise StateError(f"metric {self.name!r} ({self.kind}): unreadable stored state "
                             f"{data!r} ({exc})") from None

    def _load(self, data: Any) -> Any:
        return data

    def next_change(self, state: Any) -> int | None:
        """The instant the window's oldest event leaves it, for windowed metrics."""
        if self.window is None or not len(state):
            return None
        return int(state.stamps[state.head]) + self.window

    def evict(self, state: Any, now: int) -> None:
        """Drop the events that have left the window by `now` (now - ts >= window)."""
        assert self.window is not None
        stamps = state.stamps
        head = state.head
        cutoff = now - self.window
        if head < len(stamps) and stamps[head] <= cutoff:  # most reads find nothing to drop
            state.drop(bisect_right(stamps, cutoff, head) - head)

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
        stamps = state.stamps
        start = self.position(self.value(state, now, 0, {}), thresholds, boundaries)
        last = len(stamps) - 1
        for i, value in enumerate(self.departures(state), state.head):
            if i < last and stamps[i + 1] == stamps[i]:
                continue  # events with one timestamp leave together
            if self.position(value, thresholds, boundaries) != start:
                return int(stamps[i]) + self.window
        return None

    def position(self, value: Any, thresholds: list[float],
                 boundaries: list[int]) -> tuple[int, ...] | None:
        """Where a value stands against a condition's constants: what a crossing changes."""
        if value is None:
            return None
        if self.integral:
            return tuple(int(value > b) for b in boundaries)
        number = float(value) if isinstance(value, Decimal) else value
        return tuple((number > c) - (number < c) for c in thresholds)

    def departures(self, state: Any) -> Iterator[Any]:
        """The window's value after its oldest event leaves, the two oldest, and so on."""
        raise NotImplementedError


class Count(Metric):
    kind = "count"
    integral = True
    plain_state = True  # an int, or {"stamps": [int, ...]}

    def new(self) -> Any:
        return Stamps() if self.window else 0

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        if self.window:
            self.evict(state, ts)
            state.add(ts)
            return state
        return state + 1

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        window = self.window
        if window:
            stamps = state.stamps
            head = state.head
            if head < len(stamps) and stamps[head] <= now - window:  # `evict`, inlined
                state.drop(bisect_right(stamps, now - window, head) - head)
                head = state.head
            return len(stamps) - head
        return state

    def reading(self) -> int:
        return READ_CALL if self.window else READ_STATE

    def dump_state(self, state: Any) -> Any:
        if not self.window:
            return state
        return {"stamps": state.stamps[state.head:].tolist()}

    def _load(self, data: Any) -> Any:
        if not self.window:
            if type(data) is not int:
                raise TypeError("a count is an int")
            return data
        state = Stamps()
        state.stamps = _stamps(data)
        return state

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
        return int(state.stamps[state.head + n - max(below) - 1]) + self.window


def _stamps(data: dict[str, Any]) -> array[int]:
    stamps = data["stamps"]
    if not all(type(ts) is int for ts in stamps):
        raise TypeError("timestamps are ints")
    if any(a > b for a, b in pairwise(stamps)):
        raise ValueError("timestamps are oldest first")
    return array("q", stamps)


class Sum(Metric):
    kind = "sum"

    def new(self) -> Any:
        return Sums() if self.window else [0, 0]

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

    def dump_state(self, state: Any) -> Any:
        if not self.window:
            return {"total": state[0], "count": state[1]}
        values = state.live_values()
        return {"stamps": state.stamps[state.head:].tolist(),
                "values": [unpack(v) for v in values] if isinstance(values, array)
                else list(values),
                "total": state.total}

    def _load(self, data: Any) -> Any:
        total = data["total"]
        if not isinstance(total, int | float | Decimal) or isinstance(total, bool):
            raise TypeError("a total is a number")
        if not self.window:
            if type(data["count"]) is not int:
                raise TypeError("a count is an int")
            return [total, data["count"]]
        state = Sums()
        state.stamps = _stamps(data)
        values = data["values"]
        if len(values) != len(state.stamps) or not all(
                isinstance(v, int | float | Decimal) and not isinstance(v, bool)
                for v in values):
            raise ValueError("one number a timestamp")
        packed = [pack(v) for v in values]
        state.values = list(values) if None in packed else array("q", packed)  # type: ignore[arg-type]  # no None left
        state.total = total
        return state

    def totals(self, state: Any, now: int) -> tuple[Any, int]:
        if self.window:
            self.evict(state, now)
            return state.total, len(state)
        return state[0], state[1]

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        window = self.window
        if window:
            stamps = state.stamps
            head = state.head
            if head < len(stamps) and stamps[head] <= now - window:  # `evict`, inlined
                state.drop(bisect_right(stamps, now - window, head) - head)
            return state.total
        return state[0]

    def next_crossing(self, state: Any, now: int, thresholds: list[float],
                      boundaries: list[int]) -> int | None:
        """With no negative value the total only falls: it first changes place against the
        constants when it reaches the highest one at or below it (or, standing on it, drops
        under it). A long window finds that departure by bisection over exact prefix sums,
        and with refunds (negative values) skips the departures that cannot cross."""
        if self.window is None:
            return None
        self.evict(state, now)
        values = state.values
        if not isinstance(values, array):
            return super().next_crossing(state, now, thresholds, boundaries)
        exact = state.exact_sums() if len(state) > _LONG else None  # may compact
        head = state.head
        frame = None if exact is None else exact_frame(state, exact)
        if exact is not None and frame is not None:
            if exact.negatives:
                return skipping_walk(self, state, exact, frame, now, thresholds, boundaries)
        elif len(state) and min(values[head:]) < 0:
            return super().next_crossing(state, now, thresholds, boundaries)
        total = state.total
        current = float(total)
        under = [c for c in thresholds if c <= current]
        if not under:
            return None
        limit = max(under)

        def crosses(value: float) -> bool:
            return value < limit or (value == limit and current > limit)

        stamps = state.stamps
        window = self.window
        if exact is None or frame is None:  # the total as the walk from the oldest computes it
            last = len(stamps) - 1
            for i in range(head, last + 1):
                total -= unpack(values[i])
                if i < last and stamps[i + 1] == stamps[i]:
                    continue
                if crosses(float(total)):
                    return int(stamps[i]) + window
            return None
        # the total falls with each departure: bisect for the first after which it crosses
        now_total, scale, factor = frame
        lo, hi = head, len(stamps) - 1
        if not crosses(exact_float(now_total - state.departed(exact, hi) * factor, scale)):
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            if crosses(exact_float(now_total - state.departed(exact, mid) * factor, scale)):
                hi = mid
            else:
                lo = mid + 1
        return int(stamps[lo]) + window

    def departures(self, state: Any) -> Iterator[Any]:
        total = state.total
        values = state.live_values()
        for value in map(unpack, values) if isinstance(values, array) else values:
            total -= value
            yield total


class Avg(Sum):
    kind = "avg"

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        total, n = self.totals(state, now)
        return None if n == 0 else Decimal(total) / n

    def next_crossing(self, state: Any, now: int, thresholds: list[float],
                      boundaries: list[int]) -> int | None:
        """Not monotone: every departure may cross, but on a long window those that cannot
        are skipped (`sopkit._runtime.windows.skipping_walk`)."""
        if self.window is None:
            return None
        self.evict(state, now)
        if isinstance(state.values, array) and len(state) > _LONG:
            exact = state.exact_sums()
            frame = None if exact is None else exact_frame(state, exact)
            if exact is not None and frame is not None:
                return skipping_walk(self, state, exact, frame, now, thresholds, boundaries)
        return Metric.next_crossing(self, state, now, thresholds, boundaries)

    def departures(self, state: Any) -> Iterator[Any]:
        left = len(state)
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
    plain_state = True  # the day ordinal, or None

    def _load(self, data: Any) -> Any:
        if data is not None and type(data) is not int:
            raise TypeError("a day ordinal is an int")
        return data

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        return state if (self.first and state is not None) else day

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        return None if state is None else today - state

    def reading(self) -> int:
        return READ_DAYS_SINCE

    def anchor(self, state: Any, profile: dict[str, Any]) -> int | None:
        return state  # type: ignore[no-any-return]  # the day ordinal of the event


class DaysSinceFirst(DaysSince):
    kind = "days_since_first"
    first = True


class _FromProfile(Metric):
    """A metric read from a profile date: it keeps no state (always None)."""

    plain_state = True

    def _load(self, data: Any) -> Any:
        if data is not None:
            raise TypeError("this metric keeps no state")
        return data


class DaysUntil(_FromProfile):
    """Whole days from today until a profile date (negative once it has passed)."""

    kind = "days_until"

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        date = profile.get(self.attribute or "")
        return None if date is None else date.toordinal() - today


class DaysToAnniversary(_FromProfile):
    """Days until the next anniversary of a profile date, 0 on the day itself; in the
    Gregorian calendar, or the lunar one (`calendar`, docs/calendar.md)."""

    kind = "days_to_anniversary"

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__(spec)
        self.calendar: str = spec.get("calendar") or "gregorian"
        # the longest gap between two anniversaries: a lunar year has up to 385 days
        self.longest = 366 if self.calendar == "gregorian" else 385
        # `value`'s answers for one day: (month, day) -> days to go, or the whole date for a
        # lunar_of_birth reading (its leap months depend on the year); every customer read
        # on that day shares them. A pure cache: the answer depends on nothing else.
        self._today: int | None = None
        self._known: dict[Any, int | None] = {}

    def anniversary(self, date: Any, today: int) -> int | None:
        """The day ordinal of the first anniversary of `date` on or after `today`; None for
        a date that has no lunar reading (a 31st read as lunar, a year outside 1900–2099)."""
        if self.calendar == "gregorian":
            return anniversary_on_or_after(date.month, date.day, today)
        month, day = date.month, date.day
        try:
            if self.calendar == "lunar_of_birth":  # a leap-month birth: the regular month
                _, month, day, _ = cncal.lunar_of(date)
            elif day > 30:
                return None
            return cncal.lunar_anniversary_on_or_after(month, day, today)
        except cncal.CalendarRangeError:
            return None

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        date = profile.get(self.attribute or "")
        if date is None:
            return None
        if today != self._today:
            self._today = today
            self._known = {}
        key = date if self.calendar == "lunar_of_birth" else (date.month, date.day)
        known = self._known
        if key in known:
            return known[key]
        found = self.anniversary(date, today)
        days = known[key] = None if found is None else found - today
        return days


class MaxCountPerKey(Metric):
    """The largest number of events sharing one value of `field` within the window."""

    kind = "max_count_per_key"
    integral = True

    def new(self) -> Any:
        return Keys()

    def observe(self, state: Any, ts: int, day: int, fields: dict[str, Any]) -> Any:
        key = fields.get(self.field or "")
        self.evict(state, ts)
        if key is not None:
            state.add(ts, key)
        return state

    def value(self, state: Any, now: int, today: int, profile: dict[str, Any]) -> Any:
        self.evict(state, now)
        return len(state.tally)

    def dump_state(self, state: Any) -> Any:
        return {"stamps": state.stamps[state.head:].tolist(), "keys": state.keys[state.head:]}

    def _load(self, data: Any) -> Any:
        stamps = _stamps(data)
        keys = data["keys"]
        if len(keys) != len(stamps) or any(key is None for key in keys):
            raise ValueError("one key a timestamp")
        state = Keys()
        for ts, key in zip(stamps, keys, strict=True):
            state.add(ts, key)
        return state

    def next_crossing(self, state: Any, now: int, thresholds: list[float],
                      boundaries: list[int]) -> int | None:
        """The largest count only falls as events leave: it crosses the highest boundary b
        below it at the first departure after which no key has more than b events. Searched
        from both ends at once: from the oldest, until the keys counted more than b times are
        all down to b; from the newest, until some key is seen b + 1 times (that event is the
        last to leave before the crossing)."""
        if self.window is None:
            return None
        self.evict(state, now)
        tally = state.tally
        below = [b for b in boundaries if 0 <= b < len(tally)]
        if not below:
            return None
        b = max(below)
        counts, keys, stamps, window = state.counts, state.keys, state.stamps, self.window
        over = sum(tally[b:])  # keys with more than b events
        gone: dict[Any, int] = {}
        seen: dict[Any, int] = {}
        h, i = state.head, len(keys) - 1
        while True:
            key = keys[h]
            left = gone[key] = gone.get(key, 0) + 1
            if counts[key] - left == b:
                over -= 1
                if not over:
                    return int(stamps[h]) + window
            h += 1
            key = keys[i]
            found = seen[key] = seen.get(key, 0) + 1
            if found > b:
                return int(stamps[i]) + window
            i -= 1

    def departures(self, state: Any) -> Iterator[Any]:
        counts = dict(state.counts)
        tally = list(state.tally)
        for key in state.keys[state.head:]:
            count = counts[key]
            counts[key] = count - 1
            tally[count - 1] -= 1
            if count > 1:
                tally[count - 2] += 1
            if count == len(tally) and not tally[-1]:
                tally.pop()
            yield len(tally)


KINDS: dict[str, type[Metric]] = {
    cls.kind: cls
    for cls in (Count, Sum, Avg, Last, DaysSince, DaysSinceFirst, DaysUntil, DaysToAnniversary,
                MaxCountPerKey)
}


def build(spec: Mapping[str, Any]) -> Metric:
    return KINDS[spec["kind"]](spec)
