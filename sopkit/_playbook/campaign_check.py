"""`sopkit check` of `[[campaigns]]`: schedules, audiences, actions, experiments, pilots.

Called by the cross-reference checker in `_validate.py` with itself, so problems carry the
same locations and suggestions as every other check. There is no clock here: a campaign
time in the past is not a mistake of the playbook (the same playbook simulates past
histories); `sopkit run` and `sopkit dry-run` say when a one-off time is already behind the
store's clock (docs/playbook.md, campaigns).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sopkit._errors import Problem
from sopkit._lang.cron import CronError, known_zone, local_instant, parse_every, parse_local
from sopkit._playbook import models as m
from sopkit._playbook.source import KeyPath

_PROBE = dt.date(2000, 1, 1)  # never-firing schedules are found by scanning from here


def check_campaigns(checker: Any) -> Iterator[Problem]:
    """Every problem of the playbook's campaigns; `checker` is `_validate._Checker`."""
    pb: m.Playbook = checker.pb
    rule_names = {rule.name for rule in pb.rules}
    seen: set[str] = set()
    tz = known_zone(pb.playbook.timezone)  # None: the [playbook] check reports the zone
    for i, campaign in enumerate(pb.campaigns):
        path: KeyPath = ("campaigns", i)
        if campaign.name in seen:
            yield checker.problem((*path, "name"), f"campaign '{campaign.name}' is declared "
                                  "twice", "campaign names must be unique")
        elif campaign.name in rule_names:
            yield checker.problem((*path, "name"), f"'{campaign.name}' is already the name of "
                                  "a rule", "campaign and rule names share the action records; "
                                  "pick another name")
        seen.add(campaign.name)
        if tz is not None:
            yield from _timing(checker, path, campaign, tz)
        bad, _ = checker.expr((*path, "audience"), campaign.audience)
        if bad:
            yield bad
        yield from _actions(checker, path, campaign)
        if campaign.experiment is not None:
            yield from checker.experiment_use(path, campaign.experiment, campaign.actions,
                                              f"campaign '{campaign.name}'", still="tags")
        yield from _sample(checker, path, campaign)


def _timing(checker: Any, path: KeyPath, campaign: m.Campaign,
            tz: dt.tzinfo) -> Iterator[Problem]:
    if (campaign.at is None) == (campaign.every is None):
        both = campaign.at is not None
        yield checker.problem((*path, "every") if both else path,
                              f"campaign '{campaign.name}' needs either `at` (once) or "
                              "`every` (a schedule)" + (", not both" if both else ""),
                              'e.g. at = "2024-12-12T10:00" or every = "weekly mon 09:00"')
    if campaign.at is not None:
        try:
            parse_local(campaign.at, tz)
        except ValueError as exc:
            why = str(exc) if "no time of day" in str(exc) else f"bad time '{campaign.at}'"
            yield checker.problem((*path, "at"), f"{why}: `at` needs a local date and time "
                                  "of day", 'e.g. at = "2024-12-12T10:00" (the playbook\'s '
                                  "timezone; an offset like +08:00 is allowed)")
        if campaign.until is not None:
            yield checker.problem((*path, "until"), "`until` ends a recurring schedule; a "
                                  "campaign with `at` fires once", "drop `until`, or use "
                                  "`every`")
    if campaign.every is not None:
        try:
            cron = parse_every(campaign.every)
        except CronError as exc:
            yield checker.problem((*path, "every"), exc.message, exc.suggestion)
        else:
            probe = local_instant(_PROBE, 0, 0, tz)
            if cron.next_after(probe, tz) is None:
                yield checker.problem((*path, "every"), f"schedule '{campaign.every}' never "
                                      "fires: no day matches it", "check the day-of-month "
                                      "and month fields (30 February does not exist)")
    if campaign.until is not None and campaign.every is not None:
        try:
            parse_local(campaign.until, tz, end_of_day=True)
        except ValueError as exc:
            why = str(exc) if "past the last day" in str(exc) else \
                f"bad date '{campaign.until}'"
            yield checker.problem((*path, "until"), why,
                                  'e.g. until = "2025-06-30" (that day included)')


def _actions(checker: Any, path: KeyPath, campaign: m.Campaign) -> Iterator[Problem]:
    for j, action in enumerate(campaign.actions):
        apath: KeyPath = (*path, "actions", j)
        yield from checker.action(apath, action, None)
        if isinstance(action, m.SendAction) and action.variants:
            yield from checker.send_variants(apath, action, campaign.experiment,
                                             f"campaign '{campaign.name}'")


def _sample(checker: Any, path: KeyPath, campaign: m.Campaign) -> Iterator[Problem]:
    sample = campaign.sample
    if sample is not None and not 0 < sample <= 1:
        yield checker.problem((*path, "sample"), f"sample {sample:g} is outside (0, 1]: it "
                              "is the share of the audience in the pilot",
                              "e.g. sample = 0.05 pilots the campaign on 5% of its audience")
