"""`check` warnings about China's calendar (docs/calendar.md).

- The holiday data: a playbook that uses holiday features (is_workday / is_holiday,
  `N workdays` delays, quiet_days, `first-workday` schedules) while the installed
  chinese-calendar data ends before next year gets one warning, at its first use, naming
  the last covered year and how to upgrade. Always shown; a failure only with --strict.
- Quiet periods (`check --strict`): a campaign whose `at`, or a firing of its `every`
  schedule within the covered years, falls on a day off of a holiday in quiet_days: its
  messages would all be deferred. And a rule that sends N days ahead of an anniversary
  (`when = "days_to_birthday == 3"`): the birthdays whose send day is a quiet day off this
  year (or the last covered one), by holiday, lunar dates for a lunar anniversary.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sopkit._errors import Problem
from sopkit._lang import cncal
from sopkit._lang.cron import FIRST_WORKDAY, CronError, known_zone, parse_local, timing
from sopkit._playbook.models import parse_workdays
from sopkit._playbook.source import KeyPath

if TYPE_CHECKING:
    from sopkit._playbook.load import LoadedPlaybook

_HOLIDAY_FACT = re.compile(r"\bis_(workday|holiday)\b")


def holiday_uses(loaded: LoadedPlaybook) -> Iterator[tuple[KeyPath, str]]:
    """Where the playbook depends on the holiday arrangement, and how."""
    pb = loaded.model
    conditions: list[tuple[KeyPath, str | None]] = []
    for sname, score in pb.scores.items():
        conditions += [(("scores", sname, "factors", i, "when"), f.when)
                       for i, f in enumerate(score.factors)]
    conditions += [(("tags", name, "when"), tag.when) for name, tag in pb.tags.items()]
    conditions += [(("stages", i, "when"), stage.when) for i, stage in enumerate(pb.stages)]
    for i, rule in enumerate(pb.rules):
        conditions += [(("rules", i, "when"), rule.when), (("rules", i, "cancel_if"),
                                                           rule.cancel_if)]
        if rule.delay and parse_workdays(rule.delay):
            yield ("rules", i, "delay"), f"delay = \"{rule.delay}\""
    for i, campaign in enumerate(pb.campaigns):
        conditions.append((("campaigns", i, "audience"), campaign.audience))
        if campaign.every and FIRST_WORKDAY in campaign.every.split():
            yield ("campaigns", i, "every"), f"every = \"{campaign.every}\""
    for path, text in conditions:
        found = _HOLIDAY_FACT.search(text or "")
        if found:
            yield path, found.group(0)
    if pb.policy.quiet_days:
        yield ("policy", "quiet_days"), "quiet_days"


def data_warnings(loaded: LoadedPlaybook, today: dt.date) -> list[Problem]:
    """One warning when holiday features are used and the data ends before next year."""
    last = cncal.holiday_years()[1]
    if last > today.year:
        return []
    uses = sorted(holiday_uses(loaded), key=lambda use: _position(loaded, use[0]))
    if not uses:
        return []
    path, what = uses[0]
    return [Problem(loaded.origins.locate(path),
                    f"{what} reads China's holiday arrangement, and the installed "
                    f"chinese-calendar data ends with {last}: from {last + 1} on, working "
                    "days are counted Monday to Friday and quiet_days defer nothing, with a "
                    "warning in simulate and run",
                    f"upgrade it (pip install -U chinese-calendar) once the State Council "
                    f"publishes {last + 1}'s arrangement (usually in November)",
                    severity="warning")]


def quiet_period_warnings(loaded: LoadedPlaybook, today: dt.date) -> list[Problem]:
    """Campaign firings that fall on a day off of a holiday in quiet_days (--strict)."""
    pb = loaded.model
    quiet = frozenset(pb.policy.quiet_days)
    tz = known_zone(pb.playbook.timezone)
    if not quiet or tz is None:
        return []
    first, last = cncal.holiday_years()
    out: list[Problem] = []
    for i, campaign in enumerate(pb.campaigns):
        try:
            when = timing(pb.playbook.timezone, campaign.at, campaign.every, campaign.until)
            start = parse_local(max(today, dt.date(first, 1, 1)).isoformat() + "T00:00", tz)
        except (CronError, ValueError):
            continue  # validation reports a bad schedule
        end = parse_local(f"{last}-12-31T23:59", tz)
        firings = [when.at] if when.at is not None else when.between(start, end, limit=400)
        for instant in firings:
            day = dt.datetime.fromtimestamp(instant, tz).date()
            if not first <= day.year <= last:
                continue
            name = cncal.holiday_name(day)
            if name in quiet:
                key = "at" if campaign.at is not None else "every"
                out.append(Problem(
                    loaded.origins.locate(("campaigns", i, key)),
                    f"campaign '{campaign.name}' fires on {day.isoformat()}, a day off of "
                    f"{name}, which quiet_days holds back: every message it sends waits "
                    "until the holiday ends", "move it, or leave the holiday out of "
                    "quiet_days if it is meant for the holiday", severity="warning"))
                break
    return out


def _position(loaded: LoadedPlaybook, path: KeyPath) -> tuple[str, int, int]:
    where = loaded.origins.locate(path)
    return where.file, where.line, where.column


_AHEAD = r"\b{name}\s*==\s*(\d+)\b"


def birthday_quiet_warnings(loaded: LoadedPlaybook, today: dt.date) -> list[Problem]:
    """Rules sending N days ahead of an anniversary whose send day can be a quiet day off:
    which birthdays, in this year (or the last year with holiday data), wait (--strict)."""
    pb = loaded.model
    quiet = frozenset(pb.policy.quiet_days)
    if not quiet:
        return []
    first, last = cncal.holiday_years()
    year = min(max(today.year, first), last)
    anniversaries = {name: m.calendar for name, m in pb.metrics.items()
                     if m.kind == "days_to_anniversary"}
    out: list[Problem] = []
    for i, rule in enumerate(pb.rules):
        if not any(a.type == "send" for a in rule.actions):
            continue
        for metric, calendar in anniversaries.items():
            found = re.search(_AHEAD.format(name=re.escape(metric)), rule.when or "")
            if found is None:
                continue
            ahead = int(found.group(1))
            spans = _quiet_birthdays(year, quiet, ahead, calendar != "gregorian")
            if spans:
                out.append(Problem(
                    loaded.origins.locate(("rules", i, "when")),
                    f"rule '{rule.name}' sends {ahead} days before each {metric} "
                    f"anniversary; in {year} that day is a day off quiet_days holds back "
                    f"for birthdays {'; '.join(spans)}: those messages wait until the "
                    "holiday ends", "send further ahead, or leave the holiday out of "
                    "quiet_days if the wait is meant", severity="warning"))
    return out


def _quiet_birthdays(year: int, quiet: frozenset[str], ahead: int, lunar: bool) -> list[str]:
    """`from to to (holiday)` per run of birthdays whose send day is a quiet day off."""
    runs: list[list[Any]] = []  # [holiday, first birthday, last birthday]
    day = dt.date(year, 1, 1)
    while day.year == year:
        name = cncal.holiday_name(day)
        if name in quiet:
            birthday = day + dt.timedelta(days=ahead)
            if runs and runs[-1][0] == name and runs[-1][2] + dt.timedelta(days=1) == birthday:
                runs[-1][2] = birthday
            else:
                runs.append([name, birthday, birthday])
        day += dt.timedelta(days=1)
    return [f"{_label(a, lunar)} to {_label(b, lunar)} ({name})" for name, a, b in runs]


def _label(day: dt.date, lunar: bool) -> str:
    if not lunar:
        return day.strftime("%m-%d")
    found = cncal.lunar_of(day)
    return f"lunar {'leap ' if found.leap else ''}{found.month}-{found.day:02d}"


def strict_warnings(loaded: Any, today: dt.date) -> list[Problem]:
    """What `sopkit check --strict` warns of in a valid playbook, in its order: the holiday
    data running out, lint, campaigns and birthday sends held by quiet periods."""
    from sopkit._playbook.lint import lint

    return (data_warnings(loaded, today) + lint(loaded) + quiet_period_warnings(loaded, today)
            + birthday_quiet_warnings(loaded, today))
