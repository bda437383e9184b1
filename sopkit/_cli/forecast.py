"""`sopkit forecast`: the actions of the next days, per channel, with 80% intervals."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sopkit._cli.common import (
    NativeEngineOption,
    Output,
    OutputOption,
    ProfilesOption,
    ProgressOption,
    load_or_exit,
    new_console,
    opened_store,
    progress_bar,
)
from sopkit._errors import SopkitError


def forecast_cmd(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    events: Annotated[Path | None, typer.Option(
        help="Event history (JSONL or CSV, .gz allowed): the state and the purchases the "
        "forecast starts from.", exists=True, dir_okay=False)] = None,
    store: Annotated[str | None, typer.Option(
        help="Or a live store (needs [clv] in the playbook): forecast from its state.")] = None,
    profiles: ProfilesOption = None,
    at: Annotated[str | None, typer.Option(
        help="Forecast from this time (default: the history's last event, or the store's "
        "clock); later events are left out, or compared with --backtest.")] = None,
    days: Annotated[int, typer.Option(help="How many days ahead.", min=1, max=3660)] = 30,
    samples: Annotated[int, typer.Option(help="Synthetic futures drawn (more: steadier "
                                         "intervals, longer run).", min=2)] = 20,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same "
                                      "forecast.")] = 0,
    purchase_event: Annotated[str | None, typer.Option(
        help="The purchase event type (default: [clv]'s event, else purchase).")] = None,
    amount_field: Annotated[str | None, typer.Option(
        help="Its amount field (default: [clv]'s amount, else amount if declared).")] = None,
    backtest: Annotated[bool, typer.Option(
        help="Also run the real history after --at and compare, per channel.")] = False,
    report: Annotated[Path | None, typer.Option(
        help="Write the forecast as a self-contained HTML page here.", dir_okay=False)] = None,
    engine: NativeEngineOption = "native",
    output: OutputOption = Output.table,
    progress: ProgressOption = None,
) -> None:
    """预测: what the playbook will do over the next days (docs/analytics.md#forecast).

    Exit codes: 0 done; 1 invalid playbook; 2 usage error (no history, a model that cannot be
    fitted, numpy/scipy missing).
    """
    from sopkit._offline.forecast import forecast

    loaded = load_or_exit(playbook)
    try:
        with progress_bar(progress, counted={"futures"}) as tick, \
                (opened_store(store) if store is not None else nullcontext()) as opened:
            result = forecast(loaded, events=events, store=opened, profiles=profiles, at=at,
                              days=days, samples=samples, seed=seed, engine=engine,
                              purchase_event=purchase_event, amount_field=amount_field,
                              backtest=backtest, progress=tick)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if report is not None:
        from sopkit._offline.forecast_html import write_forecast

        write_forecast(result, report)
    if output is Output.jsonl:
        for line in result.day_lines():
            typer.echo(json.dumps(line, ensure_ascii=False))
        typer.echo(json.dumps(result.to_json(), ensure_ascii=False))
        return
    _table(result)


def _table(result: Any) -> None:
    console = new_console()
    console.print(f"[bold]{result.playbook}[/bold]: {len(result.days)} days from "
                  f"{result.start} ({result.samples} samples, seed {result.seed}; "
                  f"{result.buyers} of {result.customers} customers have bought)")
    totals = Table(title="Over the whole period (mean, 80% interval)", title_justify="left")
    totals.add_column("channel")
    totals.add_column("actions", justify="right")
    totals.add_column("cost", justify="right")
    for channel, value in result.totals.items():
        cost = result.cost.get(channel)
        totals.add_row(channel, value.text(), cost.text() if cost else "")
    totals.add_row("purchases", result.purchases.text(), "")
    totals.add_row("suppressed by a cap", result.capped.text(), "")
    totals.add_row("deferred (quiet hours/days)", result.deferred.text(), "")
    console.print(totals)
    per_day = Table(title="Per day (mean, 80% interval)", title_justify="left")
    per_day.add_column("day")
    for channel in result.channels:
        per_day.add_column(channel, justify="right")
    for day in result.days:
        per_day.add_row(day, *(result.by_day[day][c].text() for c in result.channels))
    console.print(per_day)
    if result.owners:
        cap = result.capacity
        staff = Table(title=f"Staff tasks (capacity {cap if cap else 'none'} a day)",
                      title_justify="left")
        for col in ("owner", "made per day", "busiest day", "days over capacity",
                    "moved to a later day"):
            staff.add_column(col, justify="left" if col == "owner" else "right")
        for owner in result.owners:
            staff.add_row(owner.owner, owner.per_day.text(), owner.peak.text(),
                          owner.days_over.text(), owner.pushed.text())
        console.print(staff)
    if result.actual is not None:
        check = Table(title="Backtest: the real history after the start", title_justify="left")
        for col in ("channel", "actual", "forecast", "error", "days inside the 80% interval"):
            check.add_column(col, justify="left" if col == "channel" else "right")
        for channel, row in result.actual["channels"].items():
            error = "" if row["error"] is None else f"{row['error']:+.1%}"
            check.add_row(channel, str(row["actual"]), f"{row['forecast']:.1f}", error,
                          f"{row['days_inside']} of {len(result.days)} "
                          f"({row['coverage']:.0%})")
        console.print(check)
    for note in result.notes:
        console.print(f"note: {note}")
