"""`sopkit serve`: the playbook's live loop behind an HTTP API (docs/http.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sopkit._cli.common import (
    DurableEngineOption,
    clock_at,
    close_all,
    duration_option,
    load_or_exit,
    opened_store,
)
from sopkit._errors import SopkitError


def _beside_store(store: str) -> Path:
    """The default quarantine file: beside an SQLite store, else in the cwd (as `run`)."""
    if store.startswith(("postgresql:", "postgres:")) or store == ":memory:":
        return Path("sopkit-quarantine.jsonl")
    path = Path(store.removeprefix("sqlite:///"))
    return path.with_name(path.stem + ".quarantine.jsonl")


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
    batch: Annotated[int, typer.Option(help="Records per committed transaction.", min=1)] = 200,
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
) -> None:
    """Serve a playbook over HTTP: ingest events (sopkit, Segment, CloudEvents), apply them
    live, deliver through the outbox; /healthz, /readyz, /metrics (docs/http.md).

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
        import uvicorn

        from sopkit._serve.app import build_app
    except ImportError:
        raise _fail("`sopkit serve` needs its extra: pip install 'sopkit[server]'") from None
    from sopkit._playbook.models import parse_duration

    try:
        late = 0 if lateness.strip() in ("0", "0s") else parse_duration(lateness)
    except ValueError as exc:
        raise _fail(f"--lateness: {exc}") from None
    ahead = duration_option("--max-future", max_future)
    from sopkit._live.loop import build_channels

    try:
        channels: dict[str, Any] = build_channels(loaded, os.environ)
    except SopkitError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    tell_time = clock_at(loaded, clock)
    name = worker or f"{socket.gethostname()}:{os.getpid()}"
    try:
        with opened_store(store, create=True) as the_store:
            code = _serve(loaded, the_store, store, channels, keys, host, port, tell_time,
                          clock is not None, late, ahead, batch, tick, engine, quarantine,
                          name, worker, lease, send_from, max_inbox, uvicorn, build_app)
    finally:
        close_all(channels)
    if code:
        raise typer.Exit(code)


def _serve(loaded: Any, the_store: Any, store: str, channels: dict[str, Any], keys: Any,
           host: str, port: int, tell_time: Any, fixed: bool, late: int, ahead: int | None,
           batch: int, tick: float, engine: str, quarantine: Path | None, name: str,
           worker: str | None, lease: int, send_from: str | None, max_inbox: int,
           uvicorn: Any, build_app: Any) -> int:
    """Hold the store's loop, run the loop thread and the server; the exit code."""
    import time

    from sopkit._live.dispatch import Dispatcher, expiry
    from sopkit._live.inbox import Inbox
    from sopkit._live.loop import LiveRun, Stopper, record_clock
    from sopkit._live.looplock import holding
    from sopkit._live.openstore import open_store
    from sopkit._serve.ingest import Mapper
    from sopkit._serve.reads import Reads
    from sopkit._serve.service import FlushedQuarantine, LoopOptions, ServedLoop

    stopping: list[Any] = []

    def lost() -> None:
        for server in stopping:
            server.should_exit = True

    with holding(the_store, name, wall=time.time, on_lost=lost,
                 reopen=(lambda: open_store(store, create=False))
                 if the_store.RENEWS else None) as beat:
        live = LiveRun(loaded, the_store, engine=engine)
        record_clock(the_store, tell_time() if fixed else None)
        if send_from is not None:
            live.send_from = clock_at(loaded, send_from)()
        elif live.fresh and live.send_from is None:  # a new store does not send the past
            live.send_from = tell_time() - late
        if worker:
            the_store.release_worker(worker)
        dispatcher = Dispatcher(the_store, channels, worker=name, lease_seconds=lease,
                                wall=lambda: int(time.time()),
                                screens=(expiry, live.screen_consent))
        jail_path = quarantine or _beside_store(store)
        jail = FlushedQuarantine(jail_path, masked=True, append=True)
        reader, writer = Inbox(store), Inbox(store)
        options = LoopOptions(clock=tell_time, lateness=late, batch=batch, tick=tick,
                              max_future=ahead, max_inbox=max_inbox)
        loop = ServedLoop(live, dispatcher, reader, jail, options)
        mapper = Mapper(loaded, lambda: live.runtime.calendar.format(tell_time()))
        reads = Reads(loaded, open_store(store, create=False), writer, jail_path)
        app = build_app(loop, writer, mapper, keys, reads)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False,
                                               log_level="warning", lifespan="off"))
        stopping.append(server)
        loop.on_failure = lost
        loop.start()
        if keys.open:
            typer.echo("warning: no API keys (SOPKIT_API_KEYS): every request is allowed; "
                       "listening on loopback only", err=True)
        typer.echo(f"sopkit serve: {loaded.name} on http://{host}:{port} (store "
                   f"{the_store.url})", err=True)
        # uvicorn handles SIGTERM/SIGINT while it runs, then puts the handlers it found back
        # and raises the signal again: a Stopper's handler takes it instead of the default
        # one (which would end the process before the loop drains)
        restore = Stopper().install()
        try:
            server.run()  # until SIGTERM/SIGINT; uvicorn finishes the requests in flight
        except SystemExit:  # uvicorn could not listen (it logged why)
            if server.started:
                raise
        finally:
            loop.stop()  # applies every accepted record, commits, stops
            restore()
            jail.close()
            reader.close()
            writer.close()
            reads.store.close()
        if not server.started and loop.error is None:
            typer.echo(f"error: cannot listen on {host}:{port}", err=True)
            return 2
    stats = loop.stats.to_json() if loop.stats else {}
    typer.echo(json.dumps({"stopped": loaded.name, **stats}, ensure_ascii=False), err=True)
    if beat.lost:
        typer.echo(f"error: another process took over the event loop of store {store}",
                   err=True)
        return 1
    if loop.error is not None:
        typer.echo(f"error: the live loop failed: {loop.error}", err=True)
        return 1
    return 0
