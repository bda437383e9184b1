"""`sopkit clv`: customer lifetime value from a purchase history (needs sopkit[clv])."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table

from sopkit._cli.common import (
    Output,
    new_console,
    usage_error,
)
from sopkit._errors import SopkitError


class TimeUnit(enum.StrEnum):
    weeks = "weeks"
    days = "days"


_CLV_MISSING = ("`sopkit clv` needs numpy and scipy, which are not installed ({exc}); "
                "install sopkit[clv]: pip install 'sopkit[clv]'")


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
    raise usage_error(message)


def _print_clv(report: Any, events: Path, log: Any, customers: Path | None) -> None:
    """The CLV report as rich tables."""
    import datetime as dt

    console = new_console()
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
