"""China's working days and holidays as a running playbook sees them (docs/calendar.md).

`sopkit._lang.cncal` answers only for the years whose holiday arrangement is published and
raises `CalendarRangeError` otherwise. A run must neither crash on such a date nor guess
silently, so `Holidays` answers outside the published years by the documented fallback:
Monday to Friday are working days, Saturday and Sunday days off, and no day belongs to a
named holiday (`quiet_days` defer nothing that year). Each year it answered that way for is
kept in `fallback_years`, which simulate and run report once, naming the year.
"""

from __future__ import annotations

import datetime as dt

from sopkit._lang import cncal

_LOOKAHEAD = 62  # days searched for the next change of is_workday (longest run seen: 9)


class Holidays:
    """Working days, holiday names and the next change, by day ordinal, with the fallback."""

    def __init__(self) -> None:
        self.first, self.last = cncal.holiday_years()
        self.fallback_years: set[int] = set()
        self._workday: dict[int, bool] = {}
        self._name: dict[int, str | None] = {}

    def covered(self, day: dt.date) -> bool:
        if self.first <= day.year <= self.last:
            return True
        self.fallback_years.add(day.year)
        return False

    def is_workday(self, ordinal: int) -> bool:
        """True on a working day (a make-up workday too); Monday–Friday outside the data."""
        found = self._workday.get(ordinal)
        if found is None:
            day = dt.date.fromordinal(ordinal)
            found = cncal.is_workday(day) if self.covered(day) else day.weekday() < 5
            self._workday[ordinal] = found
        return found

    def holiday_name(self, ordinal: int) -> str | None:
        """The statutory holiday whose day off this is (春节 ...); None outside the data."""
        if ordinal in self._name:
            return self._name[ordinal]
        day = dt.date.fromordinal(ordinal)
        found = cncal.holiday_name(day) if self.covered(day) else None
        self._name[ordinal] = found
        return found

    def next_change(self, today: int) -> int:
        """The first day after `today` whose is_workday differs from today's."""
        now = self.is_workday(today)
        for day in range(today + 1, today + _LOOKAHEAD):
            if self.is_workday(day) != now:
                return day
        return today + _LOOKAHEAD  # pragma: no cover - no arrangement is this long

    def add_workdays(self, ordinal: int, count: int) -> int:
        """The `count`-th working day after `ordinal` (cncal.add_workdays, with the fallback)."""
        day = ordinal
        while count > 0:
            day += 1
            if self.is_workday(day):
                count -= 1
        return day

    def first_workday(self, year: int, month: int) -> dt.date:
        """The first working day of a month."""
        day = dt.date(year, month, 1).toordinal()
        while not self.is_workday(day):
            day += 1
        return dt.date.fromordinal(day)

    def first_allowed(self, ordinal: int, quiet: frozenset[str]) -> tuple[int, str | None]:
        """The first day on or after `ordinal` that is no day off of a holiday in `quiet`,
        and the holiday it skipped (None if `ordinal` itself is allowed)."""
        skipped = None
        day = ordinal
        while True:
            name = self.holiday_name(day)
            if name is None or name not in quiet:
                return day, skipped
            skipped = skipped or name
            day += 1

    def notes(self) -> list[str]:
        """One warning per year answered by the fallback."""
        return [f"no holiday arrangement for {year} in the installed chinese-calendar data "
                f"(it covers {self.first} to {self.last}): {year} counted Monday–Friday as "
                f"working days and applied no quiet_days; upgrade it (pip install -U "
                f"chinese-calendar) once the State Council publishes {year}'s arrangement"
                for year in sorted(self.fallback_years)]
