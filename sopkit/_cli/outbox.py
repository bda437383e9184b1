"""`sopkit outbox`: list, retry and purge the rows of a live store's outbox."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from sopkit._cli.common import (
    Output,
    OutputOption,
    StoreOption,
    counts_table,
    new_console,
    opened_store,
    usage_error,
)

outbox_app = typer.Typer(
    name="outbox",
    help="Inspect and repair the outbox of a live store: list rows, retry dead letters, purge.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _check_status(status: str, allowed: tuple[str, ...]) -> None:
    from sopkit._errors import did_you_mean

    if status not in allowed:
        hint = did_you_mean(status, allowed)
        raise usage_error(f"--status: unknown status '{status}'" + (f"; {hint}" if hint else "")
                          + f" (statuses: {', '.join(allowed)})")


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
    from sopkit._live.operate import utc
    from sopkit._live.store import STATUSES
    from sopkit._mask import mask, mask_text

    if status is not None:
        _check_status(status, STATUSES)
    if limit is None:
        limit = 50 if output is Output.table else 0
    with opened_store(store) as db:
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
    console = new_console()
    table = Table(title=f"Outbox of {db.url}", title_justify="left")
    for column in ("id", "status", "due (UTC)", "customer", "rule", "action", "tries",
                   "note"):
        table.add_column(column, justify="right" if column in ("id", "tries") else "left",
                         no_wrap=column in ("id", "status", "due (UTC)", "tries"),
                         overflow="fold", min_width=20 if column == "note" else None)
    for row in found:
        note = row.last_error or row.reason or ((row.receipt or {}).get("detail") or "")
        table.add_row(str(row.id), row.status, utc(row.due_at, " "), shown(row.customer_id),
                      row.rule, f"{row.kind} {row.channel}".strip(), str(row.attempts),
                      shown(str(note)))
    console.print(table)
    if more:
        console.print(f"only the first {limit} matching rows are shown; --limit 0 shows all")
    console.print(counts_table("Rows per status", "status", "rows", counts))


@outbox_app.command("retry")
def outbox_retry(
    store: StoreOption,
    ids: Annotated[list[int] | None, typer.Option(
        "--id", help="Retry this dead row (repeatable); default: every dead row.")] = None,
) -> None:
    """Put dead rows back to pending, due now, with their attempts reset.

    "Now" is the store's replay clock when its last `run` had --clock, else the system clock.
    """
    from sopkit._errors import UsageError
    from sopkit._live.operate import retry_dead

    with opened_store(store) as db:
        try:
            retried = retry_dead(db, ids)
        except UsageError as exc:
            raise usage_error(str(exc)) from None
    typer.echo(retried.text())


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

    from sopkit._live.operate import utc
    from sopkit._live.store import SENDABLE, SETTLED, STATUSES

    if status in SENDABLE:
        raise usage_error(f"refusing to purge {status} rows: they have not been delivered yet "
                          f"(purge one of: {', '.join(SETTLED)})")
    _check_status(status, tuple(s for s in STATUSES if s not in SENDABLE))
    cutoff = None
    if before is not None:
        try:
            when = dt.datetime.fromisoformat(before)
        except ValueError:
            raise usage_error(f"--before: '{before}' is not an ISO 8601 date or time "
                              "(e.g. 2024-06-01 or 2024-06-01T12:00:00+08:00)") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        cutoff = int(when.timestamp())
    with opened_store(store) as db:
        count = db.purge(status, cutoff)
    since = f" settled before {utc(cutoff)}" if cutoff is not None else ""
    typer.echo(f"purged {count} {status} row{'s' if count != 1 else ''}{since}")
