"""The `sopkit` command line. Exit codes: 0 ok, 1 invalid playbook or failed run, 2 usage.

Every command turns a SopkitError into a message and its exit code; tracebacks are for bugs.
"""

from __future__ import annotations

import enum
import io
import json
import sys
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from ._errors import PlaybookError, Problem, SopkitError
from ._load import load

app = typer.Typer(
    name="sopkit",
    help="Customer-retention SOPs as code: check, simulate and explain TOML playbooks.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


class Output(enum.StrEnum):
    table = "table"
    jsonl = "jsonl"


def _console(stderr: bool = False) -> Console:
    terminal = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, width=None if terminal else 100, highlight=False,
                   soft_wrap=not terminal)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sopkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """sopkit: customer-retention playbooks you can check, simulate and trust."""


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def render_problem(problem: Problem) -> str:
    """A problem as compiler-style text: location, message, the source line, a caret, a hint."""
    loc = problem.location
    lines = [f"{loc.file}:{loc.line}:{loc.column}: {problem.severity}: "
             f"{loc.key + ': ' if loc.key else ''}{problem.message}"]
    try:
        source = Path(loc.file).read_text(encoding="utf-8").splitlines()[loc.line - 1]
    except (OSError, IndexError, UnicodeDecodeError):
        source = None
    if source is not None:
        gutter = f"{loc.line:>5} | "
        lines.append(gutter + source)
        lines.append(" " * (len(gutter) - 2) + "| " + " " * _width(source[: loc.column - 1]) + "^")
    if problem.suggestion:
        lines.append(f"  hint: {problem.suggestion}")
    return "\n".join(lines)


@app.command()
def check(
    playbooks: Annotated[list[Path], typer.Argument(help="Playbook TOML files.",
                                                    show_default=False)],
    output: Annotated[Output, typer.Option(help="table for people, jsonl for machines.")] =
    Output.table,
    strict: Annotated[bool, typer.Option("--strict", help="Also lint valid playbooks (never-"
                                         "true conditions, shadowed stages, overlapping rules, "
                                         "uncapped channels, platform limits); any warning "
                                         "makes the exit code 1.")] = False,
) -> None:
    """Validate playbooks: exit 0 if all are valid, 1 if any is not, 2 on usage errors."""
    failed = False
    for path in playbooks:
        try:
            loaded = load(path)
        except PlaybookError as exc:
            failed = True
            for problem in exc.problems:
                if output is Output.jsonl:
                    typer.echo(json.dumps(problem.to_json(), ensure_ascii=False))
                else:
                    typer.echo(render_problem(problem))
            if output is Output.table:
                count = len(exc.problems)
                typer.echo(f"{path}: {count} problem{'s' if count != 1 else ''}")
            continue
        warnings: list[Problem] = []
        if strict:
            from ._lint import lint

            warnings = lint(loaded)
            failed = failed or bool(warnings)
            for problem in warnings:
                if output is Output.jsonl:
                    typer.echo(json.dumps(problem.to_json(), ensure_ascii=False))
                else:
                    typer.echo(render_problem(problem))
        if output is Output.table:
            if warnings:
                count = len(warnings)
                typer.echo(f"{path}: valid, {count} warning{'s' if count != 1 else ''}")
                continue
            model = loaded.model
            typer.echo(f"{path}: ok ({len(model.rules)} rules, {len(model.tags)} tags, "
                       f"{len(model.stages)} stages, {len(model.metrics)} metrics)")
    raise typer.Exit(1 if failed else 0)


@app.command()
def schema(
    fragment: Annotated[bool, typer.Option("--fragment", help="The schema of an include "
                                           "fragment (no [playbook] table).")] = False,
) -> None:
    """Print the playbook JSON Schema (for taplo / Even Better TOML via `#:schema`)."""
    from ._schema import playbook_schema

    typer.echo(json.dumps(playbook_schema(fragment), ensure_ascii=False, indent=2))


@app.command(name="compile")
def compile_cmd(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
) -> None:
    """Print the compiled RuleIR as JSON (what the engines run)."""
    from ._compile import compile_playbook

    loaded = _load_or_exit(playbook)
    typer.echo(json.dumps(compile_playbook(loaded.model), ensure_ascii=False, indent=1))


def _load_or_exit(path: Path) -> Any:
    try:
        return load(path)
    except PlaybookError as exc:
        for problem in exc.problems:
            typer.echo(render_problem(problem), err=True)
        typer.echo(f"{path}: invalid; run `sopkit check {path}`", err=True)
        raise typer.Exit(1) from None


@app.command()
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
    progress: Annotated[bool | None, typer.Option(help="Progress bar (default: on a "
                                                  "terminal).")] = None,
) -> None:
    """Replay an event history on a virtual clock and report every action the playbook takes."""
    from ._simulate import simulate as run_simulation

    loaded = _load_or_exit(playbook)
    if quarantine is None:
        quarantine = (out.with_name(out.stem + ".quarantine.jsonl") if out
                      else Path("sopkit-quarantine.jsonl"))
    show_progress = sys.stderr.isatty() if progress is None else progress
    handle = out.open("w", encoding="utf-8") if out else None
    try:
        if show_progress:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                          console=_console(stderr=True), transient=True) as bar:
                tasks: dict[str, Any] = {}

                def tick(label: str, done: int, total: int) -> None:
                    if label not in tasks:
                        tasks[label] = bar.add_task(f"reading {label}", total=total)
                    bar.update(tasks[label], completed=done)

                summary = run_simulation(loaded, events, profiles=profiles, start=start,
                                         end=end, out=handle, quarantine=quarantine,
                                         engine=engine, masked=not unmasked, progress=tick)
        else:
            summary = run_simulation(loaded, events, profiles=profiles, start=start, end=end,
                                     out=handle, quarantine=quarantine, engine=engine,
                                     masked=not unmasked)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    finally:
        if handle:
            handle.close()
    if summary.notice:
        typer.echo(summary.notice, err=True)
    if summary.quarantined == 0 and quarantine.exists() and quarantine.stat().st_size == 0:
        quarantine.unlink()
    if output is Output.jsonl:
        typer.echo(json.dumps(summary.to_json(), ensure_ascii=False))
    else:
        print_summary(summary, out)


def print_summary(summary: Any, out: Path | None) -> None:
    """The simulation summary as rich tables."""
    console = _console()
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
    statuses = ("planned", "suppressed", "cancelled")
    for status in statuses:
        rules.add_column(status, justify="right")
    for name, counts in summary.by_rule.items():
        rules.add_row(name, *(str(counts.get(status, 0)) for status in statuses))
    console.print(rules)
    _print_days(console, summary.by_day)
    console.print(_counts("Customers by stage at the end", "stage", "customers", summary.stages))
    console.print(_counts("Tags held at the end", "tag", "customers", summary.tags))
    if summary.quarantine_reasons:
        console.print(_counts("Quarantined records", "reason", "records",
                              summary.quarantine_reasons))


def _counts(title: str, key: str, unit: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(key)
    table.add_column(unit, justify="right")
    for name, count in counts.items():
        table.add_row(name, str(count))
    return table


def _print_days(console: Console, by_day: dict[str, int]) -> None:
    table = Table(title="Planned actions per day", title_justify="left")
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
    table.title = "Planned actions per month (every day: --output jsonl, by_day)"
    table.add_column("month")
    table.add_column("actions", justify="right")
    table.add_column("busiest day", justify="right")
    for month in sorted(months):
        days = {d: c for d, c in by_day.items() if d.startswith(month)}
        top = max(days, key=lambda d: (days[d], d))
        table.add_row(month, str(months[month]), f"{top} ({days[top]})")
    console.print(table)

@app.command(name="diff")
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
) -> None:
    """Replay two versions of a playbook on one history and show what the change changes.

    Exit codes, like diff(1): 0 no difference, 1 differences, 2 usage error or an invalid
    playbook.
    """
    from . import _diff
    from ._simulate import simulate as run_simulation

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
                                     engine=engine, masked=False)
        except SopkitError as exc:
            typer.echo(f"error: {path}: {exc}", err=True)
            raise typer.Exit(2) from None
        if summary.notice and not runs:
            typer.echo(summary.notice, err=True)
        runs.append((loaded, summary, sink.records))
    (old_pb, old_sum, old_records), (new_pb, new_sum, new_records) = runs
    diffs = _diff.compare(old_records, new_records)
    counts = _diff.totals(diffs)
    order = [r.name for r in new_pb.model.rules] + [r.name for r in old_pb.model.rules]
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
    console = _console()
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
                typer.echo(customer_id)
                for item in shown:
                    if item.customer_id == customer_id:
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



def _open_store(url: str) -> Any:
    from ._store import open_store

    try:
        return open_store(url)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _clock_at(loaded: Any, at: str | None) -> Any:
    """A clock function: the system clock, or a fixed instant for replays and tests."""
    import time as _time

    if at is None:
        return lambda: int(_time.time())
    from ._clock import Calendar

    try:
        fixed = Calendar(loaded.model.playbook.timezone).parse(at)
    except ValueError:
        typer.echo(f"error: --clock/--at {at!r} is not an ISO 8601 time", err=True)
        raise typer.Exit(2) from None
    return lambda: fixed


@app.command()
def run(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    store: Annotated[str, typer.Option(help="State and outbox: an SQLite file (default "
                                       "sopkit.db) or postgresql://...")] = "sopkit.db",
    events: Annotated[str | None, typer.Option(
        help="Events: a JSONL/CSV file, or - for stdin. Resumes after the last committed "
        "line on restart.")] = None,
    profiles: Annotated[Path | None, typer.Option(help="Customer profiles, loaded when the "
                                                  "store is new.", exists=True,
                                                  dir_okay=False)] = None,
    follow: Annotated[bool, typer.Option(help="Keep reading the events file as it grows.")] =
    False,
    once: Annotated[bool, typer.Option(help="Apply the input, advance to now, dispatch what "
                                       "is due, then exit (for cron).")] = False,
    clock: Annotated[str | None, typer.Option(help="Pretend it is this time (replays and "
                                              "tests); default: the system clock.")] = None,
    lateness: Annotated[str, typer.Option(help="How late an event may arrive: time only "
                                          "advances to now minus this.")] = "60s",
    batch: Annotated[int, typer.Option(help="Events per committed transaction.", min=1)] = 200,
    tick: Annotated[float, typer.Option(help="Seconds between clock ticks when idle.")] = 5.0,
    engine: Annotated[str, typer.Option(help="Rule engine: durable (default) or native.")] =
    "durable",
    quarantine: Annotated[Path, typer.Option(help="Where bad records go (appended).")] =
    Path("sopkit-quarantine.jsonl"),
    worker: Annotated[str | None, typer.Option(help="This dispatcher's name in leases.")] =
    None,
    output: Annotated[Output, typer.Option(help="table or jsonl for the final summary.")] =
    Output.table,
) -> None:
    """Run a playbook live: apply events, let time pass, and deliver through the outbox.

    Exit codes: 0 stopped cleanly, 1 invalid playbook, chain error or store mismatch,
    2 usage or channel configuration error.
    """
    import os
    import socket

    from ._dispatch import Dispatcher
    from ._io import Quarantine
    from ._live import LiveRun, Stopper, build_channels, run_live
    from ._models import parse_duration

    loaded = _load_or_exit(playbook)
    try:
        late = 0 if lateness.strip() in ("0", "0s") else parse_duration(lateness)
    except ValueError as exc:
        typer.echo(f"error: --lateness: {exc}", err=True)
        raise typer.Exit(2) from None
    the_store = _open_store(store)
    stop = Stopper()
    stop.install()
    try:
        channels = build_channels(loaded, os.environ)
        live = LiveRun(loaded, the_store, engine=engine)
        name = worker or f"{socket.gethostname()}:{os.getpid()}"
        dispatcher = Dispatcher(the_store, channels, worker=name)
        jail = Quarantine(quarantine, masked=True, append=True)
        try:
            stats = run_live(live, events=events, follow=follow, once=once,
                             clock=_clock_at(loaded, clock), lateness=late,
                             dispatcher=dispatcher, quarantine=jail, batch=batch, tick=tick,
                             stop=stop, profiles=profiles)
        finally:
            jail.close()
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    finally:
        the_store.close()
    if output is Output.jsonl:
        typer.echo(json.dumps(stats.to_json(), ensure_ascii=False))
        return
    console = _console()
    console.print(f"events: {stats.events_read} read, {stats.events_applied} applied, "
                  f"{stats.quarantined} quarantined"
                  + (f" (see {quarantine})" if stats.quarantined else "")
                  + (f", {stats.events_skipped} already applied earlier"
                     if stats.events_skipped else "")
                  + f"; customers: {stats.customers}; new outbox rows: {stats.rows_new}")
    console.print(_counts("Dispatched in this run", "result", "rows", stats.dispatched))
    console.print(_counts("Outbox", "status", "rows", stats.outbox))


@app.command(name="dry-run")
def dry_run(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    store: Annotated[str, typer.Option(help="The store a `sopkit run` keeps.")] = "sopkit.db",
    at: Annotated[str | None, typer.Option(help="Pretend it is this time (default: now).")] =
    None,
    engine: Annotated[str, typer.Option(help="Rule engine: durable (default) or native.")] =
    "durable",
    output: Annotated[Output, typer.Option(help="table for people, jsonl for machines.")] =
    Output.table,
    unmasked: Annotated[bool, typer.Option(help="Show phone numbers and e-mails in full.")] =
    False,
) -> None:
    """Show what would be dispatched now from the stored state, sending nothing.

    Exit codes: 0 nothing would be sent, 3 something would, 1 invalid playbook or store
    mismatch, 2 usage. Sending for real is `sopkit run`, never a flag here.
    """
    from ._live import LiveRun, would_dispatch
    from ._mask import mask

    loaded = _load_or_exit(playbook)
    the_store = _open_store(store)
    try:
        live = LiveRun(loaded, the_store, engine=engine)
        rows, later = would_dispatch(live, _clock_at(loaded, at)())
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    finally:
        the_store.close()
    shown = [r.message if unmasked else mask(r.message) for r in rows]
    if output is Output.jsonl:
        for row, message in zip(rows, shown, strict=True):
            typer.echo(json.dumps({"key": row.key, "due_at": row.due_at, "status": row.status,
                                   "source": "outbox" if row.id is not None else "wake-up",
                                   "message": message}, ensure_ascii=False))
    else:
        console = _console()
        table = Table(title=f"Would dispatch now: {len(rows)}"
                      + (f" ({later} more pending later)" if later else ""),
                      title_justify="left")
        for col in ("due", "channel", "kind", "customer", "rule", "what"):
            table.add_column(col)
        from ._clock import Calendar

        cal = Calendar(loaded.model.playbook.timezone)
        for row, message in zip(rows, shown, strict=True):
            body = message.get("body", {})
            what = body.get("message") or body.get("note") or json.dumps(
                body.get("payload", body.get("to", "")), ensure_ascii=False)
            table.add_row(cal.format(row.due_at), row.channel or "(task list)", row.kind,
                          row.customer_id, row.rule, str(what)[:80])
        console.print(table)
    raise typer.Exit(3 if rows else 0)


def main() -> None:
    """Console-script entry point."""
    app()
