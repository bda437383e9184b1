"""Campaign schedules: one-off local times (`at`) and recurring ones (`every`), per time zone.

`every` takes a 5-field cron expression (minute hour day-of-month month day-of-week, with
`*`, lists `a,b`, ranges `a-b`, steps `*/n`, `a-b/n`, `a/n`, month and weekday names), one of
the macros `@hourly @daily @weekly @monthly @yearly`, or a simple form:

    daily 09:00          weekly mon 09:00          weekly mon,thu 18:30
    weekly mon-fri 09:00 monthly 1 10:00           monthly 1,15 10:00
    monthly first-workday 10:00   (the first working day of each month: China's holiday
                                   arrangement, docs/calendar.md)

Times are local wall-clock times in the playbook's time zone, computed on the calendar, so a
weekly 09:00 stays 09:00 across daylight-saving changes. A local time that does not exist
(clocks go forward) maps to the same distance after the change (02:30 -> 03:30); one that
occurs twice (clocks go back) fires once, at the first. As in Vixie cron, when both
day-of-month and day-of-week are restricted (neither starts with `*`), a day matching
either fires.

Pure: no sopkit imports, no clock. Errors are CronError with a message and a suggestion.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass

SEARCH_DAYS = 366 * 30  # a schedule that matches no day in 30 years never fires

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = (
    # name, low, high, names (index + offset = value)
    ("minute", 0, 59, None, 0),
    ("hour", 0, 23, None, 0),
    ("day-of-month", 1, 31, None, 0),
    ("month", 1, 12, _MONTHS, 1),
    ("day-of-week", 0, 7, _DAYS, 0),
)
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_SIMPLE = ("daily", "weekly", "monthly")
_ORDER = "the fields are minute hour day-of-month month day-of-week, e.g. \"0 9 * * mon\""
EXAMPLES = ('"weekly mon 09:00"', '"daily 10:00"', '"monthly 1 10:00"', '"0 9 * * 1"')
FIRST_WORKDAY = "first-workday"
IsWorkday = Callable[[dt.date], bool]


def weekday_workday(day: dt.date) -> bool:
    """Monday to Friday: what a schedule counts as working days without a holiday table."""
    return day.weekday() < 5


class CronError(ValueError):
    """A schedule that cannot be read: what is wrong, and a suggestion."""

    def __init__(self, message: str, suggestion: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion


@dataclass(frozen=True)
class Cron:
    """A parsed recurring schedule: the allowed values of each field."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]  # day of month, 1-31
    months: frozenset[int]  # 1-12
    weekdays: frozenset[int]  # 0-6, 0 = Sunday
    any_day: bool  # day-of-month field starts with *
    any_weekday: bool  # day-of-week field starts with *
    first_workday: bool = False  # `monthly first-workday`: only each month's first workday

    def matches_day(self, day: dt.date, is_workday: IsWorkday = weekday_workday) -> bool:
        if day.month not in self.months:
            return False
        if self.first_workday:
            return is_workday(day) and not any(
                is_workday(day.replace(day=d)) for d in range(1, day.day))
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, after: int, tz: dt.tzinfo,
                   is_workday: IsWorkday = weekday_workday) -> int | None:
        """The first firing strictly after unix second `after`, or None within 30 years
        (`is_workday` decides the working days of a `first-workday` schedule)."""
        day = dt.datetime.fromtimestamp(after, tz).date()
        for _ in range(SEARCH_DAYS):
            if self.matches_day(day, is_workday):
                best: int | None = None
                for hour in self.hours:
                    for minute in self.minutes:
                        instant = local_instant(day, hour, minute, tz)
                        if instant > after and (best is None or instant < best):
                            best = instant
                if best is not None:
                    return best
            if day == dt.date.max:
                return None
            day += dt.timedelta(days=1)
        return None


def local_instant(day: dt.date, hour: int, minute: int, tz: dt.tzinfo) -> int:
    """Unix seconds of a local wall-clock time (fold 0: a gap maps forward, an overlap to
    its first occurrence)."""
    return int(dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).timestamp())


def parse_every(text: str) -> Cron:
    """A cron expression, a macro or a simple form; CronError saying what is wrong."""
    raw = " ".join(text.split())
    if not raw:
        raise CronError("empty schedule", "e.g. every = " + " or ".join(EXAMPLES[:2]))
    lowered = raw.lower()
    if lowered.startswith("@"):
        if lowered not in _MACROS:
            raise CronError(f"unknown schedule macro '{raw}'", _closest(lowered, _MACROS)
                            or "macros: " + ", ".join(_MACROS))
        return _parse_cron(_MACROS[lowered], raw)
    first = lowered.split(" ", 1)[0]
    if first.isalpha():
        return _parse_simple(raw, lowered)
    return _parse_cron(lowered, raw)


def _parse_simple(raw: str, text: str) -> Cron:
    words = text.split(" ")
    kind = words[0]
    if kind not in _SIMPLE:
        hint = _closest(kind, _SIMPLE)
        raise CronError(f"cannot read schedule '{raw}': '{words[0]}' is not daily, weekly or "
                        "monthly, and a cron expression starts with the minute",
                        hint or "e.g. " + ", ".join(EXAMPLES))
    want = 2 if kind == "daily" else 3
    if len(words) != want:
        shape = {"daily": "daily HH:MM", "weekly": "weekly DAYS HH:MM (e.g. weekly mon 09:00)",
                 "monthly": "monthly DAYS HH:MM (e.g. monthly 1 10:00, monthly "
                 "first-workday 10:00)"}[kind]
        raise CronError(f"cannot read schedule '{raw}': write {shape}")
    clock = _HHMM.match(words[-1])
    if not clock:
        raise CronError(f"schedule '{raw}': '{words[-1]}' is not a time of day",
                        "write HH:MM (24-hour), e.g. 09:00")
    hour, minute = int(clock.group(1)), int(clock.group(2))
    dom, dow = "*", "*"
    if kind == "weekly":
        dow = words[1]
    elif kind == "monthly" and words[1] == FIRST_WORKDAY:
        cron = _parse_cron(f"{minute} {hour} * * *", raw)
        return Cron(cron.text, cron.minutes, cron.hours, cron.days, cron.months,
                    cron.weekdays, cron.any_day, cron.any_weekday, first_workday=True)
    elif kind == "monthly":
        dom = words[1]
    return _parse_cron(f"{minute} {hour} {dom} * {dow}", raw)


def _parse_cron(text: str, shown: str) -> Cron:
    fields = text.split(" ")
    if len(fields) != 5:
        extra = " (seconds and years are not supported)" if len(fields) in (6, 7) else ""
        raise CronError(f"cron expression '{shown}' has {len(fields)} field"
                        f"{'s' if len(fields) != 1 else ''}, not 5{extra}",
                        "minute hour day-of-month month day-of-week, e.g. \"0 9 * * 1\" "
                        "(Mondays 09:00)")
    values = [_field(value, spec, shown) for value, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in values[4])
    return Cron(shown, tuple(sorted(values[0])), tuple(sorted(values[1])),
                frozenset(values[2]), frozenset(values[3]), weekdays,
                fields[2].startswith("*"), fields[4].startswith("*"))


def _field(text: str, spec: tuple[str, int, int, tuple[str, ...] | None, int],
           shown: str) -> set[int]:
    name, low, high = spec[:3]
    out: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"cron '{shown}': empty item in the {name} field '{text}'",
                            "separate values with commas, no spaces: 1,15")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text or part.endswith("/"):
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"cron '{shown}': bad step '/{step_text}' in the {name} field",
                                "a step is a whole number of 1 or more, e.g. */15")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            left, _, right = base.partition("-")
            start, end = _value(left, spec, shown), _value(right, spec, shown)
            if start > end:
                raise CronError(f"cron '{shown}': range '{base}' in the {name} field runs "
                                "backwards", f"write {right}-{left}, or a list")
        else:
            start = _value(base, spec, shown)
            end = high if step_text else start
        out.update(range(start, end + 1, step))
    return out


def _value(text: str, spec: tuple[str, int, int, tuple[str, ...] | None, int],
           shown: str) -> int:
    name, low, high, names, offset = spec
    if text.isdigit():
        number = int(text)
        if not low <= number <= high:
            raise CronError(f"cron '{shown}': {number} is out of range for the {name} field "
                            f"({low}-{high})", _ORDER)
        return number
    if names is not None and text in names:
        return names.index(text) + offset
    if names is not None:
        raise CronError(f"cron '{shown}': unknown {name} '{text}'",
                        _closest(text, names) or "names: " + ", ".join(names))
    raise CronError(f"cron '{shown}': '{text}' is not a number in the {name} field "
                    f"({low}-{high})", _ORDER)


def _closest(word: str, pool: tuple[str, ...] | dict[str, str]) -> str:
    close = difflib.get_close_matches(word, list(pool), n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'?" if close else ""


# ---- one-off times and the whole timing of a campaign ------------------------------------

def parse_local(text: str, tz: dt.tzinfo, *, end_of_day: bool = False) -> int:
    """A local date-time (an offset is honoured) as unix seconds; ValueError if unreadable.

    A bare date is refused unless `end_of_day`, where it means the last second of that day
    (so `until = "2025-06-30"` includes firings on 30 June).
    """
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        if not end_of_day:
            raise ValueError(f"'{text}' has no time of day")
        try:
            day = dt.date.fromisoformat(value) + dt.timedelta(days=1)
        except OverflowError:  # 9999-12-31 has no next day
            raise ValueError(f"'{text}' is past the last day sopkit knows (9999-12-30)") \
                from None
        return local_instant(day, 0, 0, tz) - 1
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return int(parsed.timestamp())


@dataclass(frozen=True)
class Timing:
    """When one campaign fires: once `at`, or `every` until `until` (inclusive)."""

    at: int | None
    cron: Cron | None
    until: int | None
    tz: dt.tzinfo
    is_workday: IsWorkday = weekday_workday

    def next_after(self, after: int) -> int | None:
        """The first firing strictly after `after` (unix seconds), or None."""
        if self.at is not None:
            return self.at if self.at > after else None
        assert self.cron is not None
        found = self.cron.next_after(after, self.tz, self.is_workday)
        if found is None or (self.until is not None and found > self.until):
            return None
        return found

    def first_from(self, start: int) -> int | None:
        """The first firing at or after `start`."""
        return self.next_after(start - 1)

    def between(self, start: int, end: int, limit: int = 1000) -> list[int]:
        """Firings in [start, end], at most `limit` of them."""
        out: list[int] = []
        when = self.first_from(start)
        while when is not None and when <= end and len(out) < limit:
            out.append(when)
            when = self.next_after(when)
        return out


MAX_ZONE_NAME = 255  # characters; no IANA name comes near, and the OS refuses longer paths


def known_zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The zone an IANA name names, or None for anything else (unknown, too long, a
    directory such as `America`, a path): never an exception, whatever the playbook says."""
    if not name or len(name) > MAX_ZONE_NAME:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def timing(timezone: str, at: str | None, every: str | None, until: str | None,
           is_workday: IsWorkday = weekday_workday) -> Timing:
    """The Timing of a campaign's `at` / `every` / `until` texts (checked by `sopkit check`);
    `is_workday` gives a `first-workday` schedule its working days."""
    tz = zoneinfo.ZoneInfo(timezone)
    return Timing(
        parse_local(at, tz) if at is not None else None,
        parse_every(every) if every is not None else None,
        parse_local(until, tz, end_of_day=True) if until is not None else None,
        tz,
        is_workday,
    )
