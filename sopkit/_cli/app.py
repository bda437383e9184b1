"""The `sopkit` command line. Exit codes: 0 ok, 1 invalid playbook or failed run, 2 usage.

Every command turns a SopkitError into a message and its exit code; tracebacks are for bugs.
This module only assembles the app: each command lives in the module of its group (check,
offline, live, handover, outbox, campaign, clv), what they share in common.py. Commands are
registered here in the order `sopkit --help` lists them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sopkit import __version__
from sopkit._cli import campaign, check, clv, forecast, handover, live, offline, outbox, serve

app = typer.Typer(
    name="sopkit",
    help="Customer-retention SOPs as code: check, simulate and explain TOML playbooks.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


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


app.command()(check.check)
app.command()(check.schema)
app.command(name="compile")(check.compile_cmd)
app.command()(offline.simulate)
app.command()(offline.explain)
app.add_typer(handover.handover_app, name="handover")
app.command(name="diff")(offline.diff_cmd)
app.command()(offline.review)
app.command()(live.run)
app.command()(live.migrate)
app.command(name="dry-run")(live.dry_run)
app.command()(serve.serve)
app.add_typer(outbox.outbox_app, name="outbox")
app.add_typer(campaign.campaign_app, name="campaign")
app.command()(check.channels)
app.command(name="clv")(clv.clv_cmd)
app.command(name="forecast")(forecast.forecast_cmd)


def main() -> None:
    """Console-script entry point."""
    app()
