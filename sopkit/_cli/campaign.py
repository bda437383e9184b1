"""`sopkit campaign`: preview a campaign's audience, read back what was sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sopkit._cli.common import (
    NativeEngineOption,
    Output,
    OutputOption,
    RunStoreOption,
    UnmaskedOption,
    clock_at,
    load_or_exit,
    new_console,
    opened_store,
    usage_error,
)
from sopkit._errors import SopkitError

campaign_app = typer.Typer(
    name="campaign",
    help="Campaigns (群发): preview an audience before launch, read back what was sent.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _campaign_or_exit(loaded: Any, name: str) -> None:
    from sopkit._live.operate import NotFound, check_campaign

    try:
        check_campaign(loaded, name)
    except NotFound as exc:
        raise usage_error(str(exc)) from None


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
    from sopkit._live.operate import preview_stored, shown
    from sopkit._runtime.campaigns import history_runtime, preview

    loaded = load_or_exit(playbook)
    _campaign_or_exit(loaded, name)
    if (events is None) == (store is None):
        raise usage_error("give --events (a history, replayed up to --at) or --store (a live "
                          "store's state), not both")
    when = clock_at(loaded, at)()
    try:
        if events is not None:
            runtime, bad = history_runtime(loaded, events, profiles, when, engine)
            customers: Any = (runtime.customers[c] for c in sorted(runtime.customers))
            found = preview(runtime, name, when, customers, sample)
        else:
            bad = 0
            with opened_store(store or "") as db:
                found, runtime = preview_stored(loaded, db, name, when, sample, engine)
    except SopkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if runtime.engine_notice:
        typer.echo(runtime.engine_notice, err=True)
    if bad:
        typer.echo(f"notice: {bad} records could not be used (see `sopkit simulate` for "
                   "the quarantine file)", err=True)
    data = shown(found.to_json(), unmasked)
    if output is Output.jsonl:
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    console = new_console()
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

    from sopkit._live.operate import campaign_results
    from sopkit._runtime.campaigns import SENT_EVENT, sent_events

    loaded = load_or_exit(playbook)
    names = campaign or [c.name for c in loaded.model.campaigns]
    for name in names:
        _campaign_or_exit(loaded, name)
    if append_to is not None and SENT_EVENT not in loaded.model.events:
        raise usage_error(f"--append-to feeds {SENT_EVENT} events back, but the playbook does not "
                          f"declare them: add [events.{SENT_EVENT}] (with campaign = \"string\" "
                          "to count per campaign)")
    try:
        with opened_store(store) as db:
            found, sent = campaign_results(loaded, db, names, os.environ, fetch=not offline)
    except SopkitError as exc:  # a channel's configuration, or the store
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    appended = 0
    if append_to is not None:
        from sopkit._lang.clock import Calendar

        stamp = Calendar(loaded.model.playbook.timezone).format(clock_at(loaded, clock)())
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
    console = new_console()
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
