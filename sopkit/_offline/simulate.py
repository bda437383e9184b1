"""simulate: replay an event history through a Runtime on a virtual clock.

Same playbook and same inputs give byte-identical action output: records are processed in
file order, wake-ups by (time, customer id), and JSON is written with a fixed layout.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sopkit._errors import EventError, UsageError
from sopkit._io import BadRecord, InputError, Quarantine, read_records
from sopkit._lang.clock import TimeRangeError, too_far_ahead
from sopkit._mask import mask_record
from sopkit._playbook.load import LoadedPlaybook
from sopkit._runtime.firings import FiringReport
from sopkit._runtime.observe import Observation
from sopkit._runtime.policy import reason_kind
from sopkit._runtime.runtime import Action, Runtime
from sopkit.engines import DEFAULT

if TYPE_CHECKING:
    from sopkit._offline.report import ReportData

DELIVERED = frozenset({"planned", "deferred"})  # will be carried out, now or later
POLICY_STATUSES = ("deferred", "suppressed", "holdout")  # decided by a rule limit or policy


@dataclass
class Summary:
    """What a simulation did, for the table, `--output json`, and reports."""

    playbook: str
    engine: str
    notice: str | None = None
    start: str | None = None
    end: str | None = None
    events_read: int = 0
    events_applied: int = 0
    events_after_end: int = 0
    profiles: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    quarantine_file: str | None = None
    customers: int = 0
    actions: int = 0
    warmup_actions: int = 0
    pending_at_end: int = 0
    by_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    by_day: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)
    by_channel: dict[str, int] = field(default_factory=dict)
    policy: dict[str, dict[str, int]] = field(default_factory=dict)
    stages: dict[str, int] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    rfm_segments: dict[str, int] = field(default_factory=dict)
    campaigns: list[dict[str, Any]] = field(default_factory=list)  # reach of each firing
    # one per year the holiday data does not cover, answered Monday–Friday (docs/calendar.md)
    calendar_warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def dump_line(record: dict[str, Any]) -> str:
    """One JSON line in sopkit's fixed layout (UTF-8 as is, keys in insertion order)."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def simulate(
    playbook: LoadedPlaybook,
    events: Path,
    *,
    profiles: Path | None = None,
    start: str | None = None,
    end: str | None = None,
    out: IO[str] | None = None,
    quarantine: Path | None = None,
    engine: str = DEFAULT,
    masked: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    report: ReportData | None = None,
    max_future: int | None = None,
) -> Summary:
    """Run the playbook over a history; write actions as JSONL to `out`; return a Summary.

    `report`, if given, collects what `sopkit._offline.report.write_report` draws; the actions are
    the same either way. With `max_future` (seconds), an event more than that ahead of the
    virtual clock (the time reached by the events before it) is quarantined. A truncated
    .gz input raises InputError after its records are used and the quarantine is written.
    """
    runtime = Runtime(playbook, engine=engine)
    summary = Summary(playbook.name, runtime.engine.name, notice=runtime.engine_notice)
    jail = Quarantine(quarantine, masked)
    summary.quarantine_file = str(quarantine) if quarantine else None
    cal = runtime.calendar
    start_ts = _parse_option(cal, "--start", start)
    end_ts = _parse_option(cal, "--end", end)
    rule_counts: dict[str, Counter[str]] = {r["name"]: Counter() for r in runtime.rules}
    firings: list[FiringReport] = []  # campaigns are counted in by_rule once they act

    def firing(obs: Observation) -> None:
        if obs.report is not None:
            firings.append(obs.report)

    runtime.observe(firing, "firing")
    days: Counter[str] = Counter()
    types: Counter[str] = Counter()
    channels: Counter[str] = Counter()
    decisions: dict[str, Counter[str]] = {status: Counter() for status in POLICY_STATUSES}
    if report is not None:
        report.begin(runtime, start_ts)

    def emit(actions: list[Action]) -> None:
        for action in actions:
            if start_ts is not None and action.ts < start_ts:
                summary.warmup_actions += 1
                continue
            summary.actions += 1
            counts = rule_counts.get(action.rule)
            if counts is None:  # a campaign's first action
                counts = rule_counts[action.rule] = Counter()
            counts[action.status] += 1
            if report is not None:
                report.action(action)
            if action.status in DELIVERED:  # counted on the day it is delivered
                days[action.details.get("deliver_at", action.time)[:10]] += 1
                types[action.action] += 1
                if "channel" in action.details:
                    channels[action.details["channel"]] += 1
            if action.status in decisions:
                decisions[action.status][reason_kind(action.details.get("reason", ""))] += 1
            if out is not None:
                record = action.to_json()
                if masked:  # what a person reads: customer ids and keys' customer part too
                    record = mask_record(record)
                out.write(dump_line(record))

    sample_at: list[int | None] = [None]  # the end of the next day the report samples

    def catch_up(ts: int) -> None:
        """Run the wake-ups before `ts` a day at a time, writing each day's actions as it
        passes: a quiet month, or the months after the last event, are never held in memory
        at once. The same wake-ups run in the same order as in one jump.

        This is the only place a simulation moves the clock. With a report, it first stops at
        the last second of every playbook day that ends by `ts` for the report to sample the
        stages as that day ended."""
        if report is not None:
            if runtime.now_ts is None:  # `ts` is the first event's time
                report.first = report.first or cal.format(ts)
                return
            day_end = sample_at[0] or cal.day_start(cal.day_index(runtime.now_ts) + 1)
            while day_end <= ts:
                emit(runtime.advance_ts(day_end - 1))
                report.sample(runtime)
                day_end = cal.day_start(cal.day_index(day_end) + 1)
            sample_at[0] = day_end
        while runtime.now_ts is not None:
            next_day = cal.day_start(cal.day_index(runtime.now_ts) + 1)
            if next_day >= ts:
                return
            emit(runtime.advance_ts(next_day))

    try:
        _read(runtime, summary, jail, profiles, events, end_ts, max_future, progress, emit,
              catch_up)
    except InputError:
        jail.close()
        raise
    if end_ts is not None:
        catch_up(end_ts)
        emit(runtime.advance_ts(end_ts))
    if report is not None:
        report.sample(runtime)
    jail.close()
    summary.quarantined = jail.count
    summary.quarantine_reasons = dict(sorted(jail.reasons.items()))
    summary.customers = len(runtime.customers)
    if runtime.now_ts is not None:
        summary.end = cal.format(runtime.now_ts)
        summary.start = cal.format(start_ts) if start_ts is not None else None
    summary.by_rule = {name: dict(sorted(c.items())) for name, c in rule_counts.items()}
    summary.by_day = dict(sorted(days.items()))
    summary.by_type = dict(sorted(types.items()))
    summary.by_channel = dict(sorted(channels.items()))
    summary.policy = {status: dict(sorted(counts.items()))
                      for status, counts in decisions.items() if counts}
    stage_counts: Counter[str] = Counter()
    tag_counts: Counter[str] = Counter()
    for cs in runtime.customers.values():
        summary.pending_at_end += sum(len(runtime.rules[p.rule]["actions"]) for p in cs.pending)
        stage_counts[cs.stage or "(none)"] += 1
        tag_counts.update(cs.tags)
    order = {s["name"]: i for i, s in enumerate(runtime.ir["stages"])}
    summary.stages = dict(sorted(stage_counts.items(), key=lambda kv: order.get(kv[0], 1 << 30)))
    summary.tags = {t["name"]: tag_counts[t["name"]] for t in runtime.ir["tags"]}
    summary.rfm_segments = runtime.rfm_segments()
    if report is not None:
        report.segments = dict(summary.rfm_segments)
    summary.campaigns = [f.to_json() for f in firings
                         if start_ts is None or f.ts >= start_ts]
    summary.calendar_warnings = runtime.holidays.notes()
    return summary


def _read(runtime: Runtime, summary: Summary, jail: Quarantine, profiles: Path | None,
          events: Path, end_ts: int | None, max_future: int | None,
          progress: Callable[[str, int, int], None] | None,
          emit: Callable[[list[Action]], None], catch_up: Callable[[int], None]) -> None:
    """The input loop: profiles, then events, each applied or quarantined with its reason."""
    if profiles is not None:
        size = profiles.stat().st_size
        for item in read_records(profiles, _tick(progress, "profiles", size)):
            if isinstance(item, BadRecord):
                jail.add(str(profiles), item.line, item.reason, item.raw, item.kind)
                continue
            try:
                runtime.add_profile(item.data)
                summary.profiles += 1
            except EventError as exc:
                jail.add(str(profiles), item.line, str(exc), item.data, exc.kind)
    size = events.stat().st_size
    for item in read_records(events, _tick(progress, "events", size)):
        summary.events_read += 1
        if isinstance(item, BadRecord):
            jail.add(str(events), item.line, item.reason, item.raw, item.kind)
            continue
        try:
            event = runtime.parse_event(item.data)
            ahead = too_far_ahead(runtime.calendar, event[2], runtime.now_ts, max_future)
            if ahead is not None:
                raise EventError(ahead, "too far in the future")
            if end_ts is not None and event[2] > end_ts:
                summary.events_after_end += 1
                continue
            catch_up(event[2])
            emit(runtime.apply(event))
            summary.events_applied += 1
        except EventError as exc:
            jail.add(str(events), item.line, str(exc), item.data, exc.kind)


def _parse_option(cal: Any, option: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(cal.parse(value))
    except TimeRangeError as exc:
        raise UsageError(f"{option}: {exc}") from None
    except ValueError:
        raise UsageError(f"{option} {value!r} is not an ISO 8601 date or time, e.g. "
                         "2024-05-01 or 2024-05-01T09:00:00+08:00") from None


def _tick(progress: Callable[[str, int, int], None] | None, label: str,
          total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress(label, done, total)
