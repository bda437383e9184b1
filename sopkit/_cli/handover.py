"""`sopkit handover`: who has taken over whom (离职继承)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sopkit._cli.common import (
    Output,
    OutputOption,
    RunStoreOption,
    UnmaskedOption,
    load_or_exit,
    new_console,
    opened_store,
)

handover_app = typer.Typer(help="Staff hand-over (离职继承): who has taken over whom.",
                           no_args_is_help=True, rich_markup_mode=None)


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

    from sopkit._live.operate import handover, shown
    from sopkit._mask import mask_text

    loaded = load_or_exit(playbook)
    with opened_store(store) as the_store:
        lines = handover(loaded, the_store, os.environ)
    waiting = [line for line in lines if not line.taken_over]
    listed = lines if all_rows else waiting
    if output is Output.jsonl:
        for line in listed:
            typer.echo(json.dumps(shown(line.to_json(), unmasked), ensure_ascii=False))
    else:
        console = new_console()
        console.print(f"hand-overs: {len(lines)} customers, {len(lines) - len(waiting)} taken "
                      f"over, {len(waiting)} not yet")
        table = Table(title="Not taken over yet" if not all_rows else "Hand-overs",
                      title_justify="left")
        for col in ("customer", "from", "to", "outbox", "WeCom"):
            table.add_column(col)
        text = (lambda value: value) if unmasked else mask_text  # staff ids may be phones
        for line in listed:
            table.add_row(text(line.customer_id), text(line.from_owner),
                          text(line.to) if line.to else "(none)", line.outbox,
                          text(line.platform))
        if listed:
            console.print(table)
    raise typer.Exit(3 if waiting else 0)
