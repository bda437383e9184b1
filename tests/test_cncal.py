"""China's calendar: lunar anniversaries and statutory holidays against published dates."""

from __future__ import annotations

import datetime as dt

import pytest

from sopkit._lang import cncal

D = dt.date.fromisoformat

# 中秋节 (lunar 8-15) and 春节 (lunar 1-1), 2020-2030, as published
MID_AUTUMN = ["2020-10-01", "2021-09-21", "2022-09-10", "2023-09-29", "2024-09-17",
              "2025-10-06", "2026-09-25", "2027-09-15", "2028-10-03", "2029-09-22",
              "2030-09-12"]
SPRING = ["2020-01-25", "2021-02-12", "2022-02-01", "2023-01-22", "2024-02-10", "2025-01-29",
          "2026-02-17", "2027-02-06", "2028-01-26", "2029-02-13", "2030-02-03"]


@pytest.mark.parametrize(("month", "day", "dates"), [(8, 15, MID_AUTUMN), (1, 1, SPRING)])
def test_lunar_anniversaries_fall_on_the_published_festival_days(
        month: int, day: int, dates: list[str]) -> None:
    """A lunar 八月十五 / 正月初一 anniversary lands on each year's 中秋 / 春节, 2020–2030."""
    for text in dates:
        festival = D(text)
        assert cncal.lunar_in_year(festival.year, month, day) == festival
        # counted from the day before, and from the day itself, the next one is the festival
        for today in (festival - dt.timedelta(days=1), festival):
            got = cncal.lunar_anniversary_on_or_after(month, day, today.toordinal())
            assert dt.date.fromordinal(got) == festival


def test_the_day_after_a_festival_looks_to_next_years() -> None:
    """The day after 中秋 2024 the next lunar 八月十五 is 中秋 2025."""
    after = D("2024-09-18").toordinal()
    assert dt.date.fromordinal(cncal.lunar_anniversary_on_or_after(8, 15, after)) == D("2025-10-06")


def test_a_lunar_new_year_birthday_in_january_of_the_next_gregorian_year() -> None:
    """A 腊月 (12th month) birthday of lunar 2024 falls in January 2025, and is found then."""
    # 腊月廿三 (小年) of lunar 2024 is 2025-01-22
    assert cncal.lunar_in_year(2024, 12, 23) == D("2025-01-22")
    got = cncal.lunar_anniversary_on_or_after(12, 23, D("2024-12-01").toordinal())
    assert dt.date.fromordinal(got) == D("2025-01-22")


def test_a_leap_month_birthday_is_kept_in_the_regular_month() -> None:
    """Born in 闰六月 of 2025: the lunar date says leap, anniversaries use the regular 六月."""
    born = cncal.lunar_of(D("2025-07-25"))  # 闰六月初一
    assert born == cncal.LunarDay(2025, 6, 1, True)
    # 2026 has no 闰六月: the anniversary is the regular 六月初一
    assert cncal.lunar_in_year(2026, born.month, born.day) == cncal.lunar_in_year(2026, 6, 1)
    assert cncal.lunar_in_year(2025, 6, 1) == D("2025-06-25")  # the regular month, not the leap


def test_the_thirtieth_falls_on_the_29th_in_a_short_month() -> None:
    """A lunar 30th in a year whose month has 29 days is celebrated on the 29th."""
    # 除夕 of lunar 2024 is 腊月廿九 (2025-01-28): that 腊月 has 29 days
    assert cncal.lunar_in_year(2024, 12, 30) == cncal.lunar_in_year(2024, 12, 29) == D("2025-01-28")
    # lunar 2023's 腊月 has 30 days: 除夕 2024-02-09 is its 30th
    assert cncal.lunar_in_year(2023, 12, 30) == D("2024-02-09")


def test_make_up_workdays_and_days_off_as_published() -> None:
    """2024's 春节 and 国庆 arrangements: Sundays worked, weekdays off."""
    assert cncal.is_workday(D("2024-02-04"))  # Sunday, worked for 春节
    assert cncal.is_workday(D("2024-10-12"))  # Saturday, worked for 国庆
    assert cncal.is_holiday(D("2024-10-07"))  # Monday, off
    assert cncal.holiday_name(D("2024-10-07")) == "国庆节"
    assert cncal.holiday_name(D("2024-02-12")) == "春节"
    assert cncal.holiday_name(D("2024-02-04")) is None  # a make-up workday is no holiday
    assert cncal.holiday_name(D("2024-03-09")) is None  # an ordinary Saturday
    assert cncal.is_holiday(D("2024-03-09"))


def test_workdays_skip_weekends_and_holidays() -> None:
    """3 workdays after a purchase on 2024-09-27 (Friday) skip 国庆 and count the make-up Sunday."""
    assert cncal.add_workdays(D("2024-09-27"), 1) == D("2024-09-29")  # Sunday, worked
    assert cncal.add_workdays(D("2024-09-27"), 2) == D("2024-09-30")
    assert cncal.add_workdays(D("2024-09-27"), 3) == D("2024-10-08")  # 1–7 Oct off
    assert cncal.add_workdays(D("2024-09-27"), 0) == D("2024-09-27")
    assert cncal.first_workday(2024, 10) == D("2024-10-08")
    assert cncal.first_workday(2024, 7) == D("2024-07-01")


def test_quiet_holidays_defer_to_the_first_day_after() -> None:
    """A send on 春节 2026 with 春节 quiet moves to the day after the days off, not earlier."""
    assert cncal.first_allowed(D("2026-02-17"), frozenset({"春节"})) == D("2026-02-24")
    assert cncal.first_allowed(D("2026-02-17"), frozenset({"国庆节"})) == D("2026-02-17")
    assert cncal.first_allowed(D("2026-03-02"), frozenset({"春节"})) == D("2026-03-02")


def test_a_year_without_a_published_arrangement_is_an_error_not_a_guess() -> None:
    """Asking about a year the installed data does not cover names the years it does."""
    first, last = cncal.holiday_years()
    with pytest.raises(cncal.CalendarRangeError, match=f"covers {first} to {last}"):
        cncal.is_workday(dt.date(last + 1, 3, 2))
    with pytest.raises(cncal.CalendarRangeError, match="1900 to 2099"):
        cncal.lunar_of(D("1899-06-01"))
