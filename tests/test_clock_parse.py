"""Issue 17: a record's time is read by arithmetic where its offset is certain, and gives the
same timestamp, or the same error, as the `datetime` way it was read before: in DST zones,
in their gaps and folds, at Lord Howe's 30-minute shift, and at the ends of the range."""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopkit._lang.clock import _ASKED_BEFORE as ASKED_BEFORE
from sopkit._lang.clock import FIRST_YEAR, LAST_YEAR, Calendar, TimeRangeError

EXAMPLES = int(os.environ.get("SOPKIT_FUZZ_EXAMPLES", "300"))
ZONES = ("America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Shanghai")
_EARLIEST = int(dt.datetime(FIRST_YEAR, 1, 1, tzinfo=dt.UTC).timestamp())
_LATEST = int(dt.datetime(LAST_YEAR + 1, 1, 1, tzinfo=dt.UTC).timestamp()) - 1
CALENDARS = {(zone, minutes): Calendar(zone, minutes) for zone in ZONES for minutes in (0, 540)}


def _before(cal: Calendar, text: str) -> int | str:
    """How sopkit read a date-time before issue 17 (the formula kept here as the oracle)."""
    text = text.strip()
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=cal.tz)
        ts = int(value.timestamp())
    except OverflowError:
        return "out of range"
    except ValueError as exc:
        return f"ValueError: {exc}"
    return ts if _EARLIEST <= ts <= _LATEST else "out of range"


def _now(cal: Calendar, text: str) -> int | str:
    """`cal.parse(text)`, asked often enough that its day's offset is looked up and used."""
    answers = set()
    for _ in range(ASKED_BEFORE + 1):
        try:
            answers.add(cal.parse(text))
        except TimeRangeError:
            answers.add("out of range")
        except ValueError as exc:
            answers.add(f"ValueError: {exc}")
    assert len(answers) == 1, (text, answers)
    return answers.pop()


def _transitions(zone: str, year: int) -> list[int]:
    """The instants in `year` (UTC) at which `zone` changes its offset, to the second."""
    tz = zoneinfo.ZoneInfo(zone)
    start = int(dt.datetime(year, 1, 1, tzinfo=dt.UTC).timestamp())

    def offset(ts: int) -> dt.timedelta | None:
        return dt.datetime.fromtimestamp(ts, tz).utcoffset()

    found = []
    for day in range(366):
        low, high = start + day * 86400, start + (day + 1) * 86400
        if offset(low) == offset(high):
            continue
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
        found.append(high)
    return found


@pytest.mark.parametrize("zone", ZONES)
def test_every_minute_around_each_transition_reads_as_before(zone: str) -> None:
    """Naive times every minute (and second) from 3 hours before to 3 hours after each change
    of offset, in years from 1900 to 2999, read exactly as before."""
    cal = Calendar(zone)
    checked = 0
    for year in (1900, 1919, 1942, 1971, 1990, 2008, 2024, 2037, 2038, 2100, 2999):
        for instant in _transitions(zone, year):
            for ts in (instant - 1, instant, instant + 1):  # either side of the change, by UTC
                local = dt.datetime.fromtimestamp(ts, cal.tz).replace(tzinfo=None)
                for minutes in range(-180, 181):
                    for second in (0, 59):
                        wall = (local + dt.timedelta(minutes=minutes)).replace(second=second)
                        text = wall.isoformat()
                        assert _now(cal, text) == _before(cal, text), text
                        checked += 1
    assert checked > (0 if zone == "Asia/Shanghai" else 20_000)


_WALL = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23))
_NEAR = st.datetimes(min_value=dt.datetime(FIRST_YEAR - 1, 12, 30),
                     max_value=dt.datetime(LAST_YEAR + 1, 1, 2))
_OFFSET = st.sampled_from(["", "Z", "+08:00", "-05:00", "+05:45", "+14:00", "-12:00",
                           "+00:00", "+08:05:43", "+01:00:00.500000", "-00:30"])


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(sorted(CALENDARS)), _WALL | _NEAR, _OFFSET, st.booleans(),
       st.sampled_from(["T", " "]))
def test_any_time_reads_as_before(key: tuple[str, int], wall: dt.datetime, offset: str,
                                  whole: bool, sep: str) -> None:
    """Any date-time, with or without an offset, a fraction of a second or a space for the T,
    across and beyond the supported years, reads as before: the same timestamp or error."""
    cal = CALENDARS[key]
    if whole:
        wall = wall.replace(microsecond=0)
    text = wall.isoformat(sep) + offset
    assert _now(cal, text) == _before(cal, text), text
    assert _now(cal, f"  {text}\n") == _before(cal, text)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(sorted(CALENDARS)),
       st.integers(min_value=_EARLIEST - 86400, max_value=_LATEST + 86400))
def test_any_instant_written_locally_reads_as_before(key: tuple[str, int], ts: int) -> None:
    """An instant written as the zone's naive local time, or with its offset, reads as
    before; with its offset it reads back as the instant itself."""
    cal = CALENDARS[key]
    local = dt.datetime.fromtimestamp(ts, cal.tz)
    for text in (local.replace(tzinfo=None).isoformat(), local.isoformat()):
        assert _now(cal, text) == _before(cal, text), text
    if _EARLIEST <= ts <= _LATEST:
        assert cal.parse(local.isoformat()) == ts


def test_range_ends_and_malformed_times_are_refused_as_before() -> None:
    """The first and last supported seconds read; a second outside, year 1 with +14:00,
    year 9999 with -12:00 and malformed times fail as before."""
    texts = ["1900-01-01T00:00:00Z", "1899-12-31T23:59:59Z", "2999-12-31T23:59:59Z",
             "3000-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00",
             "0001-01-01T00:00:00", "9999-12-31T23:59:59", "1900-01-01T07:00:00",
             "2999-12-31T23:30:00", "2024-13-01T00:00:00", "2024-01-01T24:00:00",
             "2024-01-01T08:00:13+8", "2024-01-01 08:00", "2024-01-01T08", "2024-01-01",
             "", "Z", "2024-01-01T08:00:13ZZ", "２０２４-01-01T08:00:00", "2024-01-01T08:00:13z"]
    for cal in CALENDARS.values():
        for text in texts:
            assert _now(cal, text) == _before(cal, text), text
    assert isinstance(_now(CALENDARS["Asia/Shanghai", 0], "1900-01-01T07:00:00"), str)
