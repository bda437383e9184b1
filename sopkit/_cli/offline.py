"""`sopkit simulate`, `explain`, `diff` and `review`: replays of an event history."""

from __future__ import annotations

import io
import json
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sopkit._cli.common import (
    EventsOption,
    NativeEngineOption,
    Output,
    OutputOption,
    ProfilesOption,
    ProgressOption,
    UnmaskedOption,
    counts_table,
    duration_option,
    exit_if_all_quarantined,
    lateness_option,
    load_or_exit,
    new_console,
    opened_store,
    progress_bar,
    render_problem,
)
from sopkit._errors import PlaybookError, SopkitError
from sopkit._playbook.load import load


class Executor(StrEnum):
    """Where `simulate --workers N` runs its partitions."""

    processes = "processes"
    dask = "dask"


WorkersOption = Annotated[int, typer.Option(
    min=1, help="Processes to split the customers among; the same output whatever the "
    "number (docs/cli.md#partitions).")]
ExecutorOption = Annotated[Executor, typer.Option(
    help="Where the --workers partitions run: local processes, or Dask (needs "
    "sopkit[dask]; docs/cli.md#partitions).")]
SchedulerOption = Annotated[str | None, typer.Option(
    help="With --executor dask: the address of an existing Dask scheduler, e.g. "
    "tcp://10.0.0.5:8786 (default: a local cluster of --workers processes).")]


def simulate(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    events: Annotated[Path, typer.Option(help="Event history: JSONL or CSV, .gz allowed, "
                                         "sorted by ts.", exists=True, dir_okay=False)],
    profiles: Annotated[Path | None, typer.Option(help="Customer profiles: JSONL or CSV.",
                                                  exists=True, dir_okay=False)] = None,
    start: Annotated[str | None, typer.Option(help="Report actions from this time on; "
                                              "earlier events only warm the state up.")] = None,
    end: Annotated[str | None, typer.Option(help="Simulate until this time (default: the "
                                            "last event).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write every action as JSONL here.")] = None,
    quarantine: Annotated[Path | None, typer.Option(
        help="Where bad records go (default: next to --out, or sopkit-quarantine.jsonl).")] =
    None,
    engine: Annotated[str, typer.Option(help="Rule engine: durable (default) or native; "
                                        "the same results.")] = "durable",
    output: Annotated[Output, typer.Option(help="table: a summary for people; jsonl: the "
                                           "summary as one JSON line.")] = Output.table,
    unmasked: Annotated[bool, typer.Option(help="Show phone numbers and e-mails in full.")] =
    False,
    progress: ProgressOption = None,
    report: Annotated[Path | None, typer.Option(
        help="Write a self-contained HTML report with charts here (docs/report.md).",
        dir_okay=False)] = None,
    max_future: Annotated[str | None, typer.Option(
        help="Quarantine an event more than this (e.g. 30d) ahead of the events before it "
        "(default: no limit).")] = None,
    lateness: Annotated[str, typer.Option(
        help="Apply an event stamped up to this much before the events before it at their "
        "time, as run and serve do (0s: quarantine it as out of order).")] = "60s",
    workers: WorkersOption = 1,
    executor: ExecutorOption = Executor.processes,
    scheduler: SchedulerOption = None,
) -> None:
    """Replay an event history on a virtual clock and report every action the playbook takes.

    Exit codes: 0 done, 1 invalid playbook, an input that ends early (truncated .gz), or
    every event record quarantined, 2 usage error (e.g. a file format sopkit cannot read).
    """
    from sopkit._offline.simulate import simulate as run_simulation

    loaded = load_or_exit(playbook)
    ahead = duration_option("--max-future", max_future)
    late = lateness_option(lateness)
    collected = None
    if report is not None:
        from sopkit._offline.report import ReportData

        if not report.parent.is_dir():  # say so now, not after a long run
            typer.echo(f"error: --report {report}: the folder {report.parent} does not "
                       "exist; create it or choose another path", err=True)
            raise typer.Exit(2)
        collected = ReportData()
    if quarantine is None:
        quarantine = (out.with_name(out.stem + ".quarantine.jsonl") if out
                      else Path("sopkit-quarantine.jsonl"))
    handle = out.open("w", encoding="utf-8") if out else None
    try:  # no bar with workers: they read on their own
        with progress_bar(progress if workers == 1 else False, prefix="reading ") as tick:
            summary = run_simulation(loaded, events, profiles=profiles, start=start, end=end,
                                     out=handle, quarantine=quarantine, engine=engine,
                                     masked=not unmasked, progress=tick, report=collected,
                                     max_future=ahead, lateness=late, workers=workers,
                                     executor=executor.value, scheduler=scheduler)
    except SopkitError as exc:  # an error may quote a record or a customer id
        from sopkit._mask import mask_text

        typer.echo(f"error: {exc if unmasked else mask_text(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    finally:
        if handle:
            handle.close()
    if summary.notice:
        typer.echo(summary.notice, err=True)
    for note in summary.calendar_warnings:
        typer.echo(f"warning: {note}", err=True)
    if summary.quarantined == 0 and quarantine.exists() and quarantine.stat().st_size == 0:
        quarantine.unlink()
    if report is not None and collected is not None:
        from sopkit._offline.report import write_report

        try:
            notes = write_report(report, summary, collected)
        except OSError as exc:
            typer.echo(f"error: cannot write the report {report}: {exc.strerror or exc}; "
                       "choose a writable path with --report", err=True)
            raise typer.Exit(2) from None
        for note in notes:
            typer.echo(f"warning: {note}", err=True)
    if output is Output.jsonl:
        typer.echo(json.dumps(summary.to_json(), ensure_ascii=False))
    else:
        print_summary(summary, out)
        if report is not None:
            typer.echo(f"report: {report}")
    exit_if_all_quarantined(summary.events_read, summary.events_applied
                            + summary.events_after_end, summary.quarantine_reasons,
                            quarantine)


def print_summary(summary: Any, out: Path | None) -> None:
    """The simulation summary as rich tables."""
    console = new_console()
    console.print(f"[bold]{summary.playbook}[/bold] simulated with the {summary.engine} engine"
                  f"{' from ' + summary.start if summary.start else ''}"
                  f"{' until ' + summary.end if summary.end else ''}")
    console.print(f"events: {summary.events_read} read, {summary.events_applied} applied, "
                  f"{summary.quarantined} quarantined"
                  + (f" (see {summary.quarantine_file})" if summary.quarantined else "")
                  + (f", {summary.events_after_end} after --end" if summary.events_after_end
                     else "")
                  + f"; customers: {summary.customers}; profiles: {summary.profiles}")
    console.print(f"actions: {summary.actions}" + (f" (written to {out})" if out else "")
                  + (f"; {summary.warmup_actions} during warm-up before --start"
                     if summary.warmup_actions else "")
                  + (f"; {summary.pending_at_end} delayed, still pending at the end"
                     if summary.pending_at_end else ""))
    rules = Table(title="Actions by rule", title_justify="left")
    rules.add_column("rule")
    statuses = ("planned", "deferred", "suppressed", "holdout", "cancelled")
    for status in statuses:
        rules.add_column(status, justify="right")
    for name, counts in summary.by_rule.items():
        rules.add_row(name, *(str(counts.get(status, 0)) for status in statuses))
    console.print(rules)
    if summary.policy:
        decisions = Table(title="Policy decisions", title_justify="left")
        decisions.add_column("status")
        decisions.add_column("reason")
        decisions.add_column("actions", justify="right")
        for status, reasons in summary.policy.items():
            for reason, count in reasons.items():
                decisions.add_row(status, reason, str(count))
        console.print(decisions)
    for table in _firings(summary.campaigns):
        console.print(table)
    _print_days(console, summary.by_day)
    console.print(counts_table("Customers by stage at the end", "stage", "customers",
                               summary.stages))
    console.print(counts_table("Tags held at the end", "tag", "customers", summary.tags))
    if summary.rfm_segments:
        console.print(counts_table("RFM segments at the end", "segment", "customers",
                                   summary.rfm_segments))
    if summary.quarantine_reasons:
        console.print(counts_table("Quarantined records", "reason", "records",
                                   summary.quarantine_reasons))


def _firings(firings: list[dict[str, Any]]) -> list[Table]:
    """Each campaign's firings and their reach, one table per campaign, a row per firing."""
    tables: list[Table] = []
    for name in dict.fromkeys(f["campaign"] for f in firings):
        rows = [f for f in firings if f["campaign"] == name]
        pilots = any(f["pilot"] != f["audience"] for f in rows)
        columns = ["audience", *(["pilot"] if pilots else []), "sent", "deferred", "capped",
                   "suppressed", "held_out"]
        table = Table(title=f"Campaign {name}: reach per firing", title_justify="left")
        table.add_column("firing", no_wrap=True)
        for column in columns:
            table.add_column(column.replace("_", " "), justify="right")
        for f in rows:
            table.add_row(f["time"][:16].replace("T", " "), *(str(f[c]) for c in columns))
        tables.append(table)
    return tables


def _print_days(console: Console, by_day: dict[str, int]) -> None:
    table = Table(title="Actions to deliver per day", title_justify="left")
    if len(by_day) <= 31:
        table.add_column("day")
        table.add_column("actions", justify="right")
        for day, count in by_day.items():
            table.add_row(day, str(count))
        console.print(table)
        return
    months: Counter[str] = Counter()
    for day, count in by_day.items():
        months[day[:7]] += count
    table.title = "Actions to deliver per month (every day: --output jsonl, by_day)"
    table.add_column("month")
    table.add_column("actions", justify="right")
    table.add_column("busiest day", justify="right")
    for month in sorted(months):
        days = {d: c for d, c in by_day.items() if d.startswith(month)}
        top = max(days, key=lambda d: (days[d], d))
        table.add_row(month, str(months[month]), f"{top} ({days[top]})")
    console.print(table)


def explain(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    customer: Annotated[str, typer.Option(help="The customer id to explain.")],
    events: Annotated[Path | None, typer.Option(
        help="Event history (as for simulate); or give --store.", exists=True,
        dir_okay=False)] = None,
    store: Annotated[str | None, typer.Option(
        help="Instead of --events: the history a `sopkit serve --history` store kept "
        "(what GET /v1/customers/{id}/timeline explains).")] = None,
    quarantine: Annotated[Path | None, typer.Option(
        help="With --store: the serve's quarantine file, whose records were never applied "
        "(default: as serve's).", dir_okay=False)] = None,
    profiles: ProfilesOption = None,
    at: Annotated[str | None, typer.Option(help="Explain up to this time (default: the last "
                                           "event; with --store, the store's clock).")] = None,
    engine: NativeEngineOption = "native",
    output: OutputOption = Output.table,
    unmasked: UnmaskedOption = False,
    send_from: Annotated[str | None, typer.Option(
        help="The live store's go-live instant: actions due before it show as backfilled "
        "(recorded, never sent; with --store, the store's).")] = None,
    lateness: Annotated[str, typer.Option(
        help="With --events: apply an event stamped up to this much before the events "
        "before it at their time, as simulate does (0s: out of order; with --store, the "
        "store's).")] = "60s",
) -> None:
    """Show one customer's timeline: events, changes, actions, and why rules did not fire.

    From an event file (--events), or from what a `sopkit serve --history` store kept
    (--store); exit 2 when neither or both are given, or the store kept no history.
    """
    from sopkit._mask import mask, mask_text
    from sopkit._offline.explain import explain as run_explain

    shown = (lambda text: text) if unmasked else mask_text
    loaded = load_or_exit(playbook)
    if (events is None) == (store is None):
        typer.echo("error: give --events (a history file) or --store (a served store's "
                   "kept history), one of them", err=True)
        raise typer.Exit(2)
    try:
        if store is not None:
            entries = _explain_store(loaded, store, quarantine, customer, at, engine,
                                     profiles, send_from)
        else:
            assert events is not None  # one of the two, checked above
            entries = run_explain(loaded, events, customer, profiles=profiles, at=at,
                                  engine=engine, send_from=send_from,
                                  lateness=lateness_option(lateness))
    except SopkitError as exc:
        typer.echo(f"error: {shown(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if output is Output.jsonl:
        for entry in entries:
            record = entry.to_json()
            typer.echo(json.dumps(record if unmasked else mask(record), ensure_ascii=False))
        return
    console = new_console()
    table = Table(title=f"{shown(customer)} in {loaded.model.playbook.name}",
                  title_justify="left")
    table.add_column("time")
    table.add_column("what")
    table.add_column("detail", overflow="fold")
    for entry in entries:
        table.add_row(entry.time[:16].replace("T", " "), entry.kind, shown(entry.text))
    console.print(table)


def _explain_store(loaded: Any, url: str, quarantine: Path | None, customer: str,
                   at: str | None, engine: str, profiles: Path | None,
                   send_from: str | None) -> list[Any]:
    """`explain --store`: `operate.served_timeline` over the store's kept inbox, as GET
    /v1/customers/{id}/timeline answers; a notice on stderr when the history is partial."""
    from sopkit._cli.serve import beside_store
    from sopkit._errors import UsageError
    from sopkit._live import operate as op
    from sopkit._live.inbox import SOURCE, Inbox

    for name, given in (("--profiles", profiles), ("--send-from", send_from)):
        if given is not None:
            raise UsageError(f"{name} goes with --events: with --store the store's kept "
                             "records and go-live instant are used")
    until = None if at is None else op.parse_at(loaded, at)
    with opened_store(url) as db:
        if not op.kept(db):
            raise UsageError(f"store '{db.url}' keeps no history to explain from: serve it "
                             "with `sopkit serve --history` (the default) and the records it "
                             "applies from then on are kept; or give --events")
        position = db.get_meta("input.line")
        upto = int(position) if position and db.get_meta("input.source") == SOURCE \
            else 2**63 - 1  # a later `run --events` moved the position: every kept row
        inbox = Inbox(url)
        try:
            found = op.served_timeline(
                loaded, db, op.kept_history(inbox, upto, op.refused(quarantine or
                                                                   beside_store(url))),
                customer, at=until, engine=engine)
        finally:
            inbox.close()
    if not found.complete:
        since = found.to_json(loaded, True)["history_from"]
        typer.echo("notice: the store's kept history does not reach back to its start ("
                   + (f"it holds every record from {since} on; older ones were deleted by "
                      "`serve --history-keep`" if since else "records applied before it was "
                      "kept, or by `sopkit run`, are not in it")
                   + "): this timeline may not show everything that explains it", err=True)
    return found.entries


# `diff` and `review` replay the history as `simulate` does, split the same way
def diff_cmd(
    old: Annotated[Path, typer.Argument(help="The playbook as it is (TOML).")],
    new: Annotated[Path, typer.Argument(help="The playbook as changed (TOML).")],
    events: Annotated[Path, typer.Option(help="Event history both are replayed on: JSONL or "
                                         "CSV, .gz allowed, sorted by ts.", exists=True,
                                         dir_okay=False)],
    profiles: Annotated[Path | None, typer.Option(help="Customer profiles: JSONL or CSV.",
                                                  exists=True, dir_okay=False)] = None,
    end: Annotated[str | None, typer.Option(help="Simulate until this time (default: the "
                                            "last event).")] = None,
    engine: Annotated[str, typer.Option(help="Rule engine: durable (default) or native; "
                                        "the same results.")] = "durable",
    output: Annotated[Output, typer.Option(help="table: counts per rule and a sample of "
                                           "customers; jsonl: every difference, one a "
                                           "line.")] = Output.table,
    sample: Annotated[int, typer.Option(help="Customers whose differences are listed (the "
                                        "first by customer id).", min=0)] = 5,
    unmasked: Annotated[bool, typer.Option(help="Show phone numbers and e-mails in full.")] =
    False,
    workers: WorkersOption = 1,
    executor: ExecutorOption = Executor.processes,
    scheduler: SchedulerOption = None,
) -> None:
    """Replay two versions of a playbook on one history and show what the change changes.

    Exit codes, like diff(1): 0 no difference, 1 differences, 2 usage error or an invalid
    playbook.
    """
    from sopkit._mask import mask_text
    from sopkit._offline import diff as _diff
    from sopkit._offline.simulate import simulate as run_simulation

    runs: list[tuple[Any, Any, list[dict[str, Any]]]] = []
    for path in (old, new):
        try:
            loaded = load(path)
        except PlaybookError as exc:
            for problem in exc.problems:
                typer.echo(render_problem(problem), err=True)
            typer.echo(f"{path}: invalid; run `sopkit check {path}`", err=True)
            raise typer.Exit(2) from None
        sink = _Records()
        try:
            summary = run_simulation(loaded, events, profiles=profiles, end=end, out=sink,
                                     engine=engine, masked=False, workers=workers,
                                     executor=executor.value, scheduler=scheduler)
        except SopkitError as exc:
            typer.echo(f"error: {path}: {exc if unmasked else mask_text(str(exc))}", err=True)
            raise typer.Exit(2) from None
        if summary.notice and not runs:
            typer.echo(summary.notice, err=True)
        runs.append((loaded, summary, sink.records))
    (old_pb, old_sum, old_records), (new_pb, new_sum, new_records) = runs
    diffs = _diff.compare(old_records, new_records)
    counts = _diff.totals(diffs)
    order = [r.name for r in new_pb.model.rules] + [r.name for r in old_pb.model.rules] + [
        c.name for pb in (new_pb, old_pb) for c in pb.model.campaigns]
    per_rule = _diff.by_rule(diffs, order)
    shown = diffs if unmasked else [d.masked() for d in diffs]
    if output is Output.jsonl:
        for item in shown:
            typer.echo(json.dumps(item.to_json(), ensure_ascii=False))
        typer.echo(json.dumps({"summary": counts, "by_rule": per_rule,
                               "actions_old": len(old_records),
                               "actions_new": len(new_records),
                               "quarantined_old": old_sum.quarantined,
                               "quarantined_new": new_sum.quarantined},
                              ensure_ascii=False))
        raise typer.Exit(1 if diffs else 0)
    console = new_console()
    typer.echo(f"{old} -> {new} over {events}"
               f"{' until ' + new_sum.end if new_sum.end else ''} ({new_sum.engine} engine)")
    typer.echo(f"actions: {len(old_records)} before, {len(new_records)} after; events: "
               f"{new_sum.events_read} read, {old_sum.quarantined} quarantined before, "
               f"{new_sum.quarantined} after")
    if per_rule:
        table = Table(title="Differences by rule", title_justify="left")
        table.add_column("rule")
        for kind in _diff.KINDS:
            table.add_column(kind, justify="right")
        for name, row in per_rule.items():
            table.add_row(name, *(str(row[kind]) for kind in _diff.KINDS))
        console.print(table)
        chosen = _diff.sample(diffs, sample)
        everyone = len({d.customer_id for d in diffs})
        if chosen:
            typer.echo(f"Customers: {len(chosen)} of {everyone} with differences (the first by "
                       "customer id; --sample N for more)")
            for customer_id in chosen:
                typer.echo(customer_id if unmasked else mask_text(customer_id))
                for raw, item in zip(diffs, shown, strict=True):
                    if raw.customer_id == customer_id:
                        for line in _diff.describe(item):
                            typer.echo("  " + line)
    else:
        typer.echo("no differences")
    typer.echo(_diff.summary_line(counts))
    raise typer.Exit(1 if diffs else 0)


class _Records(io.StringIO):
    """A text sink for `simulate`'s JSONL output that keeps the action records as dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                self.records.append(json.loads(line))
        return len(text)


def review(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    events: EventsOption,
    experiment: Annotated[str | None, typer.Option(help="The experiment to review.")] = None,
    rule: Annotated[str | None, typer.Option(help="Or: a pilot rule (with `sample`) to "
                                             "review, its sample against the rest.")] = None,
    profiles: ProfilesOption = None,
    end: Annotated[str | None, typer.Option(help="Replay until this time.")] = None,
    goal: Annotated[str | None, typer.Option(help="Goal event type (default: the "
                                             "experiment's goal).")] = None,
    within: Annotated[str | None, typer.Option(help="Goal window after the exposure, e.g. "
                                               "14d (default: the experiment's).")] = None,
    engine: NativeEngineOption = "native",
    output: OutputOption = Output.table,
    workers: WorkersOption = 1,
    executor: ExecutorOption = Executor.processes,
    scheduler: SchedulerOption = None,
) -> None:
    """复盘: goal conversion per variant against the holdout, with confidence intervals."""
    from sopkit._offline.review import gather
    from sopkit._playbook.models import parse_duration

    loaded = load_or_exit(playbook)
    try:
        seconds = parse_duration(within) if within else None
    except ValueError as exc:
        typer.echo(f"error: --within: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        result = gather(loaded, events, experiment=experiment, rule=rule, profiles=profiles,
                        end=end, engine=engine, goal=goal, within=seconds, workers=workers,
                        executor=executor.value, scheduler=scheduler)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    data = result.to_json()
    if output is Output.jsonl:
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    console = new_console()
    console.print(f"[bold]{result.experiment}[/bold]: goal '{result.goal}' within "
                  f"{result.window_days:g} days of the first exposure")
    arms = Table(title="Arms", title_justify="left")
    for col in ("arm", "customers", "converted", "rate", "95% CI", "note"):
        arms.add_column(col, justify="left" if col in ("arm", "note") else "right")
    for arm in data["arms"]:
        low, high = arm["ci95"]
        arms.add_row(arm["arm"], str(arm["customers"]), str(arm["converted"]),
                     f"{arm['rate']:.1%}", f"{low:.1%} - {high:.1%}", arm["too_small"] or "")
    console.print(arms)
    comparisons = Table(title="Against the holdout", title_justify="left")
    for col in ("arm", "uplift", "95% CI", "verdict"):
        comparisons.add_column(col)
    for comp in data["comparisons"]:
        low, high = comp["ci95"]
        comparisons.add_row(comp["variant"], f"{comp['uplift'] * 100:+.1f} pts",
                            f"{low * 100:+.1f} to {high * 100:+.1f}", comp["verdict"])
    console.print(comparisons)
