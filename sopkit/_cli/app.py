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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from sopkit import __version__
from sopkit._errors import PlaybookError, Problem, SopkitError
from sopkit._playbook.load import load

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


# Options several commands share, declared once.
EventsOption = Annotated[Path, typer.Option("--events", help="Event history (as for "
                                            "simulate).", exists=True, dir_okay=False)]
ProfilesOption = Annotated[Path | None, typer.Option("--profiles", help="Customer profiles.",
                                                     exists=True, dir_okay=False)]
NativeEngineOption = Annotated[str, typer.Option("--engine", help="Rule engine: native "
                                                 "(default here) or durable.")]
DurableEngineOption = Annotated[str, typer.Option("--engine", help="Rule engine: durable "
                                                  "(default) or native.")]
OutputOption = Annotated[Output, typer.Option("--output", help="table for people, jsonl for "
                                              "machines.")]
UnmaskedOption = Annotated[bool, typer.Option("--unmasked", help="Show phone numbers and "
                                              "e-mails in full.")]
RunStoreOption = Annotated[str, typer.Option("--store", envvar="SOPKIT_STORE",
                                             help="The store a `sopkit run` keeps.")]


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


def _print_problems(problems: list[Problem], output: Output) -> None:
    for problem in problems:
        if output is Output.jsonl:
            typer.echo(json.dumps(problem.to_json(), ensure_ascii=False))
        else:
            typer.echo(render_problem(problem))


@app.command()
def check(
    playbooks: Annotated[list[Path], typer.Argument(help="Playbook TOML files.",
                                                    show_default=False)],
    output: OutputOption = Output.table,
    strict: Annotated[bool, typer.Option("--strict", help="Also lint valid playbooks (never-"
                                         "true conditions, shadowed stages, overlapping rules, "
                                         "uncapped channels, platform limits); any warning "
                                         "makes the exit code 1.")] = False,
) -> None:
    """Validate playbooks: exit 0 if all are valid, 1 if any is not, 2 on usage errors."""
    from sopkit._playbook.channel_check import channel_problems

    failed = False
    for path in playbooks:
        try:
            loaded = load(path)
            # what `run` would refuse in the channel tables, short of secrets
            errors: list[Problem] = channel_problems(loaded)
        except PlaybookError as exc:
            errors = list(exc.problems)
        if errors:
            failed = True
            _print_problems(errors, output)
            if output is Output.table:
                count = len(errors)
                typer.echo(f"{path}: {count} problem{'s' if count != 1 else ''}")
            continue
        warnings: list[Problem] = []
        if strict:
            from sopkit._playbook.lint import lint

            warnings = lint(loaded)
            failed = failed or bool(warnings)
            _print_problems(warnings, output)
        if output is Output.table:
            if warnings:
                count = len(warnings)
                typer.echo(f"{path}: valid, {count} warning{'s' if count != 1 else ''}")
                continue
            model = loaded.model
            campaigns = (f", {len(model.campaigns)} campaigns" if model.campaigns else "")
            typer.echo(f"{path}: ok ({len(model.rules)} rules, {len(model.tags)} tags, "
                       f"{len(model.stages)} stages, {len(model.metrics)} metrics{campaigns})")
    raise typer.Exit(1 if failed else 0)


@app.command()
def schema(
    fragment: Annotated[bool, typer.Option("--fragment", help="The schema of an include "
                                           "fragment (no [playbook] table).")] = False,
) -> None:
    """Print the playbook JSON Schema (for taplo / Even Better TOML via `#:schema`)."""
    from sopkit._playbook.schema import playbook_schema

    typer.echo(json.dumps(playbook_schema(fragment), ensure_ascii=False, indent=2))


@app.command(name="compile")
def compile_cmd(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
) -> None:
    """Print the compiled RuleIR as JSON (what the engines run)."""
    from sopkit._ir.compile import compile_playbook

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
    report: Annotated[Path | None, typer.Option(
        help="Write a self-contained HTML report with charts here (docs/report.md).",
        dir_okay=False)] = None,
    max_future: Annotated[str | None, typer.Option(
        help="Quarantine an event more than this (e.g. 30d) ahead of the events before it "
        "(default: no limit).")] = None,
) -> None:
    """Replay an event history on a virtual clock and report every action the playbook takes.

    Exit codes: 0 done, 1 invalid playbook, an input that ends early (truncated .gz), or
    every event record quarantined, 2 usage error (e.g. a file format sopkit cannot read).
    """
    from sopkit._offline.simulate import simulate as run_simulation

    loaded = _load_or_exit(playbook)
    ahead = _duration_option("--max-future", max_future)
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
                                         engine=engine, masked=not unmasked, progress=tick,
                                         report=collected, max_future=ahead)
        else:
            summary = run_simulation(loaded, events, profiles=profiles, start=start, end=end,
                                     out=handle, quarantine=quarantine, engine=engine,
                                     masked=not unmasked, report=collected, max_future=ahead)
    except SopkitError as exc:  # an error may quote a record or a customer id
        from sopkit._mask import mask_text

        typer.echo(f"error: {exc if unmasked else mask_text(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    finally:
        if handle:
            handle.close()
    if summary.notice:
        typer.echo(summary.notice, err=True)
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
    _exit_if_all_quarantined(summary.events_read, summary.events_applied
                             + summary.events_after_end, summary.quarantine_reasons,
                             quarantine)


def _duration_option(option: str, text: str | None) -> int | None:
    """A duration option's seconds; None for no value or "none"; exit 2 if unreadable."""
    from sopkit._playbook.models import parse_duration

    if text is None or text.strip().lower() in ("none", "off"):
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        typer.echo(f"error: {option}: {exc}, or none", err=True)
        raise typer.Exit(2) from None


def _exit_if_all_quarantined(read: int, used: int, reasons: dict[str, int],
                             quarantine: Path | None) -> None:
    """Exit 1 with a message when records were read and none could be used. A redelivered
    event (a known event_id) is a recognised record, not a sign of the wrong file."""
    if read == 0 or used + reasons.get("duplicate event_id", 0) > 0:
        return
    top = ", ".join(f"{kind} ({n})" for kind, n in
                    sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
    typer.echo(f"error: all {read} event records were quarantined ({top}); see "
               f"{quarantine}. Is it the right file, in the right format, for this playbook? "
               "/ 所有事件记录都被隔离，请检查文件和剧本", err=True)
    raise typer.Exit(1)


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
    console.print(_counts("Customers by stage at the end", "stage", "customers", summary.stages))
    console.print(_counts("Tags held at the end", "tag", "customers", summary.tags))
    if summary.rfm_segments:
        console.print(_counts("RFM segments at the end", "segment", "customers",
                              summary.rfm_segments))
    if summary.quarantine_reasons:
        console.print(_counts("Quarantined records", "reason", "records",
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


def _counts(title: str, key: str, unit: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(key)
    table.add_column(unit, justify="right")
    for name, count in counts.items():
        table.add_row(name, str(count))
    return table


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
@app.command()
def explain(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    events: EventsOption,
    customer: Annotated[str, typer.Option(help="The customer id to explain.")],
    profiles: ProfilesOption = None,
    at: Annotated[str | None, typer.Option(help="Explain up to this time (default: the last "
                                           "event).")] = None,
    engine: NativeEngineOption = "native",
    output: OutputOption = Output.table,
    unmasked: UnmaskedOption = False,
    send_from: Annotated[str | None, typer.Option(
        help="The live store's go-live instant: actions due before it show as backfilled "
        "(recorded, never sent).")] = None,
) -> None:
    """Show one customer's timeline: events, changes, actions, and why rules did not fire."""
    from sopkit._mask import mask, mask_text
    from sopkit._offline.explain import explain as run_explain

    shown = (lambda text: text) if unmasked else mask_text
    loaded = _load_or_exit(playbook)
    try:
        entries = run_explain(loaded, events, customer, profiles=profiles, at=at, engine=engine,
                              send_from=send_from)
    except SopkitError as exc:
        typer.echo(f"error: {shown(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if output is Output.jsonl:
        for entry in entries:
            record = entry.to_json()
            typer.echo(json.dumps(record if unmasked else mask(record), ensure_ascii=False))
        return
    console = _console()
    table = Table(title=f"{shown(customer)} in {loaded.model.playbook.name}",
                  title_justify="left")
    table.add_column("time")
    table.add_column("what")
    table.add_column("detail", overflow="fold")
    for entry in entries:
        table.add_row(entry.time[:16].replace("T", " "), entry.kind, shown(entry.text))
    console.print(table)

handover_app = typer.Typer(help="Staff hand-over (离职继承): who has taken over whom.",
                           no_args_is_help=True, rich_markup_mode=None)
app.add_typer(handover_app, name="handover")


@handover_app.command("status")
def handover_status_cmd(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    store: RunStoreOption = "sopkit.db",
    output: OutputOption = Output.table,
    all_rows: Annotated[bool, typer.Option("--all", help="List customers already taken "
                                           "over too.")] = False,
    unmasked: UnmaskedOption = False,
) -> None:
    """List each handed-over customer and whether the successor has them (polls WeCom).

    Exit codes: 0 every customer is taken over, 3 some are not yet, 1 invalid playbook,
    2 usage or channel configuration errors.
    """
    import os

    from sopkit._live.loop import build_channels, handover_status
    from sopkit._mask import mask, mask_text

    loaded = _load_or_exit(playbook)
    spec = loaded.model.handover
    only = {spec.channel} if spec is not None and spec.channel else set()
    with _store(store) as the_store:
        channels = build_channels(loaded, os.environ, only)
        try:
            lines = handover_status(the_store, channels)
        finally:
            _close_all(channels)
    waiting = [line for line in lines if not line.taken_over]
    shown = lines if all_rows else waiting
    if output is Output.jsonl:
        for line in shown:
            data = line.to_json()
            typer.echo(json.dumps(data if unmasked else mask(data), ensure_ascii=False))
    else:
        console = _console()
        console.print(f"hand-overs: {len(lines)} customers, {len(lines) - len(waiting)} taken "
                      f"over, {len(waiting)} not yet")
        table = Table(title="Not taken over yet" if not all_rows else "Hand-overs",
                      title_justify="left")
        for col in ("customer", "from", "to", "outbox", "WeCom"):
            table.add_column(col)
        text = (lambda value: value) if unmasked else mask_text  # staff ids may be phones
        for line in shown:
            table.add_row(text(line.customer_id), text(line.from_owner),
                          text(line.to) if line.to else "(none)", line.outbox,
                          text(line.platform))
        if shown:
            console.print(table)
    raise typer.Exit(3 if waiting else 0)


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
                                     engine=engine, masked=False)
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


@app.command()
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
) -> None:
    """复盘: goal conversion per variant against the holdout, with confidence intervals."""
    from sopkit._offline.review import gather
    from sopkit._playbook.models import parse_duration

    loaded = _load_or_exit(playbook)
    try:
        seconds = parse_duration(within) if within else None
    except ValueError as exc:
        typer.echo(f"error: --within: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        result = gather(loaded, events, experiment=experiment, rule=rule, profiles=profiles,
                        end=end, engine=engine, goal=goal, within=seconds)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    data = result.to_json()
    if output is Output.jsonl:
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    console = _console()
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


def _beside_store(store: str) -> Path:
    """The default quarantine file of a run: beside an SQLite store, else in the cwd."""
    if store.startswith(("postgresql:", "postgres:")) or store == ":memory:":
        return Path("sopkit-quarantine.jsonl")
    path = Path(store.removeprefix("sqlite:///"))
    return path.with_name(path.stem + ".quarantine.jsonl")


@contextmanager
def _closing(channels: dict[str, Any], restore_signals: Any) -> Iterator[None]:
    """Afterwards: the old signal handlers back, every channel's connections closed."""
    try:
        yield
    finally:
        restore_signals()
        _close_all(channels)


def _close_all(channels: dict[str, Any]) -> None:
    """The last step of each channel's life: close those that are Closable."""
    from sopkit.channels import Closable

    for channel in channels.values():
        if isinstance(channel, Closable):
            channel.close()


def _clock_at(loaded: Any, at: str | None) -> Any:
    """A clock function: the system clock, or a fixed instant for replays and tests."""
    import time as _time

    if at is None:
        return lambda: int(_time.time())
    from sopkit._lang.clock import Calendar

    try:
        fixed = Calendar(loaded.model.playbook.timezone).parse(at)
    except ValueError:
        typer.echo(f"error: --clock/--at {at!r} is not an ISO 8601 time", err=True)
        raise typer.Exit(2) from None
    return lambda: fixed


@app.command()
def run(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    store: Annotated[str, typer.Option(envvar="SOPKIT_STORE",
                                       help="State and outbox: an SQLite file (default "
                                       "sopkit.db) or postgresql://...")] = "sopkit.db",
    events: Annotated[str | None, typer.Option(
        help="Events: a JSONL/CSV file, or - for stdin. Resumes after the last committed "
        "line on restart.")] = None,
    profiles: Annotated[Path | None, typer.Option(help="Customer profiles, loaded when the "
                                                  "store is new.", exists=True,
                                                  dir_okay=False)] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep reading the events file as "
                                         "it grows.")] = False,
    once: Annotated[bool, typer.Option("--once", help="Apply the input, advance to now, "
                                       "dispatch what is due, then exit (for cron).")] = False,
    clock: Annotated[str | None, typer.Option(help="Pretend it is this time (replays and "
                                              "tests); default: the system clock.")] = None,
    lateness: Annotated[str, typer.Option(help="How late an event may arrive: time only "
                                          "advances to now minus this.")] = "60s",
    batch: Annotated[int, typer.Option(help="Events per committed transaction.", min=1)] = 200,
    tick: Annotated[float, typer.Option(help="Seconds between clock ticks when idle.")] = 5.0,
    engine: DurableEngineOption = "durable",
    quarantine: Annotated[Path | None, typer.Option(
        help="Where bad records go, appended (default: next to an SQLite store, "
        "STORE.quarantine.jsonl; else sopkit-quarantine.jsonl).")] = None,
    worker: Annotated[str | None, typer.Option(
        help="This dispatcher's name in leases; a restart under the same name takes its "
        "rows and the store's loop lock back at once (default: host:pid, whose leases run "
        "out after --lease).")] = None,
    lease: Annotated[int, typer.Option(help="Seconds a dispatcher holds the rows it is "
                                       "sending (wall clock).", min=1)] = 60,
    send_from: Annotated[str | None, typer.Option(
        help="Go-live cutover: actions due before this time are recorded as backfilled "
        "(counted, never sent). Default for a new store: the clock minus --lateness; then "
        "kept in the store.")] = None,
    output: Annotated[Output, typer.Option(help="table or jsonl for the final summary.")] =
    Output.table,
    max_future: Annotated[str, typer.Option(
        help="Quarantine an event more than this ahead of the clock, e.g. a year typo "
        "(none: no limit).")] = "5m",
) -> None:
    """Run a playbook live: apply events, let time pass, and deliver through the outbox.

    Exit codes: 0 stopped cleanly; 1 invalid playbook, chain error, the loop lock lost, an
    input that ends early (truncated .gz) or every event record of this run quarantined;
    2 usage, channel configuration error (e.g. a file format sopkit cannot read), another
    run holds the store, or store mismatch (another playbook, or a version to deploy with
    `sopkit migrate` first).
    """
    import os
    import socket
    import time

    from sopkit._io import Quarantine
    from sopkit._live.dispatch import Dispatcher, expiry
    from sopkit._live.loop import LiveRun, Stopper, build_channels, record_clock, run_live
    from sopkit._live.looplock import holding
    from sopkit._live.store import open_store
    from sopkit._playbook.models import parse_duration

    loaded = _load_or_exit(playbook)
    try:
        late = 0 if lateness.strip() in ("0", "0s") else parse_duration(lateness)
    except ValueError as exc:
        typer.echo(f"error: --lateness: {exc}", err=True)
        raise typer.Exit(2) from None
    ahead = _duration_option("--max-future", max_future)
    try:  # channels first: a missing secret stops the run before the store is touched
        channels: dict[str, Any] = build_channels(loaded, os.environ)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    tell_time = _clock_at(loaded, clock)
    stop = Stopper()
    restore_signals = stop.install()
    name = worker or f"{socket.gethostname()}:{os.getpid()}"

    def lost() -> None:
        stop.requested = True  # the next commit refuses anyway; stop after this batch

    with _store(store, create=True) as the_store, _closing(channels, restore_signals), \
            holding(the_store, name, wall=time.time, on_lost=lost,
                    reopen=(lambda: open_store(store, create=False))
                    if the_store.RENEWS else None) as beat:
        # the loop lock comes first: nothing of the state is read before this run holds it
        live = LiveRun(loaded, the_store, engine=engine)
        _past_campaigns(live.runtime)
        record_clock(the_store, tell_time() if clock is not None else None)
        if send_from is not None:
            live.send_from = _clock_at(loaded, send_from)()
        elif live.fresh and live.send_from is None:  # a new store does not send the past
            live.send_from = tell_time() - late
        if worker:  # a restarted worker of this name has nothing in flight: take it back
            the_store.release_worker(worker)
        dispatcher = Dispatcher(the_store, channels, worker=name, lease_seconds=lease,
                                wall=lambda: int(time.time()),
                                screens=(expiry, live.screen_consent))
        if quarantine is None:
            quarantine = _beside_store(store)
        jail = Quarantine(quarantine, masked=True, append=True)
        try:
            stats = run_live(live, events=events, follow=follow, once=once,
                             clock=tell_time, lateness=late,
                             dispatcher=dispatcher, quarantine=jail, batch=batch, tick=tick,
                             stop=stop, profiles=profiles, max_future=ahead)
        finally:
            jail.close()
        if beat.lost:
            typer.echo(f"error: another run took over the event loop of store {store}; "
                       "this run stopped (see `sopkit outbox list`)", err=True)
            raise typer.Exit(1)
    if output is Output.jsonl:
        typer.echo(json.dumps(stats.to_json(), ensure_ascii=False))
    else:
        _print_run(stats, quarantine)
    _exit_if_all_quarantined(stats.events_read, stats.events_applied, jail.reasons,
                             quarantine)


def _print_run(stats: Any, quarantine: Path) -> None:
    """The summary of one `run`."""
    console = _console()
    console.print(f"events: {stats.events_read} read, {stats.events_applied} applied, "
                  f"{stats.quarantined} quarantined"
                  + (f" (see {quarantine})" if stats.quarantined else "")
                  + (f", {stats.events_skipped} already applied earlier"
                     if stats.events_skipped else "")
                  + f"; customers: {stats.customers}; new outbox rows: {stats.rows_new}")
    console.print(_counts("Dispatched in this run", "result", "rows", stats.dispatched))
    for name, reason in stats.disabled.items():
        console.print(f"[bold]channel {name} disabled[/bold] until restart: {reason}; its "
                      "other rows stay pending (`sopkit outbox list --status pending`)")
    console.print(_counts("Outbox", "status", "rows", stats.outbox))


@app.command()
def migrate(
    playbook: Annotated[Path, typer.Argument(help="The version to deploy (or roll back to).")],
    store: RunStoreOption = "sopkit.db",
    plan: Annotated[bool, typer.Option("--plan", help="Show what would happen to the "
                                       "customers in flight; write nothing.")] = False,
    events: Annotated[Path | None, typer.Option(
        help="History to replay into new or redefined metrics (nothing is sent).",
        exists=True, dir_okay=False)] = None,
    engine: Annotated[str, typer.Option(help="Engine that evaluates conditions at deploy "
                                        "time (native or durable).")] = "native",
    output: OutputOption = Output.table,
    unmasked: UnmaskedOption = False,
) -> None:
    """Deploy a new version of a live playbook onto its store, in one transaction.

    Every change is listed with the customers it touches (docs/live.md#deploying-a-new-
    version). Exit codes: 0 deployed (or, with --plan, planned), 1 invalid playbook,
    2 usage or store mismatch (another playbook, or the same version with other rules).
    """
    import time

    from sopkit._live.migrate import apply as apply_migration
    from sopkit._live.migrate import plan as plan_migration

    loaded = _load_or_exit(playbook)
    with _store(store) as the_store:
        if the_store.get_meta("playbook") == f"{loaded.name}:{loaded.model.playbook.version}" \
                and the_store.get_meta("ir") is not None:
            from sopkit._live.loop import fingerprint
            from sopkit._runtime.runtime import Runtime

            if the_store.get_meta("fingerprint") == fingerprint(Runtime(loaded).ir):
                typer.echo(f"{the_store.url} already runs {loaded.name} version "
                           f"{loaded.model.playbook.version}: nothing to migrate")
                return
        new_rows = 0
        if plan:
            migration = plan_migration(loaded, the_store, engine=engine, events=events)
        else:  # a deployment is a writer: no run may hold the store's event loop meanwhile
            import os
            import socket

            from sopkit._live.looplock import holding

            with holding(the_store, f"migrate@{socket.gethostname()}:{os.getpid()}",
                         wall=time.time, reopen=None, on_lost=lambda: None):
                migration = plan_migration(loaded, the_store, engine=engine, events=events)
                new_rows = apply_migration(migration, the_store, int(time.time()))
    _print_migration(migration, plan, new_rows, output, unmasked)


def _print_migration(migration: Any, plan: bool, new_rows: int, output: Output,
                     unmasked: bool) -> None:
    head = (f"{'plan' if plan else 'deployed'}: {migration.old} → {migration.new} at "
            f"{migration.runtime.calendar.format(migration.at)}; "
            f"{len(migration.runtime.customers)} customers, "
            f"{len(migration.unchanged)} rules unchanged")
    if output is Output.jsonl:
        for change in migration.changes:
            typer.echo(json.dumps(change.to_json(unmasked), ensure_ascii=False))
        typer.echo(json.dumps({"plan" if plan else "deployed": migration.new,
                               "from": migration.old, "customers":
                               len(migration.runtime.customers),
                               "unchanged": migration.unchanged, "outbox_rows":
                               len(migration.rows), "new_rows": new_rows},
                              ensure_ascii=False))
        return
    from sopkit._mask import mask_text

    console = _console()
    table = Table(title=head, title_justify="left")
    for col in ("change", "name", "what happens", "customers", "sample"):
        table.add_column(col, justify="right" if col == "customers" else "left")
    for change in migration.changes:
        sample = change.sample if unmasked else [mask_text(c) for c in change.sample]
        table.add_row(change.kind, change.name, change.effect, str(change.customers),
                      ", ".join(sample))
    console.print(table)
    if migration.rows:
        console.print(f"outbox: {len(migration.rows)} rows from the deployment "
                      f"(cancellations and backfills)"
                      + ("" if plan else f", {new_rows} new"))
    if plan:
        console.print("nothing was written; run again without --plan to deploy")


def _past_campaigns(runtime: Any) -> None:
    """Notices for one-off campaigns already behind a restored store's clock."""
    from sopkit._runtime.campaigns import past_one_offs

    if runtime.now_ts is None:
        return
    for name, at_text in past_one_offs(runtime, runtime.now_ts):
        typer.echo(f"notice: campaign '{name}' (at {at_text}) is before the store's clock "
                   f"{runtime.calendar.format(runtime.now_ts)}: it fired already, or never will",
                   err=True)


@app.command(name="dry-run")
def dry_run(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    store: RunStoreOption = "sopkit.db",
    at: Annotated[str | None, typer.Option(help="Pretend it is this time (default: now, or "
                                           "the store's replay clock if `run --clock` wrote "
                                           "it).")] = None,
    engine: DurableEngineOption = "durable",
    output: OutputOption = Output.table,
    unmasked: UnmaskedOption = False,
    window: Annotated[str, typer.Option(help="Also list the campaign firings due within this "
                                        "long after now, with their audience now (0: none).")]
    = "7d",
) -> None:
    """Show what would be dispatched now from the stored state, sending nothing; rows the
    dispatcher would settle unsent (expired, consent withdrawn, backfilled) say so.

    Exit codes: 0 nothing would be sent, 3 something would, 1 invalid playbook, 2 usage or
    store mismatch. Sending for real is `sopkit run`, never a flag here.
    """
    from sopkit._live.loop import LiveRun, stored_clock, would_dispatch
    from sopkit._mask import mask, mask_key, mask_text
    from sopkit._playbook.models import parse_duration
    from sopkit._runtime.campaigns import audience_sizes

    loaded = _load_or_exit(playbook)
    try:
        ahead = 0 if window.strip() in ("0", "0s") else parse_duration(window)
    except ValueError as exc:
        raise _usage(f"--window: {exc}") from None
    with _store(store) as the_store:
        live = LiveRun(loaded, the_store, engine=engine)
        rt = live.runtime
        _past_campaigns(rt)
        replay = stored_clock(the_store) if at is None else None
        now = replay if replay is not None else _clock_at(loaded, at)()
        if replay is not None:
            typer.echo(f"notice: this store runs on a replay clock (`run --clock`): showing "
                       f"{rt.calendar.format(replay)}; give --at for another time", err=True)
        rows, later = would_dispatch(live, now)
        upcoming = rt.campaign_plan.upcoming(now + 1, now + ahead) if ahead else []
        sizes = audience_sizes(rt, max(now, rt.now_ts or now)) if upcoming else {}
    shown = [r.message if unmasked else mask(r.message) for r in rows]
    sending = [r for r in rows if r.status in ("pending", "leased")]
    if output is Output.jsonl:
        for row, message in zip(rows, shown, strict=True):
            key = row.key if unmasked else mask_key(row.key, row.customer_id)
            typer.echo(json.dumps({"key": key, "due_at": row.due_at, "status": row.status,
                                   "source": "outbox" if row.id is not None else "wake-up",
                                   "reason": row.reason, "message": message},
                                  ensure_ascii=False))
        for when, campaign in upcoming:
            typer.echo(json.dumps({"source": "campaign", "campaign": campaign.name,
                                   "firing": rt.calendar.format(when),
                                   "channels": campaign.channels,
                                   "audience_now": sizes[campaign.name]}, ensure_ascii=False))
    else:
        console = _console()
        table = Table(title=f"Would dispatch now: {len(sending)}"
                      + (f", settle unsent: {len(rows) - len(sending)}"
                         if len(rows) > len(sending) else "")
                      + (f" ({later} more pending later)" if later else ""),
                      title_justify="left")
        for col in ("due", "channel", "kind", "customer", "rule", "what", "status"):
            table.add_column(col)
        from sopkit._lang.clock import Calendar

        cal = Calendar(loaded.model.playbook.timezone)
        for row, message in zip(rows, shown, strict=True):
            body = message.get("body", {})
            what = body.get("message") or body.get("note") or json.dumps(
                body.get("payload", body.get("to", "")), ensure_ascii=False)
            status = ("send" if row.status in ("pending", "leased")
                      else f"{row.status}: {row.reason}"[:60])
            table.add_row(cal.format(row.due_at), row.channel or "(task list)", row.kind,
                          row.customer_id if unmasked else mask_text(row.customer_id),
                          row.rule, str(what)[:80], status)
        console.print(table)
        if upcoming:
            firings = Table(title=f"Campaign firings in the next {window.strip()}: "
                            f"{len(upcoming)} (audience as of now)", title_justify="left")
            for col in ("firing", "campaign", "channels", "audience now"):
                firings.add_column(col, justify="right" if col == "audience now" else "left")
            for when, campaign in upcoming:
                firings.add_row(rt.calendar.format(when), campaign.name,
                                ", ".join(campaign.channels) or "(task list)",
                                str(sizes[campaign.name]))
            console.print(firings)
    raise typer.Exit(3 if sending else 0)


# -- sopkit outbox -------------------------------------------------------------------------

outbox_app = typer.Typer(
    name="outbox",
    help="Inspect and repair the outbox of a live store: list rows, retry dead letters, purge.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(outbox_app, name="outbox")

StoreOption = Annotated[str, typer.Option(
    "--store", envvar="SOPKIT_STORE", show_default=False,
    help="The store: an SQLite file (path or sqlite:///path) or postgresql://... "
         "(default: $SOPKIT_STORE).")]


@contextmanager
def _store(url: str, *, create: bool = False) -> Iterator[Any]:
    """The store at `url`, closed afterwards; SopkitErrors become `error: ...` and an exit code.

    Only `run` creates a store: elsewhere a path that is not one is a usage error (exit 2).
    Phone numbers and e-mails in an error raised while the store is in use (a customer id in
    a chain error) are masked."""
    from sopkit._live.store import open_store
    from sopkit._mask import mask_text

    try:
        store = open_store(url, create=create)
    except SopkitError as exc:  # about the store and its URL (the password already hidden)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    try:
        yield store
    except SopkitError as exc:
        typer.echo(f"error: {mask_text(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    finally:
        store.close()


def _usage(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _check_status(status: str, allowed: tuple[str, ...]) -> None:
    from sopkit._errors import did_you_mean

    if status not in allowed:
        hint = did_you_mean(status, allowed)
        raise _usage(f"--status: unknown status '{status}'" + (f"; {hint}" if hint else "")
                     + f" (statuses: {', '.join(allowed)})")


def _utc(seconds: int | None, sep: str = "T") -> str:
    """Unix seconds as UTC: ISO 8601 with Z, or (sep=" ") plain for tables headed UTC."""
    import datetime as dt

    if seconds is None:
        return ""
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return when.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + ("Z" if sep == "T" else "")


@outbox_app.command("list")
def outbox_list(
    store: StoreOption,
    status: Annotated[str | None, typer.Option(help="Only rows in this status.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's rows.")] = None,
    limit: Annotated[int | None, typer.Option(
        min=0, help="At most this many rows, oldest first; 0 for all (default: 50 for "
                    "table, all for jsonl).")] = None,
    output: OutputOption = Output.table,
    unmasked: Annotated[bool, typer.Option(help="Show phone numbers and e-mails in full.")] =
    False,
) -> None:
    """List outbox rows (by id) and count the rows in each status."""
    from sopkit._live.store import STATUSES
    from sopkit._mask import mask, mask_text

    if status is not None:
        _check_status(status, STATUSES)
    if limit is None:
        limit = 50 if output is Output.table else 0
    with _store(store) as db:
        found = db.rows(status, customer_id=customer, limit=limit + 1 if limit else None)
        counts = db.counts()
    more = bool(limit) and len(found) > limit
    found = found[:limit] if limit else found
    shown = (lambda text: text) if unmasked else mask_text
    if output is Output.jsonl:
        for row in found:
            data = row.to_json()
            typer.echo(json.dumps(data if unmasked else mask(data), ensure_ascii=False))
        typer.echo("rows per status: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
                   err=True)
        return
    console = _console()
    table = Table(title=f"Outbox of {db.url}", title_justify="left")
    for column in ("id", "status", "due (UTC)", "customer", "rule", "action", "tries",
                   "note"):
        table.add_column(column, justify="right" if column in ("id", "tries") else "left",
                         no_wrap=column in ("id", "status", "due (UTC)", "tries"),
                         overflow="fold", min_width=20 if column == "note" else None)
    for row in found:
        note = row.last_error or row.reason or ((row.receipt or {}).get("detail") or "")
        table.add_row(str(row.id), row.status, _utc(row.due_at, " "), shown(row.customer_id),
                      row.rule, f"{row.kind} {row.channel}".strip(), str(row.attempts),
                      shown(str(note)))
    console.print(table)
    if more:
        console.print(f"only the first {limit} matching rows are shown; --limit 0 shows all")
    console.print(_counts("Rows per status", "status", "rows", counts))


@outbox_app.command("retry")
def outbox_retry(
    store: StoreOption,
    ids: Annotated[list[int] | None, typer.Option(
        "--id", help="Retry this dead row (repeatable); default: every dead row.")] = None,
) -> None:
    """Put dead rows back to pending, due now, with their attempts reset.

    "Now" is the store's replay clock when its last `run` had --clock, else the system clock.
    """
    import time

    from sopkit._live.loop import stored_clock

    with _store(store) as db:
        if ids:
            found = {row.id: row for row in db.rows(ids=ids)}
            wrong = [f"row {i} does not exist" if i not in found else
                     f"row {i} is {found[i].status}, not dead"
                     for i in sorted(set(ids)) if i not in found or found[i].status != "dead"]
            if wrong:
                raise _usage("; ".join(wrong) + ": nothing was requeued (only dead rows can "
                             "be retried; see `sopkit outbox list --status dead`)")
        replay = stored_clock(db)
        due = replay if replay is not None else int(time.time())
        count = db.requeue(ids or None, "dead", due)
    if count:
        when = (f"due at the store's replay clock {_utc(due)} (`run --clock`)"
                if replay is not None else "due now")
        typer.echo(f"requeued {count} dead row{'s' if count != 1 else ''}: pending, {when} "
                   "(the dispatcher of `sopkit run` sends them)")
    else:
        typer.echo("no dead rows to retry")


@outbox_app.command("purge")
def outbox_purge(
    store: StoreOption,
    status: Annotated[str, typer.Option(
        help="Delete rows in this status: delivered, dead, suppressed, holdout or cancelled.",
        show_default=False)],
    before: Annotated[str | None, typer.Option(
        help="Only rows settled before this ISO 8601 date or time (UTC unless it has an "
             "offset).")] = None,
) -> None:
    """Delete settled rows (never pending or leased ones) and say how many."""
    import datetime as dt

    from sopkit._live.store import SENDABLE, SETTLED, STATUSES

    if status in SENDABLE:
        raise _usage(f"refusing to purge {status} rows: they have not been delivered yet "
                     f"(purge one of: {', '.join(SETTLED)})")
    _check_status(status, tuple(s for s in STATUSES if s not in SENDABLE))
    cutoff = None
    if before is not None:
        try:
            when = dt.datetime.fromisoformat(before)
        except ValueError:
            raise _usage(f"--before: '{before}' is not an ISO 8601 date or time "
                         "(e.g. 2024-06-01 or 2024-06-01T12:00:00+08:00)") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        cutoff = int(when.timestamp())
    with _store(store) as db:
        count = db.purge(status, cutoff)
    since = f" settled before {_utc(cutoff)}" if cutoff is not None else ""
    typer.echo(f"purged {count} {status} row{'s' if count != 1 else ''}{since}")


# -- sopkit campaign -----------------------------------------------------------------------

campaign_app = typer.Typer(
    name="campaign",
    help="Campaigns (群发): preview an audience before launch, read back what was sent.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(campaign_app, name="campaign")


def _campaign_or_exit(loaded: Any, name: str) -> None:
    from sopkit._errors import did_you_mean

    names = [c.name for c in loaded.model.campaigns]
    if name not in names:
        hint = did_you_mean(name, names) or ("the playbook declares no [[campaigns]]"
                                             if not names else "")
        raise _usage(f"unknown campaign '{name}'" + (f"; {hint}" if hint else ""))


@campaign_app.command("preview")
def campaign_preview(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    name: Annotated[str, typer.Argument(help="The campaign's name.")],
    at: Annotated[str, typer.Option(help="The instant to look at (ISO 8601; the playbook's "
                                    "timezone unless it has an offset).", show_default=False)],
    events: Annotated[Path | None, typer.Option(help="Event history up to --at (as for "
                                                "simulate).", exists=True, dir_okay=False)] =
    None,
    profiles: Annotated[Path | None, typer.Option(help="Customer profiles (with --events).",
                                                  exists=True, dir_okay=False)] = None,
    store: Annotated[str | None, typer.Option(help="Read the customers' state from a live "
                                              "store instead, page by page.")] = None,
    sample: Annotated[int, typer.Option(help="Members listed (the first by customer id).",
                                        min=0)] = 10,
    engine: NativeEngineOption = "native",
    output: OutputOption = Output.table,
    unmasked: UnmaskedOption = False,
) -> None:
    """Show who a campaign would reach at an instant, and each variant's message.

    Exit codes: 0 shown, 1 invalid playbook, 2 usage (an unknown campaign, neither or both
    of --events and --store).
    """
    from sopkit._mask import mask
    from sopkit._runtime.campaigns import history_runtime, preview, store_runtime, stored_customers

    loaded = _load_or_exit(playbook)
    _campaign_or_exit(loaded, name)
    if (events is None) == (store is None):
        raise _usage("give --events (a history, replayed up to --at) or --store (a live "
                     "store's state), not both")
    when = _clock_at(loaded, at)()
    try:
        if events is not None:
            runtime, bad = history_runtime(loaded, events, profiles, when, engine)
            customers: Any = (runtime.customers[c] for c in sorted(runtime.customers))
            found = preview(runtime, name, when, customers, sample)
        else:
            bad = 0
            with _store(store or "") as db:
                runtime = store_runtime(loaded, db, engine)
                found = preview(runtime, name, when, stored_customers(db, runtime), sample)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if runtime.engine_notice:
        typer.echo(runtime.engine_notice, err=True)
    if bad:
        typer.echo(f"notice: {bad} records could not be used (see `sopkit simulate` for "
                   "the quarantine file)", err=True)
    data = found.to_json() if unmasked else mask(found.to_json())
    if output is Output.jsonl:
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    console = _console()
    spec = next(c for c in loaded.model.campaigns if c.name == name)
    console.print(f"[bold]{name}[/bold] at {found.time}: {found.audience} of {found.customers} "
                  f"customers in the audience")
    console.print(f"audience: {found.audience_text}")
    if spec.sample is not None:
        console.print(f"pilot (sample = {spec.sample:g}): {found.pilot}")
    if spec.experiment:
        console.print(f"held out (experiment {spec.experiment}): {found.held_out}")
    if found.variants:
        console.print("variants: " + ", ".join(f"{k} {v}" for k, v in found.variants.items()))
    if data["sample"]:
        table = Table(title=f"The first {len(data['sample'])} members by customer id",
                      title_justify="left")
        for col in ("customer", "owner", "variant", "facts"):
            table.add_column(col, overflow="fold")
        for member in data["sample"]:
            note = ("held out" if member["held_out"] else
                    "not in pilot" if not member["pilot"] else member["variant"] or "")
            facts = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                              for k, v in member["facts"].items())
            table.add_row(member["customer_id"], member["owner"] or "", note, facts)
        console.print(table)
    for message in data["messages"]:
        label = f"variant {message['variant']}" if message["variant"] else message["action"]
        text = message.get("message") or message.get("note") or json.dumps(
            message.get("payload", ""), ensure_ascii=False)
        console.print(f"{label} ({message.get('channel') or 'task'}, "
                      f"{message['customer_id']}): {text}")


@campaign_app.command("results")
def campaign_results(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    store: RunStoreOption = "sopkit.db",
    campaign: Annotated[list[str] | None, typer.Option(
        "--campaign", help="Only this campaign (repeatable; default: every one).")] = None,
    append_to: Annotated[Path | None, typer.Option(
        help="Append a message_sent event per customer sent to (once each) to this JSONL "
        "events file, e.g. the one `sopkit run --follow` reads.")] = None,
    clock: Annotated[str | None, typer.Option(help="The time stamped on the events "
                                              "(default: now).")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Do not ask WeCom for send "
                                          "results; count from the outbox only.")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Per campaign firing: outbox rows, group tasks, and how many were sent (WeCom asked).

    Exit codes: 0 shown, 1 invalid playbook, 2 usage or channel configuration errors.
    """
    import os

    from sopkit._live.loop import build_channels
    from sopkit._runtime.campaigns import SENT_EVENT, results, sent_events

    loaded = _load_or_exit(playbook)
    names = campaign or [c.name for c in loaded.model.campaigns]
    for name in names:
        _campaign_or_exit(loaded, name)
    if append_to is not None and SENT_EVENT not in loaded.model.events:
        raise _usage(f"--append-to feeds {SENT_EVENT} events back, but the playbook does not "
                     f"declare them: add [events.{SENT_EVENT}] (with campaign = \"string\" "
                     "to count per campaign)")
    used = {a.channel for c in loaded.model.campaigns if c.name in names
            for a in c.actions if getattr(a, "channel", None)}
    try:
        channels: dict[str, Any] = {} if offline else build_channels(loaded, os.environ, used)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    try:
        with _store(store) as db:
            found, sent = results(db, names, channels, fetch=not offline)
    finally:
        _close_all(channels)
    appended = 0
    if append_to is not None:
        from sopkit._lang.clock import Calendar

        stamp = Calendar(loaded.model.playbook.timezone).format(_clock_at(loaded, clock)())
        records = sent_events(sent, stamp, append_to)
        with append_to.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        appended = len(records)
    if output is Output.jsonl:
        for item in found:
            typer.echo(json.dumps(item.to_json(), ensure_ascii=False))
        if append_to is not None:
            typer.echo(json.dumps({"appended": appended, "file": str(append_to)}))
        return
    console = _console()
    table = Table(title="Campaign results per firing", title_justify="left")
    for col in ("campaign", "firing", "channel", "rows", "tasks", "sent", "waiting", "failed",
                "send rate"):
        table.add_column(col, justify="left" if col in ("campaign", "firing", "channel")
                         else "right", no_wrap=col in ("firing", "send rate"))
    for item in found:
        rows = ", ".join(f"{k} {v}" for k, v in sorted(item.rows.items()))
        rate = "-" if item.send_rate is None else f"{item.send_rate:.0%}"
        table.add_row(item.campaign, item.firing[:16].replace("T", " "),
                      item.channel or "(task list)", rows, str(item.tasks), str(item.sent),
                      str(item.waiting), str(item.failed), rate)
    console.print(table)
    for item in found:
        for error in item.errors:
            console.print(f"{item.campaign} {item.firing}: could not ask for {error}")
    if append_to is not None:
        console.print(f"appended {appended} {SENT_EVENT} event{'s' if appended != 1 else ''} "
                      f"to {append_to}")


@app.command()
def channels(
    types: Annotated[list[str] | None, typer.Argument(
        help="Channel types to check (default: every installed type).", show_default=False)] =
    None,
    output: OutputOption = Output.table,
) -> None:
    """List installed channel types and whether each loads: exit 0 if all do, 1 if not."""
    from rich.text import Text

    from sopkit._errors import did_you_mean
    from sopkit.channels import installed

    found = {info.type: info for info in installed()}
    rows: list[dict[str, Any]] = []
    for name in sorted(set(types)) if types else sorted(found):
        info = found.get(name)
        if info is None:
            hint = did_you_mean(name, found)
            rows.append({"type": name, "target": None, "distribution": None,
                         "status": "missing",
                         "error": "not installed" + (f"; {hint}" if hint else "")})
        else:
            rows.append({"type": name, "target": info.target,
                         "distribution": info.distribution,
                         "status": "ok" if info.error is None else "broken",
                         "error": info.error})
    bad = [row["type"] for row in rows if row["status"] != "ok"]
    if output is Output.jsonl:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
    else:
        table = Table(title="Channel types", title_justify="left")
        for column in ("type", "target", "distribution", "status"):
            table.add_column(column, overflow="fold")  # never cut a module path or an error
        for row in rows:
            table.add_row(Text(row["type"]), Text(row["target"] or "-"),
                          Text(row["distribution"] or "-"), Text(row["error"] or "ok"))
        console = _console()
        console.print(table)
        console.print(Text(f"{len(rows)} channel type{'s' if len(rows) != 1 else ''}"
                           + (f"; not usable: {', '.join(bad)}" if bad else ", all load")))
    raise typer.Exit(1 if bad else 0)


class TimeUnit(enum.StrEnum):
    weeks = "weeks"
    days = "days"


_CLV_MISSING = ("`sopkit clv` needs numpy and scipy, which are not installed ({exc}); "
                "install sopkit[clv]: pip install 'sopkit[clv]'")


@app.command(name="clv")
def clv_cmd(
    events: Annotated[Path, typer.Option(help="Purchase history: JSONL or CSV, .gz allowed.",
                                         exists=True, dir_okay=False)],
    calibration_end: Annotated[str | None, typer.Option(
        help="Fit on purchases up to this date (inclusive); later ones check the "
             "predictions. Default: the last purchase day.")] = None,
    unit: Annotated[TimeUnit, typer.Option(help="Time unit of the model.")] = TimeUnit.weeks,
    horizon: Annotated[str, typer.Option(help="Look-ahead for expected purchases and CLV, "
                                         "in days or weeks: 365d, 52w.")] = "52w",
    discount_rate: Annotated[float, typer.Option(help="Annual discount rate for CLV, "
                                                 "e.g. 0.1.", min=0.0)] = 0.0,
    event: Annotated[str, typer.Option(help="Event type of a purchase.")] = "purchase",
    amount_field: Annotated[str, typer.Option(help="Field holding a purchase's value.")] =
    "amount",
    customers: Annotated[Path | None, typer.Option(
        help="Write each customer's P(alive), expected purchases, spend and CLV as JSONL.")] =
    None,
    quarantine: Annotated[Path | None, typer.Option(
        help="Write unusable records here, with their reasons (masked).")] = None,
    output: Annotated[Output, typer.Option(help="table: a report for people; jsonl: the "
                                           "report as one JSON line.")] = Output.table,
) -> None:
    """Fit BG/NBD and Gamma-Gamma models: P(alive), expected purchases and CLV per customer."""
    try:
        from sopkit._stats import clv as _clv
    except ImportError as exc:
        typer.echo("error: " + _CLV_MISSING.format(exc=exc), err=True)
        raise typer.Exit(2) from None
    import datetime as dt

    from sopkit._io import Quarantine
    from sopkit._playbook.models import parse_duration

    cal_end: dt.date | None = None
    if calibration_end is not None:
        try:
            cal_end = dt.date.fromisoformat(calibration_end.strip())
        except ValueError:
            _usage_exit(f"bad --calibration-end '{calibration_end}': expected a date like "
                        "1997-09-30")
    try:
        seconds = parse_duration(horizon)
    except ValueError as exc:
        _usage_exit(f"--horizon: {exc}")
    if seconds % 86400:
        _usage_exit(f"bad --horizon '{horizon}': use whole days or weeks, like 365d or 52w")
    horizon_units = seconds / 86400 / _clv.UNIT_DAYS[unit.value]
    try:
        log = _clv.read_purchases(events, event=event, amount_field=amount_field)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    jail = Quarantine(quarantine, masked=True)
    for bad in log.bad:
        jail.add(str(events), bad.line, bad.reason, bad.record, bad.kind)
    jail.close()
    if log.bad:
        where = f"see {quarantine}" if quarantine else "--quarantine FILE keeps them"
        reasons = ", ".join(f"{kind}: {n}" for kind, n in sorted(jail.reasons.items()))
        typer.echo(f"warning: {len(log.bad)} unusable record(s) skipped ({reasons}); {where}",
                   err=True)
    if not log.purchases:
        typer.echo(f"error: {events}: no '{event}' events with a usable "
                   f"'{amount_field}' (check --event and --amount-field)", err=True)
        raise typer.Exit(1)
    try:
        rfm = _clv.summarize(log.purchases, cal_end, unit.value)
        if len(rfm) == 0:
            raise ValueError(f"no customer bought on or before the calibration end {cal_end}")
        report = _clv.analyse(rfm, horizon_units, discount_rate)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    fit = report.bgnbd
    if not fit.converged:
        repeat = int((rfm.x > 0).sum())
        typer.echo(f"error: the BG/NBD fit did not converge ({fit.message}); the history has "
                   f"{len(rfm)} customers, {repeat} of them with repeat purchases", err=True)
        raise typer.Exit(1)
    if fit.at_limit:
        typer.echo(f"warning: {_limit_text(fit.at_limit)}; with {len(rfm)} customers the "
                   "history cannot tell more, so the predictions use that limit", err=True)
    elif fit.std_errors is None:
        typer.echo("warning: no standard errors for BG/NBD: the history does not pin down "
                   "every parameter; treat the predictions with care", err=True)
    if report.spend is None:
        typer.echo(f"warning: no spend model, so no expected spend or CLV: {report.spend_note}",
                   err=True)
    if customers is not None:
        with customers.open("w", encoding="utf-8") as handle:
            for row in report.customers():
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    if output is Output.jsonl:
        data = {"events": str(events), "records": log.records, "quarantined": len(log.bad),
                "other_events": log.other_events, **report.to_json()}
        typer.echo(json.dumps(data, ensure_ascii=False))
    else:
        _print_clv(report, events, log, customers)


def _limit_text(names: tuple[str, ...]) -> str:
    """What BG/NBD parameters at the edge of the search box mean."""
    said = [" and ".join(names) + (" run" if len(names) > 1 else " runs") + " to a limit"]
    if "r" in names:
        said.append("customers seem to buy at one common rate")
    if {"a", "b"} <= set(names):
        said.append("customers seem to share one dropout probability")
    elif "b" in names:
        said.append("customers seem never to drop out")
    elif "a" in names:
        said.append("customers seem to drop out right after buying again")
    return ": ".join(said[:1]) + (" (" + "; ".join(said[1:]) + ")" if said[1:] else "")


def _usage_exit(message: str) -> NoReturn:
    raise _usage(message)


def _print_clv(report: Any, events: Path, log: Any, customers: Path | None) -> None:
    """The CLV report as rich tables."""
    import datetime as dt

    console = _console()
    rfm = report.rfm
    data = report.to_json()
    console.print(f"[bold]{events}[/bold]: {log.records} records, {rfm.purchases} purchases, "
                  f"{len(log.bad)} quarantined, {log.other_events} other events")
    console.print(f"customers: {len(rfm)} ({data['repeat_customers']} bought again by the "
                  f"calibration end {rfm.calibration_end})"
                  + (f"; {rfm.late_customers} first bought later, left out"
                     if rfm.late_customers else "") + f"; time unit: {rfm.unit}")
    bg = Table(title="BG/NBD: purchase rate and dropout", title_justify="left")
    for column in ("parameter", "value", "std. error"):
        bg.add_column(column, justify="left" if column == "parameter" else "right")
    fit = report.bgnbd
    errors = fit.std_errors
    for name in ("r", "alpha", "a", "b"):
        bg.add_row(name, f"{getattr(fit.params, name):.4f}",
                   "limit" if name in fit.at_limit else
                   f"{getattr(errors, name):.4f}" if errors else "-")
    console.print(bg)
    console.print(f"log-likelihood {fit.log_likelihood:.2f} on {fit.customers} customers"
                  + ("" if fit.converged else f" (did not converge: {fit.message})"))
    if report.spend is not None:
        gg = Table(title="Gamma-Gamma: spend per purchase", title_justify="left")
        for column in ("parameter", "value", "std. error"):
            gg.add_column(column, justify="left" if column == "parameter" else "right")
        spend = report.spend
        for name in ("p", "q", "gamma"):
            gg.add_row(name, f"{getattr(spend.params, name):.4f}",
                       "limit" if name in spend.at_limit else
                       f"{getattr(spend.std_errors, name):.4f}" if spend.std_errors else "-")
        console.print(gg)
        console.print(f"log-likelihood {spend.log_likelihood:.2f} on {spend.customers} customers "
                      f"with repeat purchases; mean spend per purchase "
                      f"{spend.params.mean_spend:.2f}; correlation of frequency and spend "
                      f"{spend.correlation:.2f}"
                      + (" (the model assumes none)" if abs(spend.correlation) > 0.3 else ""))
    else:
        console.print(f"no spend model: {report.spend_note}")
    holdout = data["holdout"]
    if holdout:
        first = rfm.calibration_end + dt.timedelta(days=1)
        console.print(f"holdout check, {first} to {holdout['end']} "
                      f"({holdout['length']:g} {rfm.unit}): predicted "
                      f"{holdout['predicted']:.0f} repeat purchases, actual {holdout['actual']}; "
                      f"customers without a purchase: predicted "
                      f"{holdout['predicted_no_purchase']:.0f}, actual "
                      f"{holdout['actual_no_purchase']}")
    outlook = (f"next {report.horizon:g} {rfm.unit}: mean P(alive) {data['mean_p_alive']:.3f}, "
               f"{data['expected_purchases']:.0f} purchases expected, mean P(no purchase) "
               f"{data['mean_p_no_purchase']:.3f}")
    if data["expected_revenue"] is not None:
        outlook += f", revenue {data['expected_revenue']:.2f}"
        if report.annual_discount_rate:
            outlook += f" (discounted at {report.annual_discount_rate:g} a year)"
    console.print(outlook)
    if customers is not None:
        console.print(f"per-customer results written to {customers}")


def main() -> None:
    """Console-script entry point."""
    app()
