"""Calendar arithmetic in the playbook's timezone, on whole-second UTC timestamps.

A *day* starts at the playbook's `day_starts` local time; `day_index(ts)` is the ordinal of
the local date that instant belongs to. Day-based metrics change only at day starts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
import zoneinfo
from typing import TypeVar

# Event and option times must fall in these years (UTC): far enough from year 1 and year
# 9999 that day arithmetic, schedules and local times around them never leave `datetime`.
FIRST_YEAR, LAST_YEAR = 1900, 2999
_EARLIEST = int(dt.datetime(FIRST_YEAR, 1, 1, tzinfo=dt.UTC).timestamp())
_LATEST = int(dt.datetime(LAST_YEAR + 1, 1, 1, tzinfo=dt.UTC).timestamp()) - 1
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
_HOUR = dt.timedelta(hours=1)
_T = TypeVar("_T")
_ASKED_BEFORE = 16  # naive times of a day read the usual way before its offset is looked up
_OFFSETS_KEPT = 1 << 16  # local days, and hours, whose offset a Calendar remembers
_FORMATTED_KEPT = 1 << 12  # timestamps whose `local` and `format` a Calendar remembers


def _kept(table: dict[int, _T], ts: int, value: _T) -> _T:
    """Remember `value` for `ts` in a bounded table (emptied when full); return it."""
    if len(table) >= _FORMATTED_KEPT:
        table.clear()
    table[ts] = value
    return value


class TimeRangeError(ValueError):
    """A well-formed time outside the supported years (FIRST_YEAR to LAST_YEAR)."""


class Calendar:
    """Converts between timestamps, local times and day ordinals for one playbook."""

    def __init__(self, timezone: str, day_starts_minutes: int = 0) -> None:
        self.tz = zoneinfo.ZoneInfo(timezone)
        self.shift = dt.timedelta(minutes=day_starts_minutes)
        self.day_start = functools.lru_cache(maxsize=4096)(self._day_start)
        # local day (date ordinal) -> its one UTC offset in seconds; on a day when the offset
        # changes, local hour (ordinal * 24 + hour) -> the same, None near the change (a DST
        # gap or fold): naive times are localized by arithmetic
        self._days: dict[int, int] = {}
        self._hours: dict[int, int | None] = {}
        self._changing: set[int] = set()  # days whose offset changes
        self._asked: dict[int, int] = {}  # days not yet looked at: how often asked about
        self._formatted: dict[int, str] = {}  # `format`'s answers, by timestamp
        self._locals: dict[int, dt.datetime] = {}  # `local`'s
        # the last day `day_index` answered: [start, next start) -> ordinal; events come in
        # time order, so most calls fall in it
        self._span: tuple[int, int, int] = (0, 0, 0)

    def parse(self, text: str) -> int:
        """An ISO 8601 date or date-time as a timestamp; no offset means the playbook's zone,
        and a date alone means 00:00 (command-line times such as `--end 2024-07-01`).

        ValueError if unreadable; TimeRangeError (a ValueError) outside the years
        FIRST_YEAR to LAST_YEAR.
        """
        return self._parse(text, day_start=False)

    def parse_ts(self, text: str) -> int:
        """`parse` for a record's `ts`: a date alone (2024-05-01) is the start of that
        playbook day, its `day_starts` instant, so that date-only data counts calendar days
        (midnight would belong to the day before when days start at 09:00)."""
        return self._parse(text, day_start=True)

    def _parse(self, text: str, day_start: bool) -> int:
        text = text.strip()
        if day_start and len(text) == 10 and _DATE_ONLY.fullmatch(text):
            day = dt.date.fromisoformat(text)
            if not FIRST_YEAR <= day.year <= LAST_YEAR:
                raise TimeRangeError(_out_of_range(text))
            return self.day_start(day.toordinal())
        try:
            ts = self._timestamp(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00, before year 1 in UTC
            raise TimeRangeError(_out_of_range(text)) from None
        if not _EARLIEST <= ts <= _LATEST:
            raise TimeRangeError(_out_of_range(text))
        return ts

    def _timestamp(self, value: dt.datetime) -> int:
        """`int(value.timestamp())`, a naive `value` taken in the playbook's zone (fold 0).

        A naive time in whole seconds is computed in integers with its local day's remembered
        UTC offset (whole seconds too), or on a day when the offset changes its hour's,
        unless that hour is near the change: exact, since the float of `timestamp()` holds
        such a count exactly. Anything else (a fraction of a second, a time near a DST gap
        or fold, a day not yet asked about often) goes the way it always went. OverflowError
        only where that way raises it, or for a time it puts out of range.
        """
        if value.tzinfo is None:
            if not value.microsecond:
                day = value.toordinal()
                offset = self._days.get(day)
                if offset is None:
                    offset = self._naive_offset(day, value)
                if offset is not None:
                    return (day - _EPOCH_DAY) * 86400 + value.hour * 3600 + \
                        value.minute * 60 + value.second - offset
            value = value.replace(tzinfo=self.tz)
        return int(value.timestamp())

    def _naive_offset(self, day: int, value: dt.datetime) -> int | None:
        """The UTC offset (seconds) of the naive `value` on local day `day` when it is certain
        by day or by hour (and remembered), else None. A day is looked at once it has been
        asked about _ASKED_BEFORE times, so that a calendar made to read one time does not
        pay for it; a day whose offset changes is then looked at hour by hour."""
        if day not in self._changing:
            asked = self._asked.get(day, 0) + 1
            if asked < _ASKED_BEFORE:
                _keep(self._asked, day, asked)
                return None
            self._asked.pop(day, None)
            offset = self._offset_of(dt.datetime.fromordinal(day), 24)
            if offset is not None:
                _keep(self._days, day, offset)
                return offset
            self._changing.add(day)
        hour = day * 24 + value.hour
        if hour not in self._hours:
            _keep(self._hours, hour, self._offset_of(value.replace(minute=0, second=0), 1))
        return self._hours[hour]

    def _offset_of(self, start: dt.datetime, hours: int) -> int | None:
        """The one UTC offset (seconds) of every naive time in the `hours` from `start`, or
        None when the offset changes anywhere from an hour before to an hour after them (a
        DST gap or fold, a 30-minute shift such as Lord Howe's), looked at every hour (fold
        0 only: the folds differ only where the offset changes). Sound because no zone
        changes its offset twice within an hour: in the tz database the closest two changes
        are four days apart (Africa/Freetown, 1939)."""
        start = start.replace(tzinfo=self.tz)
        offsets: set[dt.timedelta | None] = set()
        try:
            for hour in range(-1, hours + 2):
                offsets.add((start + hour * _HOUR).utcoffset())
        except OverflowError:  # within an hour of year 1 or year 9999: the usual way
            offsets.add(None)
        delta = offsets.pop() if len(offsets) == 1 else None
        return None if delta is None or delta.microseconds else \
            delta.days * 86400 + delta.seconds

    def local(self, ts: int) -> dt.datetime:
        """The local time of a timestamp. Remembered (a datetime is immutable): the actions
        of one wake-up round share their instant (a day start, a delivery time)."""
        found = self._locals.get(ts)
        if found is None:
            found = _kept(self._locals, ts, dt.datetime.fromtimestamp(ts, self.tz))
        return found

    def format(self, ts: int) -> str:
        """A timestamp as local ISO 8601 with its offset, e.g. 2024-05-01T09:00:00+08:00
        (remembered, as `local`)."""
        text = self._formatted.get(ts)
        if text is None:
            text = _kept(self._formatted, ts, self.local(ts).isoformat())
        return text

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


def _keep(kept: dict[int, _T], key: int, offset: _T) -> None:
    if len(kept) >= _OFFSETS_KEPT:
        kept.clear()
    kept[key] = offset


def too_far_ahead(cal: Calendar, ts: int, now: int | None, limit: int | None) -> str | None:
    """Why an event at `ts` is refused as too far in the future of the clock `now` (more than
    `limit` seconds ahead), or None if it is not (or there is no clock or no limit)."""
    if limit is None or now is None or ts <= now + limit:
        return None
    return (f"too far in the future: {cal.format(ts)} is more than {_span(limit)} ahead of "
            f"the clock {cal.format(now)} (--max-future); is the year a typo?")


def _span(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _out_of_range(text: str) -> str:
    return (f"{text!r} is outside the supported time range (years {FIRST_YEAR} to "
            f"{LAST_YEAR}); is the year a typo?")


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
