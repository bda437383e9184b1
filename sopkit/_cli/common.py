"""What the `sopkit` commands share: the output format, the options several commands take,
the console, and the ways a command reports a problem and exits (exit codes as in app.py)."""

from __future__ import annotations

import enum
import json
import sys
import unicodedata
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sopkit._errors import PlaybookError, Problem, SopkitError
from sopkit._playbook.load import load
from sopkit.channels._capabilities import close_all as close_all  # the CLI's import


class Output(enum.StrEnum):
    table = "table"
    jsonl = "jsonl"


# Options several commands share, declared once.
EventsOption = Annotated[Path, typer.Option("--events", help="Event history (as for "
                                            "simulate).", exists=True, dir_okay=False)]
ProfilesOption = Annotated[Path | None, typer.Option("--profiles", help="Customer profiles.",
                                                     exists=True, dir_okay=False)]
NativeEngineOption = Annotated[str, typer.Option("--engine", help="Rule engine: native "
                                                 "(default here) or durable.")]
DurableEngineOption = Annotated[str, typer.Option("--engine", help="Rule engine: durable "
                                                  "(default) or native.")]
OutputOption = Annotated[Output, typer.Option("--output", help="table for people, jsonl for "
                                              "machines.")]
UnmaskedOption = Annotated[bool, typer.Option("--unmasked", help="Show phone numbers and "
                                              "e-mails in full.")]
RunStoreOption = Annotated[str, typer.Option("--store", envvar="SOPKIT_STORE",
                                             help="The store a `sopkit run` keeps.")]


def new_console(stderr: bool = False) -> Console:
    terminal = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, width=None if terminal else 100, highlight=False,
                   soft_wrap=not terminal)


ProgressOption = Annotated[bool | None, typer.Option(help="Progress bar (default: on a "
                                                     "terminal).")]


@contextmanager
def progress_bar(show: bool | None, *, prefix: str = "", counted: Collection[str] = ()
                 ) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar on stderr, one bar per label that `tick(label, done, total)` names;
    `show` None: only when stderr is a terminal. Yields None when there is no bar.
    Totals are bytes read, but for the labels `counted` (items done)."""
    if not (sys.stderr.isatty() if show is None else show):
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    class Done(ProgressColumn):
        """Bytes as sizes, counted items as "3/20"."""

        counted, sized = MofNCompleteColumn(), DownloadColumn()

        def render(self, task: Any) -> Any:
            return (self.counted if task.fields.get("counted") else self.sized).render(task)

    with Progress(TextColumn("{task.description}"), BarColumn(), Done(),
                  TimeRemainingColumn(), console=new_console(stderr=True),
                  transient=True) as bar:
        tasks: dict[str, Any] = {}

        def tick(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(prefix + label, total=total,
                                            counted=label in counted)
            bar.update(tasks[label], completed=done)

        yield tick


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def render_problem(problem: Problem) -> str:
    """A problem as compiler-style text: location, message, the source line, a caret, a hint."""
    loc = problem.location
    lines = [f"{loc.file}:{loc.line}:{loc.column}: {problem.severity}: "
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


def print_problems(problems: list[Problem], output: Output) -> None:
    for problem in problems:
        if output is Output.jsonl:
            typer.echo(json.dumps(problem.to_json(), ensure_ascii=False))
        else:
            typer.echo(render_problem(problem))


def load_or_exit(path: Path) -> Any:
    try:
        return load(path)
    except PlaybookError as exc:
        for problem in exc.problems:
            typer.echo(render_problem(problem), err=True)
        typer.echo(f"{path}: invalid; run `sopkit check {path}`", err=True)
        raise typer.Exit(1) from None


def duration_option(option: str, text: str | None) -> int | None:
    """A duration option's seconds; None for no value or "none"; exit 2 if unreadable."""
    from sopkit._playbook.models import parse_duration

    if text is None or text.strip().lower() in ("none", "off"):
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        typer.echo(f"error: {option}: {exc}, or none", err=True)
        raise typer.Exit(2) from None


def lateness_option(text: str) -> int:
    """--lateness's seconds (`0s` or `0`: none); exit 2 if unreadable."""
    from sopkit._playbook.models import parse_duration

    if text.strip() in ("0", "0s"):
        return 0
    try:
        return parse_duration(text)
    except ValueError as exc:
        typer.echo(f"error: --lateness: {exc}", err=True)
        raise typer.Exit(2) from None


def exit_if_all_quarantined(read: int, used: int, reasons: dict[str, int],
                            quarantine: Path | None) -> None:
    """Exit 1 with a message when records were read and none could be used. A redelivered
    event (a known event_id) is a recognised record, not a sign of the wrong file."""
    if read == 0 or used + reasons.get("duplicate event_id", 0) > 0:
        return
    top = ", ".join(f"{kind} ({n})" for kind, n in
                    sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
    typer.echo(f"error: all {read} event records were quarantined ({top}); see "
               f"{quarantine}. Is it the right file, in the right format, for this playbook? "
               "/ 所有事件记录都被隔离，请检查文件和剧本", err=True)
    raise typer.Exit(1)


def counts_table(title: str, key: str, unit: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(key)
    table.add_column(unit, justify="right")
    for name, count in counts.items():
        table.add_row(name, str(count))
    return table


def clock_at(loaded: Any, at: str | None) -> Any:
    """A clock function: the system clock, or a fixed instant for replays and tests."""
    import time as _time

    if at is None:
        return lambda: int(_time.time())
    from sopkit._lang.clock import Calendar

    try:
        fixed = Calendar(loaded.model.playbook.timezone).parse(at)
    except ValueError:
        typer.echo(f"error: --clock/--at {at!r} is not an ISO 8601 time", err=True)
        raise typer.Exit(2) from None
    return lambda: fixed


StoreOption = Annotated[str, typer.Option(
    "--store", envvar="SOPKIT_STORE", show_default=False,
    help="The store: an SQLite file (path or sqlite:///path) or postgresql://... "
         "(default: $SOPKIT_STORE).")]


@contextmanager
def opened_store(url: str, *, create: bool = False) -> Iterator[Any]:
    """The store at `url`, closed afterwards; SopkitErrors become `error: ...` and an exit code.

    Only `run` creates a store: elsewhere a path that is not one is a usage error (exit 2).
    Phone numbers and e-mails in an error raised while the store is in use (a customer id in
    a chain error) are masked."""
    from sopkit._live.openstore import open_store
    from sopkit._mask import mask_text

    try:
        store = open_store(url, create=create)
    except SopkitError as exc:  # about the store and its URL (the password already hidden)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    try:
        yield store
    except SopkitError as exc:
        typer.echo(f"error: {mask_text(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    finally:
        store.close()


def usage_error(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)
