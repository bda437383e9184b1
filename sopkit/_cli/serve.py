"""`sopkit serve`: the playbook's live loop behind an HTTP API (docs/http.md)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from sopkit._cli.common import (
    DurableEngineOption,
    clock_at,
    close_all,
    duration_option,
    lateness_option,
    load_or_exit,
    opened_store,
)
from sopkit._errors import SopkitError


def beside_store(store: str) -> Path:
    """The default quarantine file: beside an SQLite store, else in the cwd (as `run`)."""
    if store.startswith(("postgresql:", "postgres:")) or store == ":memory:":
        return Path("sopkit-quarantine.jsonl")
    path = Path(store.removeprefix("sqlite:///"))
    return path.with_name(path.stem + ".quarantine.jsonl")


def _longest_window(loaded: Any) -> int:
    """The longest window, cooldown, cap period or attribution window the playbook
    declares, in seconds (0: none)."""
    from sopkit._playbook.models import parse_duration

    longest = 0
    stack: list[Any] = [loaded.model.model_dump()]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("window", "cooldown", "per", "within") and isinstance(value, str):
                    with contextlib.suppress(ValueError):  # not a duration: no bound
                        longest = max(longest, parse_duration(value))
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return longest


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def serve(
    playbook: Annotated[Path, typer.Argument(help="Playbook TOML file.")],
    store: Annotated[str, typer.Option(envvar="SOPKIT_STORE",
                                       help="State, outbox and inbox: an SQLite file "
                                       "(default sopkit.db) or postgresql://...")] = "sopkit.db",
    host: Annotated[str, typer.Option(help="Address to listen on; another than loopback "
                                      "needs SOPKIT_API_KEYS.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8600,
    clock: Annotated[str | None, typer.Option(help="Pretend it is this time (replays and "
                                              "tests); default: the system clock.")] = None,
    lateness: Annotated[str, typer.Option(help="How late an event may arrive: time only "
                                          "advances to now minus this.")] = "60s",
    batch: Annotated[int, typer.Option(help="Most records per committed transaction under a "
                                       "backlog (also committed 0.5 s after the oldest, and "
                                       "whenever the inbox is caught up).", min=1)] = 2000,
    tick: Annotated[float, typer.Option(help="Most seconds the loop waits for records "
                                        "before letting time pass.")] = 1.0,
    engine: DurableEngineOption = "durable",
    quarantine: Annotated[Path | None, typer.Option(
        help="Where records that cannot be applied go, appended (default: next to an "
        "SQLite store, STORE.quarantine.jsonl; else sopkit-quarantine.jsonl).")] = None,
    worker: Annotated[str | None, typer.Option(
        help="This process's name in leases and the loop lock (default: host:pid).")] = None,
    lease: Annotated[int, typer.Option(help="Seconds a dispatcher holds the rows it is "
                                       "sending (wall clock).", min=1)] = 60,
    send_from: Annotated[str | None, typer.Option(
        help="Go-live cutover, as `run --send-from`.")] = None,
    max_future: Annotated[str, typer.Option(
        help="Quarantine an event more than this ahead of the clock (none: no limit).")]
    = "5m",
    max_inbox: Annotated[int, typer.Option(
        help="Backpressure: with more accepted records than this not yet applied, ingest "
        "answers 429 with Retry-After.", min=1)] = 100_000,
    history: Annotated[bool, typer.Option(
        "--history/--no-history", help="Keep the applied records in the store as the "
        "history GET /v1/customers/{id}/timeline explains from (the store grows by each "
        "record); --no-history deletes them once applied.")] = True,
    history_keep: Annotated[str, typer.Option(
        help="With --history: delete applied records whose event time is this much before "
        "the clock (the timeline then says its history starts there); none: keep all.")]
    = "400d",
    histories: Annotated[Path | None, typer.Option(
        help="A folder of event histories (and profiles) the web console may simulate the "
        "playbook over (docs/console.md).", exists=True, file_okay=False)] = None,
) -> None:
    """Serve a playbook over HTTP: ingest events (sopkit, Segment, CloudEvents), apply them
    live, deliver through the outbox; /healthz, /readyz, /metrics (docs/http.md); a web
    console for ops at / (docs/console.md).

    API keys come from SOPKIT_API_KEYS="SCOPE:KEY,..." (scopes ingest, read, admin).
    Exit codes: 0 stopped cleanly (SIGTERM/SIGINT: accepted records are applied first);
    1 invalid playbook or the live loop failed; 2 usage (no key for a non-loopback address,
    the extra not installed, another process holds the store, store mismatch).
    """
    import os
    import socket

    from sopkit._serve.auth import ENV, is_loopback, parse_keys

    loaded = load_or_exit(playbook)
    try:
        keys = parse_keys(os.environ.get(ENV))
    except SopkitError as exc:
        raise _fail(str(exc)) from None
    if keys.open and not is_loopback(host):
        raise _fail(f"refusing to listen on {host} without API keys: set {ENV}="
                    "\"ingest:KEY,read:KEY\" (or listen on 127.0.0.1)")
    try:
        from sopkit._serve.server import Settings
        from sopkit._serve.server import serve as serve_playbook
    except ImportError:
        raise _fail("`sopkit serve` needs its extra: pip install 'sopkit[server]'") from None
    from sopkit._live.loop import build_channels

    late = lateness_option(lateness)
    ahead = duration_option("--max-future", max_future)
    keep = duration_option("--history-keep", history_keep)
    if history and keep is not None:
        longest = _longest_window(loaded)
        if longest > keep:
            typer.echo(f"warning: --history-keep {history_keep} is shorter than the "
                       f"playbook's longest window or cooldown ({longest // 86400}d): a "
                       "timeline may not show the events that explain it", err=True)
    try:
        channels: dict[str, Any] = build_channels(loaded, os.environ)
    except SopkitError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    settings = Settings(
        store=store, host=host, port=port, clock=clock_at(loaded, clock),
        fixed_clock=clock is not None, lateness=late, max_future=ahead, batch=batch,
        tick=tick, engine=engine, quarantine=quarantine or beside_store(store),
        worker=worker or f"{socket.gethostname()}:{os.getpid()}", named=worker is not None,
        lease=lease, send_from=None if send_from is None else clock_at(loaded, send_from)(),
        max_inbox=max_inbox, history=history, history_keep=keep, histories=histories)
    try:
        with opened_store(store, create=True) as the_store:
            code = serve_playbook(loaded, the_store, channels, keys, settings,
                                  lambda text: typer.echo(text, err=True))
    finally:
        close_all(channels)
    if code:
        raise typer.Exit(code)
