"""`sopkit run`, `migrate` and `dry-run`: the commands that keep or read a live store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sopkit._cli.common import (
    DurableEngineOption,
    Output,
    OutputOption,
    RunStoreOption,
    UnmaskedOption,
    clock_at,
    close_all,
    counts_table,
    duration_option,
    exit_if_all_quarantined,
    lateness_option,
    load_or_exit,
    new_console,
    opened_store,
    usage_error,
)
from sopkit._errors import SopkitError


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
        close_all(channels)


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
    batch: Annotated[int, typer.Option(help="Most events per committed transaction while "
                                       "events keep coming (also committed whenever the "
                                       "input has nothing more to read).", min=1)] = 2000,
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
    cache_customers: Annotated[int | None, typer.Option(
        help="Customers held in memory (default 100000; 0: all); the others are read from "
        "the store when an event, a wake-up or a campaign needs them. A playbook with "
        "[rfm] or [clv] holds all.", show_default=False)] = None,
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
    from sopkit._live.openstore import open_store

    loaded = load_or_exit(playbook)
    late = lateness_option(lateness)
    ahead = duration_option("--max-future", max_future)
    try:  # channels first: a missing secret stops the run before the store is touched
        channels: dict[str, Any] = build_channels(loaded, os.environ)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    tell_time = clock_at(loaded, clock)
    stop = Stopper()
    restore_signals = stop.install()
    name = worker or f"{socket.gethostname()}:{os.getpid()}"

    def lost() -> None:
        stop.requested = True  # the next commit refuses anyway; stop after this batch

    with opened_store(store, create=True) as the_store, _closing(channels, restore_signals), \
            holding(the_store, name, wall=time.time, on_lost=lost,
                    reopen=(lambda: open_store(store, create=False))
                    if the_store.RENEWS else None) as beat:
        # the loop lock comes first: nothing of the state is read before this run holds it
        live = LiveRun(loaded, the_store, engine=engine, cache_customers=cache_customers)
        _past_campaigns(live.runtime)
        record_clock(the_store, tell_time() if clock is not None else None)
        if events is not None:  # records that never enter a served store's kept history
            from sopkit._live.operate import history_incomplete

            history_incomplete(the_store)
        if send_from is not None:
            live.send_from = clock_at(loaded, send_from)()
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
    exit_if_all_quarantined(stats.events_read, stats.events_applied, jail.reasons,
                            quarantine)


def _print_run(stats: Any, quarantine: Path) -> None:
    """The summary of one `run`."""
    console = new_console()
    console.print(f"events: {stats.events_read} read, {stats.events_applied} applied, "
                  f"{stats.quarantined} quarantined"
                  + (f" (see {quarantine})" if stats.quarantined else "")
                  + (f", {stats.events_skipped} already applied earlier"
                     if stats.events_skipped else "")
                  + f"; customers: {stats.customers}; new outbox rows: {stats.rows_new}")
    console.print(counts_table("Dispatched in this run", "result", "rows", stats.dispatched))
    for name, reason in stats.disabled.items():
        console.print(f"[bold]channel {name} disabled[/bold] until restart: {reason}; its "
                      "other rows stay pending (`sopkit outbox list --status pending`)")
    console.print(counts_table("Outbox", "status", "rows", stats.outbox))


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

    loaded = load_or_exit(playbook)
    with opened_store(store) as the_store:
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

    console = new_console()
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
    from sopkit._live.operate import past_campaigns

    for notice in past_campaigns(runtime):
        typer.echo(notice, err=True)


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
    from sopkit._live.operate import dry_run as plan_dispatch
    from sopkit._live.operate import shown
    from sopkit._mask import mask_text
    from sopkit._playbook.models import parse_duration

    loaded = load_or_exit(playbook)
    try:
        ahead = 0 if window.strip() in ("0", "0s") else parse_duration(window)
    except ValueError as exc:
        raise usage_error(f"--window: {exc}") from None
    when = None if at is None else clock_at(loaded, at)()
    with opened_store(store) as the_store:
        plan = plan_dispatch(loaded, the_store, when, ahead, engine)
    for notice in plan.notices:
        typer.echo(notice, err=True)
    rows, rt, upcoming, sending = plan.rows, plan.runtime, plan.upcoming, plan.sending
    if output is Output.jsonl:
        for item in plan.items(unmasked):
            typer.echo(json.dumps(item, ensure_ascii=False))
    else:
        console = new_console()
        table = Table(title=f"Would dispatch now: {len(sending)}"
                      + (f", settle unsent: {len(rows) - len(sending)}"
                         if len(rows) > len(sending) else "")
                      + (f" ({plan.later} more pending later)" if plan.later else ""),
                      title_justify="left")
        for col in ("due", "channel", "kind", "customer", "rule", "what", "status"):
            table.add_column(col)
        from sopkit._lang.clock import Calendar

        cal = Calendar(loaded.model.playbook.timezone)
        for row in rows:
            body = shown(row.message, unmasked).get("body", {})
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
                                str(plan.sizes[campaign.name]))
            console.print(firings)
    raise typer.Exit(3 if sending else 0)
