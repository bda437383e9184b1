"""Calendar arithmetic in the playbook's timezone, on whole-second UTC timestamps.

A *day* starts at the playbook's `day_starts` local time; `day_index(ts)` is the ordinal of
the local date that instant belongs to. Day-based metrics change only at day starts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import zoneinfo


class Calendar:
    """Converts between timestamps, local times and day ordinals for one playbook."""

    def __init__(self, timezone: str, day_starts_minutes: int = 0) -> None:
        self.tz = zoneinfo.ZoneInfo(timezone)
        self.shift = dt.timedelta(minutes=day_starts_minutes)
        self.day_start = functools.lru_cache(maxsize=4096)(self._day_start)
        # the last day `day_index` answered: [start, next start) -> ordinal; events come in
        # time order, so most calls fall in it
        self._span: tuple[int, int, int] = (0, 0, 0)

    def parse(self, text: str) -> int:
        """An ISO 8601 date or date-time as a timestamp; no offset means the playbook's zone."""
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.tz)
        return int(value.timestamp())

    def local(self, ts: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ts, self.tz)

    def format(self, ts: int) -> str:
        """A timestamp as local ISO 8601 with its offset, e.g. 2024-05-01T09:00:00+08:00."""
        return self.local(ts).isoformat()

    def day_index(self, ts: int) -> int:
        """The ordinal of the playbook day that contains `ts`: the last day start <= ts.

        Wall-clock arithmetic alone would step back a day inside a DST fall-back hour.
        """
        start, end, day = self._span
        if start <= ts < end:
            return day
        day = self._day_of(ts)
        with contextlib.suppress(OverflowError, ValueError):  # the last day: not remembered
            self._span = (self.day_start(day), self.day_start(day + 1), day)
        return day

    def _day_of(self, ts: int) -> int:
        guess = (self.local(ts) - self.shift).date().toordinal()
        if self.day_start(guess) > ts:
            return guess - 1
        if self.day_start(guess + 1) <= ts:
            return guess + 1
        return guess

    def _day_start(self, ordinal: int) -> int:
        day = dt.date.fromordinal(ordinal)
        naive = dt.datetime.combine(day, dt.time()) + self.shift
        return int(naive.replace(tzinfo=self.tz).timestamp())


def anniversary(birth: dt.date, year: int) -> dt.date:
    """The anniversary of `birth` in `year`; 29 February falls on 28 February in other years."""
    try:
        return birth.replace(year=year)
    except ValueError:
        return dt.date(year, 2, 28)


def next_anniversary(birth: dt.date, today: dt.date) -> dt.date:
    """The first anniversary of `birth` on or after `today`."""
    this_year = anniversary(birth, today.year)
    return this_year if this_year >= today else anniversary(birth, today.year + 1)


@functools.lru_cache(maxsize=1 << 14)
def anniversary_on_or_after(month: int, day: int, today: int) -> int:
    """The day ordinal of the first anniversary of (month, day) on or after day `today`.

    Cached: on any one day, a million customers share at most 366 answers (the cache holds
    about 44 days of them, time moves forward).
    """
    birth = dt.date(2000, month, day)  # a leap year, so 29 February keeps its day
    return next_anniversary(birth, dt.date.fromordinal(today)).toordinal()
