"""China's calendar: lunar (农历) anniversaries, statutory holidays (法定节假日) and make-up
workdays (调休), as pure functions over dates (docs/calendar.md).

Two maintained packages hold the data: `lunardate` converts between the Gregorian and the
lunar calendar (1900–2099) and `chinese_calendar` lists the State Council's holiday
arrangements, one year at a time as they are published. A date outside what they know is a
`CalendarRangeError` naming the years that are known, never a guess: a holiday arrangement
for next year does not exist until it is announced (usually in November).
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import NamedTuple

import chinese_calendar
from lunardate import LunarDate

from sopkit._errors import SopkitError

# the statutory holidays, by the names ops teams write, and the package's names for them
HOLIDAYS: dict[str, str] = {
    "元旦": "New Year's Day",
    "春节": "Spring Festival",
    "清明节": "Tomb-sweeping Day",
    "劳动节": "Labour Day",
    "端午节": "Dragon Boat Festival",
    "中秋节": "Mid-autumn Festival",
    "国庆节": "National Day",
}
_CHINESE = {english: chinese for chinese, english in HOLIDAYS.items()}
LUNAR_YEARS = (1900, 2099)  # what lunardate converts: lunar 1900-01-01 to the end of 2099
_LUNAR_START = dt.date(1900, 1, 31)
_LUNAR_END = dt.date(2100, 1, 1)  # conservative: lunar 2099 ends in January 2100


class CalendarRangeError(SopkitError):
    """A date the calendar data does not cover (a holiday year not yet published, or a lunar
    date outside 1900–2099)."""


class LunarDay(NamedTuple):
    """A day of the lunar calendar; `leap` is true in a leap month (闰月)."""

    year: int
    month: int
    day: int
    leap: bool


@functools.cache
def holiday_years() -> tuple[int, int]:
    """The first and last year whose holiday arrangement the installed data holds."""
    years = {day.year for day in chinese_calendar.holidays} | {
        day.year for day in chinese_calendar.workdays}
    return min(years), max(years)


def _check_year(day: dt.date) -> None:
    first, last = holiday_years()
    if not first <= day.year <= last:
        raise CalendarRangeError(
            f"no holiday arrangement for {day.isoformat()}: the installed chinese-calendar data "
            f"covers {first} to {last}; upgrade it (pip install -U chinese-calendar) once the "
            f"State Council publishes {day.year}'s arrangement")


def is_workday(day: dt.date) -> bool:
    """True on a working day: a weekday that is not a statutory holiday, or a make-up
    workday (调休上班, e.g. a Sunday before 春节)."""
    _check_year(day)
    return bool(chinese_calendar.is_workday(day))


def is_holiday(day: dt.date) -> bool:
    """True on a day off: a weekend that is not a make-up workday, or a statutory holiday."""
    return not is_workday(day)


def holiday_name(day: dt.date) -> str | None:
    """The Chinese name of the statutory holiday whose days off include `day`, else None
    (a make-up workday belongs to no holiday: people work)."""
    _check_year(day)
    off, name = chinese_calendar.get_holiday_detail(day)
    if not off or name is None:
        return None
    return _CHINESE.get(str(name), str(name))


def add_workdays(day: dt.date, count: int) -> dt.date:
    """The `count`-th working day after `day` (`day` itself never counts; 0 gives `day`)."""
    if count < 0:
        raise ValueError("count of workdays must be 0 or more")
    current = day
    while count:
        current += dt.timedelta(days=1)
        if is_workday(current):
            count -= 1
    return current


def first_allowed(day: dt.date, quiet: frozenset[str]) -> dt.date:
    """The first day on or after `day` that is not a day off of a holiday named in `quiet`."""
    current = day
    while holiday_name(current) in quiet:
        current += dt.timedelta(days=1)
    return current


def first_workday(year: int, month: int) -> dt.date:
    """The first working day of a month (e.g. 2 October is not: 国庆节)."""
    day = dt.date(year, month, 1)
    return day if is_workday(day) else add_workdays(day, 1)


def lunar_of(day: dt.date) -> LunarDay:
    """The lunar date of a Gregorian day."""
    if not _LUNAR_START <= day < _LUNAR_END:
        raise CalendarRangeError(_lunar_range(day.isoformat()))
    found = LunarDate.from_solar_date(day.year, day.month, day.day)
    return LunarDay(found.year, found.month, found.day, bool(found.is_leap_month))


def _lunar_range(text: str) -> str:
    first, last = LUNAR_YEARS
    return f"{text} is outside the lunar calendar's known years ({first} to {last})"


def lunar_in_year(year: int, month: int, day: int) -> dt.date:
    """The Gregorian date of lunar `month`/`day` in lunar `year`, in the regular (not leap)
    month; the 30th of a month that has 29 days falls on its 29th."""
    if not 1 <= month <= 12 or not 1 <= day <= 30:
        raise ValueError(f"no lunar day {month}-{day}: months are 1 to 12, days 1 to 30")
    for candidate in (day, 29) if day == 30 else (day,):
        try:
            solar = LunarDate(year, month, candidate, False).to_solar_date()
        except ValueError:
            if year < LUNAR_YEARS[0] or year > LUNAR_YEARS[1]:
                raise CalendarRangeError(_lunar_range(f"lunar year {year}")) from None
            continue
        return dt.date(solar.year, solar.month, solar.day)
    raise CalendarRangeError(_lunar_range(f"lunar year {year}"))


@functools.lru_cache(maxsize=1 << 14)
def lunar_anniversary_on_or_after(month: int, day: int, today: int) -> int:
    """The day ordinal of the first anniversary of lunar `month`/`day` on or after day
    ordinal `today` (rules of lunar_in_year). Cached like clock.anniversary_on_or_after."""
    start = lunar_of(dt.date.fromordinal(today)).year - 1
    for year in range(start, start + 3):
        found = lunar_in_year(year, month, day).toordinal()
        if found >= today:
            return found
    raise AssertionError("a lunar month recurs within three lunar years")  # pragma: no cover
