"""simulate: replay an event history through a Runtime on a virtual clock.

Same playbook and same inputs give byte-identical action output: records are processed in
file order, wake-ups by (time, customer id), and JSON is written with a fixed layout.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from sopkit._errors import UsageError
from sopkit._io import InputError, Quarantine
from sopkit._ir.compile import compile_playbook
from sopkit._ir.types import PlaybookIR
from sopkit._lang.clock import Calendar, TimeRangeError
from sopkit._offline.barrier import Barrier, Gather, first_error, run_processes
from sopkit._offline.components import placement, staff_groups
from sopkit._offline.drive import LATENESS, Driver, Fed
from sopkit._offline.feed import Feeder, Feeding, fed
from sopkit._offline.lines import action_line
from sopkit._offline.partition import (
    PartitionRuntime,
    in_first_order,
    keyed_line,
    meets,
    merge_actions,
    merge_quarantine,
    merge_reports,
    merge_summaries,
    partition_of,
    report_part,
)
from sopkit._offline.report import ReportData
from sopkit._playbook.load import LoadedPlaybook, load
from sopkit._runtime.firings import FiringReport
from sopkit._runtime.inputs import Inputs
from sopkit._runtime.observe import Observation
from sopkit._runtime.policy import reason_kind
from sopkit._runtime.runtime import Action, Runtime
from sopkit.engines import DEFAULT

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
    lateness: int = LATENESS,
    workers: int = 1,
    executor: str = "processes",
    scheduler: str | None = None,
) -> Summary:
    """Run the playbook over a history; write actions as JSONL to `out`; return a Summary.

    `report`, if given, collects what `sopkit._offline.report.write_report` draws; the actions are
    the same either way. With `max_future` (seconds), an event more than that ahead of the
    virtual clock (the time reached by the events before it) is quarantined. An event
    stamped up to `lateness` seconds before the clock is applied at the clock, as `run` and
    `serve` apply it (0: quarantined as out of order). A truncated
    .gz input raises InputError after its records are used and the quarantine is written.
    With `workers` > 1 the customers are split among that many partitions (partition.py),
    with the same output (`report` too). The
    partitions run in local processes (`executor="processes"`) or on Dask (`"dask"`): the
    cluster at `scheduler`, or a LocalCluster of `workers` processes started for the run.
    """
    _check_executor(workers, executor, scheduler)
    if workers > 1:
        return _partitioned(playbook, events, workers, profiles=profiles, start=start, end=end,
                            out=out, quarantine=quarantine, engine=engine, masked=masked,
                            report=report, max_future=max_future, lateness=lateness,
                            executor=executor,
                            scheduler=scheduler)
    return _run(Runtime(playbook, engine=engine), playbook, events, profiles=profiles,
                start=start, end=end, out=out, quarantine=quarantine, masked=masked,
                progress=progress, report=report, max_future=max_future, lateness=lateness)


def _run(runtime: Runtime, playbook: LoadedPlaybook, events: Path, *,
         profiles: Path | None, start: str | None, end: str | None, out: IO[str] | None,
         quarantine: Path | None, masked: bool,
         progress: Callable[[str, int, int], None] | None = None,
         report: ReportData | None = None, max_future: int | None = None,
         lateness: int = LATENESS, partition: PartitionRuntime | None = None,
         feed: Iterable[list[Fed]] | None = None) -> Summary:
    """`simulate` on a runtime: a whole one, or one partition's (keyed output); with `feed`,
    the events come checked from the parent (feed.py), not from `events`."""
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

    steps = [0]  # the driver's steps so far
    lines = itertools.count()  # a partition's output lines, for the merge key

    def skip(count: int) -> None:  # steps that emit nothing (Driver.run_fed)
        steps[0] += count

    def emit(actions: list[Action]) -> None:
        step = steps[0]  # the same steps in every partition (Driver(split=True))
        steps[0] = step + 1
        written: list[str] = []
        for action in actions:
            if start_ts is not None and action.ts < start_ts:
                summary.warmup_actions += 1
                continue
            summary.actions += 1
            counts = rule_counts.get(action.rule)
            if counts is None:  # a campaign's (or hand-over's) first action
                counts = rule_counts[action.rule] = Counter()
                if partition is not None:  # where it comes in the merged output
                    partition.first_keys[action.rule] = \
                        [step, action.ts, partition.phase(action), action.customer_id]
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
                # masked: what a person reads, customer ids and keys' customer part too
                line = action_line(action, masked)
                written.append(line if partition is None else
                               keyed_line(step, action, line, partition.phase(action),
                                          next(lines)))
        if written:  # one write a step
            assert out is not None
            out.write("".join(written))
        if partition is not None:
            partition.phases.clear()

    sample = None
    if report is not None:
        sample = report.sample
    def jail_add(source: str, line: int, reason: str, record: Any, kind: str) -> None:
        if partition is None or partition.reports(record):
            jail.add(source, line, reason, record, kind)  # each record left out, once

    driver = Driver(runtime, emit=emit, quarantine=jail_add, end_ts=end_ts,
                    max_future=max_future, lateness=lateness, progress=progress,
                    sample=sample, split=partition is not None, skip=skip)
    try:
        counts = driver.run(events, profiles) if feed is None else \
            driver.run_fed(feed, profiles)
    except InputError:
        jail.close()
        raise
    if report is not None and driver.first is not None:
        report.first = report.first or cal.format(driver.first)
    summary.profiles = counts.profiles if partition is None else partition.owned_profiles
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
    summary.calendar_warnings = runtime.holidays.notes()
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


def _partitioned(playbook: LoadedPlaybook, events: Path, workers: int, *,
                 profiles: Path | None, start: str | None, end: str | None,
                 out: IO[str] | None, quarantine: Path | None, engine: str, masked: bool,
                 report: ReportData | None, max_future: int | None, lateness: int,
                 executor: str = "processes", scheduler: str | None = None) -> Summary:
    """`simulate` in `workers` processes, one partition of the customers each."""
    ir = compile_playbook(playbook.model)
    if quarantine is not None and quarantine.exists():
        quarantine.unlink()  # as a single run: a file left by an earlier run is not this one's
    gather = Gather(ir)
    with tempfile.TemporaryDirectory(prefix="sopkit-partitions-") as tmp:
        shared = executor == "processes"  # Dask workers may not see this disk
        jobs = [_Job(str(playbook.path), str(events), None if profiles is None else str(profiles),
                     start, end, engine, masked, max_future, lateness, index, workers,
                     tmp if shared else None, out is not None, quarantine is not None,
                     report is not None)
                for index in range(workers)]
        feeding = None
        if shared:  # the history read and checked once, here (feed.py)
            feeding = Feeding(_feeder(playbook, ir, events, workers, profiles, end,
                                      Quarantine(Path(tmp) / "quarantine-feed.jsonl"
                                                 if quarantine else None, masked),
                                      report is not None, max_future=max_future,
                                      lateness=lateness))
            outcomes = run_processes(_partition, jobs, gather, feeding)
            if feeding.failure is not None:
                raise feeding.failure
            error = first_error(outcomes)
            if error is not None:
                raise error
            results = [result for result, _ in outcomes]
        else:
            results = _on_dask(jobs, Path(tmp), scheduler, gather,
                               together=meets(ir))
        actions = [Path(tmp) / f"actions-{i}.tsv" for i in range(workers)]
        if out is not None:
            merge_actions(actions, out)
        if quarantine is not None:
            sources = [str(p) for p in (profiles, events) if p is not None]
            merge_quarantine([Path(tmp) / f"quarantine-{i}.jsonl" for i in range(workers)]
                             + [Path(tmp) / "quarantine-feed.jsonl"], quarantine, sources)
    failed = next((r["error"] for r in results if r["error"]), None)
    if failed is not None:  # as a single run: the quarantine is written, then the error
        raise InputError(failed)
    firsts = [r["first_keys"] for r in results]
    if report is not None:  # each partition's report data, added up
        merge_reports([r["report"] for r in results], report)
        report.rules = in_first_order(report.rules, firsts)
    summary = Summary(**merge_summaries([r["summary"] for r in results], ir))
    summary.by_rule = in_first_order(summary.by_rule, firsts)
    summary.quarantine_file = str(quarantine) if quarantine else None
    if feeding is not None:  # what the feeder read and quarantined
        feeder = feeding.feeder
        summary.events_read = feeder.counts.events_read
        summary.events_applied = feeder.counts.events_applied
        summary.events_after_end = feeder.counts.events_after_end
        summary.quarantined += feeder.jail.count
        reasons = Counter(summary.quarantine_reasons)
        reasons.update(feeder.jail.reasons)
        summary.quarantine_reasons = dict(sorted(reasons.items()))
    return summary


def _feeder(playbook: LoadedPlaybook, ir: PlaybookIR, events: Path, workers: int,
            profiles: Path | None, end: str | None, jail: Quarantine, sampled: bool, *,
            max_future: int | None, lateness: int) -> Feeder:
    """The feeder of `workers` local partitions (feed.py)."""
    calendar = Calendar(ir["timezone"], ir["day_starts_minutes"])
    inputs = Inputs(calendar, playbook.model.events, playbook.model.profile)
    placed: dict[str, int] = {}
    if (ir.get("policy") or {}).get("task_capacity"):  # as each partition places them
        sources = [p for p in (profiles, events) if p is not None]
        placed = placement(staff_groups(ir, sources), workers)

    def owner(customer_id: str) -> int:
        found = placed.get(customer_id)
        return partition_of(customer_id, workers) if found is None else found

    return Feeder(inputs, events, workers, owner, end_ts=_parse_option(calendar, "--end", end),
                  max_future=max_future, lateness=lateness, sampled=sampled, jail=jail)


@dataclass(frozen=True)
class _Job:
    """What one partition's process is given (plain values: it loads the playbook itself)."""

    playbook: str
    events: str
    profiles: str | None
    start: str | None
    end: str | None
    engine: str
    masked: bool
    max_future: int | None
    lateness: int
    index: int
    count: int
    tmp: str | None  # None: return the output in the result (a worker on another machine)
    out: bool
    quarantine: bool
    report: bool = False  # gather `--report` data (partition.report_part)


def _partition(job: _Job, barrier: Barrier, feed: Connection | None = None) -> dict[str, Any]:
    """One partition's simulation: keyed actions and quarantine into files in `job.tmp`, its
    summary; without `job.tmp`, into a local temporary folder, their text in the result.
    `barrier` reaches the coordinator at population steps (barrier.py); `feed`, if given,
    brings the checked events (feed.py) instead of reading `job.events`."""
    if job.tmp is not None:
        return _partition_into(job, Path(job.tmp), barrier, feed)
    for name in (job.playbook, job.events, job.profiles):  # a worker on another machine
        if name is not None and not Path(name).is_file():
            raise UsageError(f"a Dask worker cannot read {name}: put the playbook and inputs "
                             "on storage every worker reads at the same path, and give "
                             "absolute paths (docs/cli.md#partitions)")
    with tempfile.TemporaryDirectory(prefix="sopkit-partition-") as local:
        result = _partition_into(job, Path(local), barrier)
        for key, name in (("actions", f"actions-{job.index}.tsv"),
                          ("quarantine", f"quarantine-{job.index}.jsonl")):
            path = Path(local) / name
            result[key] = path.read_text(encoding="utf-8") if path.exists() else ""
    return result


def _partition_into(job: _Job, tmp: Path, barrier: Barrier | None,
                    feed: Connection | None = None) -> dict[str, Any]:
    playbook = load(job.playbook)
    runtime = PartitionRuntime(playbook, engine=job.engine, index=job.index, count=job.count,
                               barrier=barrier)
    if (runtime.ir.get("policy") or {}).get("task_capacity"):  # staff components together
        sources = [Path(p) for p in (job.profiles, job.events) if p is not None]
        runtime.placed = placement(staff_groups(runtime.ir, sources), job.count)
    jail = tmp / f"quarantine-{job.index}.jsonl" if job.quarantine else None
    data = ReportData() if job.report else None
    with (tmp / f"actions-{job.index}.tsv").open("w", encoding="utf-8") as out:
        try:
            summary = _run(runtime, playbook, Path(job.events),
                           profiles=None if job.profiles is None else Path(job.profiles),
                           start=job.start, end=job.end, out=out if job.out else None,
                           quarantine=jail, masked=job.masked, max_future=job.max_future,
                           lateness=job.lateness, partition=runtime, report=data,
                           feed=None if feed is None else fed(feed))
        except InputError as exc:
            return {"summary": None, "error": str(exc)}
    return {"summary": summary.to_json(), "error": None, "first_keys": runtime.first_keys,
            "report": None if data is None else report_part(data)}


def _on_dask(jobs: list[_Job], tmp: Path, scheduler: str | None, gather: Gather,
             together: bool) -> list[dict[str, Any]]:
    """The partitions on Dask; each one's output is written to `tmp` as it arrives.
    `together`: they meet at barriers, so each needs a worker thread of its own."""
    from sopkit._offline.dask_executor import run

    results: list[dict[str, Any]] = [{} for _ in jobs]
    for index, result in run(_partition, jobs, scheduler=scheduler, gather=gather,
                             together=together):
        (tmp / f"actions-{index}.tsv").write_text(result.pop("actions"), encoding="utf-8")
        if result["quarantine"]:
            (tmp / f"quarantine-{index}.jsonl").write_text(result["quarantine"],
                                                           encoding="utf-8")
        del result["quarantine"]
        results[index] = result
    return results


EXECUTORS = ("processes", "dask")


def _check_executor(workers: int, executor: str, scheduler: str | None) -> None:
    """UsageError for an executor or scheduler that cannot apply (before any work)."""
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor}: choose processes or dask")
    if scheduler is not None and executor != "dask":
        raise UsageError(f"--scheduler {scheduler}: a scheduler is for --executor dask; "
                         "add --executor dask")
    if executor == "dask" and workers < 2:
        given = "--executor dask" if scheduler is None else f"--scheduler {scheduler}"
        raise UsageError(f"{given}: Dask runs partitions of the customers and with --workers "
                         f"{workers} there is one: give --workers 2 or more, or leave out "
                         "--executor and --scheduler")
