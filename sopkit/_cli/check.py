"""`sopkit check`, `schema`, `compile` and `channels`: the commands that read no data."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sopkit._cli.common import (
    Output,
    OutputOption,
    load_or_exit,
    new_console,
    print_problems,
)
from sopkit._errors import PlaybookError, Problem
from sopkit._playbook.load import load


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
    from sopkit._playbook.calendar_check import data_warnings, strict_warnings
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
            print_problems(errors, output)
            if output is Output.table:
                count = len(errors)
                typer.echo(f"{path}: {count} problem{'s' if count != 1 else ''}")
            continue
        today = dt.date.today()
        # the holiday data running out is worth knowing even without --strict
        warnings: list[Problem] = (strict_warnings(loaded, today) if strict
                                   else data_warnings(loaded, today))
        if strict:
            failed = failed or bool(warnings)
        print_problems(warnings, output)
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


def schema(
    fragment: Annotated[bool, typer.Option("--fragment", help="The schema of an include "
                                           "fragment (no [playbook] table).")] = False,
) -> None:
    """Print the playbook JSON Schema (for taplo / Even Better TOML via `#:schema`)."""
    from sopkit._playbook.schema import playbook_schema

    typer.echo(json.dumps(playbook_schema(fragment), ensure_ascii=False, indent=2))


def compile_cmd(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
) -> None:
    """Print the compiled RuleIR as JSON (what the engines run)."""
    from sopkit._ir.compile import compile_playbook

    loaded = load_or_exit(playbook)
    typer.echo(json.dumps(compile_playbook(loaded.model), ensure_ascii=False, indent=1))


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
        console = new_console()
        console.print(table)
        console.print(Text(f"{len(rows)} channel type{'s' if len(rows) != 1 else ''}"
                           + (f"; not usable: {', '.join(bad)}" if bad else ", all load")))
    raise typer.Exit(1 if bad else 0)
