"""The `sopkit` command line. Exit codes: 0 ok, 1 invalid playbook or failed run, 2 usage.

Every command turns a SopkitError into a message and its exit code; tracebacks are for bugs.
"""

from __future__ import annotations

import enum
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
    lines = [f"{loc.file}:{loc.line}:{loc.column}: error: "
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
        if output is Output.table:
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
    report: Annotated[Path | None, typer.Option(
        help="Write a self-contained HTML report with charts here (docs/report.md).",
        dir_okay=False)] = None,
) -> None:
    """Replay an event history on a virtual clock and report every action the playbook takes."""
    from ._simulate import simulate as run_simulation

    loaded = _load_or_exit(playbook)
    collected = None
    if report is not None:
        from ._report import ReportData

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
                                         report=collected)
        else:
            summary = run_simulation(loaded, events, profiles=profiles, start=start, end=end,
                                     out=handle, quarantine=quarantine, engine=engine,
                                     masked=not unmasked, report=collected)
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
    if report is not None and collected is not None:
        from ._report import write_report

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


def main() -> None:
    """Console-script entry point."""
    app()
