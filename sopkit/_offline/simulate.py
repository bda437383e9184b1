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

from sopkit._errors import UsageError
from sopkit._io import InputError, Quarantine
from sopkit._lang.clock import TimeRangeError
from sopkit._mask import mask_record
from sopkit._offline.drive import Driver
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

    sample = None
    if report is not None:
        sample = report.sample
    driver = Driver(runtime, emit=emit, quarantine=jail.add, end_ts=end_ts,
                    max_future=max_future, progress=progress, sample=sample)
    try:
        counts = driver.run(events, profiles)
    except InputError:
        jail.close()
        raise
    if report is not None and driver.first is not None:
        report.first = report.first or cal.format(driver.first)
    summary.profiles = counts.profiles
    summary.events_read = counts.events_read
    summary.events_applied = counts.events_applied
    summary.events_after_end = counts.events_after_end
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
    return summary


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
