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
from typing import Annotated, Any, NoReturn

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
        from . import _clv
    except ImportError as exc:
        typer.echo("error: " + _CLV_MISSING.format(exc=exc), err=True)
        raise typer.Exit(2) from None
    import datetime as dt

    from ._io import Quarantine
    from ._models import parse_duration

    cal_end: dt.date | None = None
    if calibration_end is not None:
        try:
            cal_end = dt.date.fromisoformat(calibration_end.strip())
        except ValueError:
            _usage(f"bad --calibration-end '{calibration_end}': expected a date like 1997-09-30")
    try:
        seconds = parse_duration(horizon)
    except ValueError as exc:
        _usage(f"--horizon: {exc}")
    if seconds % 86400:
        _usage(f"bad --horizon '{horizon}': use whole days or weeks, like 365d or 52w")
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


def _usage(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


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
