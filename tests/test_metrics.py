"""Unit tests of the incremental metrics (_runtime.metrics) and the calendar (_lang.clock)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from sopkit._lang.clock import Calendar, anniversary, next_anniversary
from sopkit._runtime import crossings as _crossings
from sopkit._runtime import metrics as _metrics

DAY = 86_400
T0 = 1_704_074_400  # 2024-01-01T10:00:00+08:00
SHANGHAI = Calendar("Asia/Shanghai", 9 * 60)  # day_starts 09:00


def metric(kind: str, *, event: str | None = "purchase", field: str | None = None,
           attribute: str | None = None, window: int | None = None) -> _metrics.Metric:
    return _metrics.build({"name": f"m_{kind}", "kind": kind, "event": event, "field": field,
                           "attribute": attribute, "window": window})


def ordinal(text: str) -> int:
    return dt.date.fromisoformat(text).toordinal()


# ---- windows ------------------------------------------------------------------------------


def test_count_window_keeps_events_younger_than_the_window() -> None:
    """A windowed count holds an event while now - ts < window and drops it at ts + window."""
    m = metric("count", window=7 * DAY)
    state = m.new()
    for k in range(3):
        state = m.observe(state, T0 + k * DAY, 0, {})
    assert m.value(state, T0 + 7 * DAY - 1, 0, {}) == 3
    assert m.next_change(state) == T0 + 7 * DAY
    assert m.value(state, T0 + 7 * DAY, 0, {}) == 2
    assert m.next_change(state) == T0 + 8 * DAY
    assert m.value(state, T0 + 30 * DAY, 0, {}) == 0
    assert m.next_change(state) is None


def test_count_without_window_never_changes_by_itself() -> None:
    """An unwindowed count is a plain running total with no scheduled change."""
    m = metric("count")
    state = m.new()
    for k in range(4):
        state = m.observe(state, T0 + k * DAY, 0, {})
    assert m.value(state, T0 + 1000 * DAY, 0, {}) == 4
    assert m.next_change(state) is None


def test_sum_window_subtracts_dropped_amounts() -> None:
    """A windowed sum keeps an exact decimal total and subtracts amounts as they leave."""
    m = metric("sum", field="amount", window=7 * DAY)
    state = m.new()
    state = m.observe(state, T0, 0, {"amount": Decimal("0.10")})
    state = m.observe(state, T0 + DAY, 0, {"amount": Decimal("0.20")})
    state = m.observe(state, T0 + 2 * DAY, 0, {})  # no amount: not counted
    assert m.value(state, T0 + 2 * DAY, 0, {}) == Decimal("0.30")
    assert m.next_change(state) == T0 + 7 * DAY
    assert m.value(state, T0 + 7 * DAY, 0, {}) == Decimal("0.20")
    assert m.value(state, T0 + 8 * DAY, 0, {}) == 0


def test_avg_window_is_none_when_empty() -> None:
    """A windowed average is None before any event and after they all left."""
    m = metric("avg", field="amount", window=DAY)
    state = m.new()
    assert m.value(state, T0, 0, {}) is None
    state = m.observe(state, T0, 0, {"amount": Decimal(10)})
    state = m.observe(state, T0 + 1, 0, {"amount": Decimal(20)})
    assert m.value(state, T0 + 1, 0, {}) == Decimal(15)
    assert m.value(state, T0 + DAY + 1, 0, {}) is None


def test_max_count_per_key_evicts_per_key() -> None:
    """max_count_per_key is the largest per-key count in the window, updated as events leave."""
    m = metric("max_count_per_key", event="browse", field="item", window=7 * DAY)
    state = m.new()
    for k, item in enumerate(["A", "B", "A", "B", "A"]):
        state = m.observe(state, T0 + k * DAY, 0, {"item": item})
    assert m.value(state, T0 + 4 * DAY, 0, {}) == 3
    assert m.value(state, T0 + 7 * DAY, 0, {}) == 2  # the first A left
    assert m.value(state, T0 + 10 * DAY, 0, {}) == 1  # only the last A remains
    assert m.value(state, T0 + 11 * DAY, 0, {}) == 0
    assert dict(state.counts) == {}


def test_last_keeps_the_latest_value() -> None:
    """`last` holds the most recent value of the field, ignoring events without it."""
    m = metric("last", field="level")
    state = m.new()
    state = m.observe(state, T0, 0, {"level": 3})
    state = m.observe(state, T0 + 1, 0, {})
    assert m.value(state, T0 + 2, 0, {}) == 3


# ---- day-based metrics ------------------------------------------------------------------------


def test_days_since_last_and_first() -> None:
    """days_since counts whole days from the last event, days_since_first from the first one."""
    last, first = metric("days_since"), metric("days_since_first")
    s_last, s_first = last.new(), first.new()
    assert last.value(s_last, T0, ordinal("2024-01-01"), {}) is None
    for day in ("2024-01-01", "2024-01-10"):
        s_last = last.observe(s_last, T0, ordinal(day), {})
        s_first = first.observe(s_first, T0, ordinal(day), {})
    today = ordinal("2024-01-31")
    assert last.value(s_last, 0, today, {}) == 21
    assert first.value(s_first, 0, today, {}) == 30


def test_days_until_goes_negative_after_the_date() -> None:
    """days_until a profile date counts down to 0 and below; None without the date."""
    m = metric("days_until", event=None, attribute="expires")
    profile = {"expires": dt.date(2024, 6, 30)}
    assert m.value(None, 0, ordinal("2024-06-15"), profile) == 15
    assert m.value(None, 0, ordinal("2024-07-02"), profile) == -2
    assert m.value(None, 0, ordinal("2024-06-15"), {}) is None


@pytest.mark.parametrize(("birthday", "today", "expected"), [
    ("1990-05-20", "2024-05-17", 3),
    ("1990-05-20", "2024-05-20", 0),
    ("1990-05-20", "2024-05-21", 364),  # next year's; 2025 is not a leap year
    ("2000-02-29", "2023-02-25", 3),  # non-leap year: 28 February
    ("2000-02-29", "2023-02-28", 0),
    ("2000-02-29", "2024-02-26", 3),  # leap year: 29 February itself
    ("2000-02-29", "2024-02-28", 1),
    ("2000-02-29", "2024-03-01", 364),  # next is 2025-02-28
])
def test_days_to_anniversary(birthday: str, today: str, expected: int) -> None:
    """Days until the next anniversary, 0 on the day; 29 February is 28 February in other years."""
    m = metric("days_to_anniversary", event=None, attribute="birthday")
    profile = {"birthday": dt.date.fromisoformat(birthday)}
    assert m.value(None, 0, ordinal(today), profile) == expected


def test_anniversary_helpers() -> None:
    """anniversary() and next_anniversary() move 29 February to 28 February outside leap years."""
    leap = dt.date(2000, 2, 29)
    assert anniversary(leap, 2023) == dt.date(2023, 2, 28)
    assert anniversary(leap, 2024) == dt.date(2024, 2, 29)
    assert next_anniversary(leap, dt.date(2023, 3, 1)) == dt.date(2024, 2, 29)
    assert next_anniversary(leap, dt.date(2024, 2, 29)) == dt.date(2024, 2, 29)
    assert next_anniversary(leap, dt.date(2024, 3, 1)) == dt.date(2025, 2, 28)


# ---- next_day_crossing: the wake-up scheduler's question -----------------------------------


def test_next_day_crossing_days_since() -> None:
    """days_since >= 90 (boundary 89) and > 90 (boundary 90) wake at anchor+90, +91, then never."""
    m = metric("days_since")
    anchor = ordinal("2024-01-01")
    state = m.observe(m.new(), T0, anchor, {})
    crossing = _crossings.next_day_crossing
    assert crossing(m, state, {}, anchor, [89, 90], False) == anchor + 90
    assert crossing(m, state, {}, anchor + 89, [89, 90], False) == anchor + 90
    assert crossing(m, state, {}, anchor + 90, [89, 90], False) == anchor + 91
    assert crossing(m, state, {}, anchor + 91, [89, 90], False) is None
    assert crossing(m, state, {}, anchor + 2000, [89, 90], False) is None
    assert crossing(m, state, {}, anchor, [29, 60], False) == anchor + 30  # >= 30
    assert crossing(m, state, {}, anchor + 31, [29, 60], False) == anchor + 61  # > 60.5
    assert crossing(m, m.new(), {}, anchor, [89, 90], False) is None  # no event yet


def test_next_day_crossing_days_until() -> None:
    """days_until == 15 (boundaries 14, 15) wakes the day it becomes 15 and the day after."""
    m = metric("days_until", event=None, attribute="expires")
    profile = {"expires": dt.date(2024, 6, 30)}
    target = ordinal("2024-06-30")
    crossing = _crossings.next_day_crossing
    assert crossing(m, None, profile, ordinal("2024-01-01"), [14, 15], False) == target - 15
    assert crossing(m, None, profile, target - 15, [14, 15], False) == target - 14
    assert crossing(m, None, profile, target - 14, [14, 15], False) is None
    assert crossing(m, None, {}, ordinal("2024-01-01"), [14, 15], False) is None


@pytest.mark.parametrize(("today", "expected"), [
    ("2023-01-01", "2023-02-25"),  # 3 days before 28 February
    ("2023-02-25", "2023-02-26"),  # the value leaves 3
    ("2023-02-26", "2023-03-01"),  # the day after the anniversary (0 -> 364 or so)
    ("2023-03-01", "2024-02-26"),  # leap year: 3 days before 29 February
])
def test_next_day_crossing_anniversary_of_29_february(today: str, expected: str) -> None:
    """A 29 February anniversary == 3 wakes on 25 Feb in common years and 26 Feb in leap years."""
    m = metric("days_to_anniversary", event=None, attribute="birthday")
    profile = {"birthday": dt.date(2000, 2, 29)}
    found = _crossings.next_day_crossing(m, None, profile, ordinal(today), [2, 3], False)
    assert found is not None
    assert dt.date.fromordinal(found).isoformat() == expected


def test_next_day_crossing_any_day_and_untimed_metrics() -> None:
    """With arithmetic over a day metric (any_day) or a non-day metric, the answer is tomorrow."""
    days = metric("days_since")
    state = days.observe(days.new(), T0, 100, {})
    assert _crossings.next_day_crossing(days, state, {}, 150, [], True) == 151
    count = metric("count")
    assert _crossings.next_day_crossing(count, count.new(), {}, 150, [2, 3], False) == 151


# ---- calendar -------------------------------------------------------------------------------


def test_day_index_follows_day_starts() -> None:
    """With day_starts 09:00, 08:59:59 belongs to the previous day and 09:00 to the new one."""
    before = SHANGHAI.parse("2024-01-01T08:59:59")
    at = SHANGHAI.parse("2024-01-01T09:00:00")
    assert SHANGHAI.day_index(before) == ordinal("2023-12-31")
    assert SHANGHAI.day_index(at) == ordinal("2024-01-01")
    assert Calendar("Asia/Shanghai").day_index(before) == ordinal("2024-01-01")


def test_day_start_is_the_first_instant_of_its_day() -> None:
    """day_start(d) is at day_starts local time and day_index agrees on both sides of it."""
    for day in range(ordinal("2023-12-25"), ordinal("2024-03-10")):
        start = SHANGHAI.day_start(day)
        assert SHANGHAI.format(start).endswith("T09:00:00+08:00")
        assert SHANGHAI.day_index(start) == day
        assert SHANGHAI.day_index(start - 1) == day - 1


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-01-01T10:00:00", "2024-01-01T10:00:00+08:00"),  # no offset: the playbook's zone
    ("2024-01-01T10:00:00+08:00", "2024-01-01T10:00:00+08:00"),
    ("2024-01-01T02:00:00Z", "2024-01-01T10:00:00+08:00"),
    ("2024-01-01T03:00:00+01:00", "2024-01-01T10:00:00+08:00"),
    ("2024-01-01", "2024-01-01T00:00:00+08:00"),  # a bare date is local midnight
])
def test_parse_with_and_without_offset(text: str, expected: str) -> None:
    """parse reads an ISO 8601 time; without an offset it is in the playbook's timezone."""
    assert SHANGHAI.format(SHANGHAI.parse(text)) == expected


def test_parse_rejects_garbage() -> None:
    """parse raises ValueError for text that is not ISO 8601."""
    with pytest.raises(ValueError):
        SHANGHAI.parse("01/02/2024 10:00")


def test_day_index_never_goes_back_across_a_dst_change() -> None:
    """In a DST zone with day_starts 01:30, day_index is monotonic through the repeated hour."""
    cal = Calendar("America/New_York", 90)
    start = dt.datetime(2024, 11, 3, 4, 0, tzinfo=dt.UTC)  # 00:00 EDT, before the change
    seen: list[Any] = []
    for minutes in range(0, 4 * 60, 15):
        seen.append(cal.day_index(int((start + dt.timedelta(minutes=minutes)).timestamp())))
    assert seen == sorted(seen)
