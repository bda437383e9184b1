"""`sopkit serve` put together: the store's loop lock, the loop thread, the HTTP server.

The order matters: the loop lock first (nothing of the state is read before this process
holds the store), then the runtime restored from the store, then the loop thread, then the
server. On SIGTERM/SIGINT uvicorn stops taking requests and finishes those in flight; then
the loop applies every accepted record, commits and stops; then the lock is given back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from sopkit._live.dispatch import Dispatcher, expiry
from sopkit._live.inbox import HISTORY, HISTORY_FROM, Inbox
from sopkit._live.loop import LiveRun, Stopper, record_clock
from sopkit._live.looplock import holding
from sopkit._live.openstore import open_store
from sopkit._live.store import Store
from sopkit._mask import mask_text
from sopkit._playbook.load import LoadedPlaybook
from sopkit._serve.app import build_app
from sopkit._serve.auth import Keys
from sopkit._serve.ingest import Mapper
from sopkit._serve.reads import Reads
from sopkit._serve.service import DISPATCH_ROWS, FlushedQuarantine, LoopOptions, ServedLoop


@dataclass(frozen=True)
class Settings:
    """What `sopkit serve`'s options say, parsed."""

    store: str
    host: str
    port: int
    clock: Callable[[], int]
    fixed_clock: bool
    lateness: int
    max_future: int | None
    batch: int
    tick: float
    engine: str
    quarantine: Path
    worker: str  # the name in leases and the loop lock
    named: bool  # the worker name was given: a restart takes its rows back
    lease: int
    send_from: int | None
    max_inbox: int
    history: bool = True  # keep the applied inbox rows: GET /v1/customers/{id}/timeline
    history_keep: int | None = None  # ... this long (event time before the clock); None: all
    histories: Path | None = None  # the web console's simulations read these files


def serve(loaded: LoadedPlaybook, store: Store, channels: dict[str, Any], keys: Keys,
          settings: Settings, say: Callable[[str], None]) -> int:
    """Run until SIGTERM/SIGINT (or the loop fails); the exit code. `say` writes to stderr."""
    s = settings
    stopping: list[uvicorn.Server] = []

    def lost() -> None:
        for server in stopping:
            server.should_exit = True

    with holding(store, s.worker, wall=time.time, on_lost=lost,
                 reopen=(lambda: open_store(s.store, create=False))
                 if store.RENEWS else None) as beat:
        live = LiveRun(loaded, store, engine=s.engine)
        record_clock(store, s.clock() if s.fixed_clock else None)
        if s.send_from is not None:
            live.send_from = s.send_from
        elif live.fresh and live.send_from is None:  # a new store does not send the past
            live.send_from = s.clock() - s.lateness
        if s.named:
            store.release_worker(s.worker)
        _record_history(store, s.history, live.fresh)
        dispatcher = Dispatcher(store, channels, worker=s.worker, lease_seconds=s.lease,
                                batch=DISPATCH_ROWS,
                                wall=lambda: int(time.time()),
                                screens=(expiry, live.screen_consent))
        jail = FlushedQuarantine(s.quarantine, masked=True, append=True)
        reader, writer = Inbox(s.store), Inbox(s.store)
        reads = Reads(loaded, open_store(s.store, create=False), writer, s.quarantine,
                      url=s.store)
        options = LoopOptions(clock=s.clock, lateness=s.lateness, batch=s.batch, tick=s.tick,
                              max_future=s.max_future, max_inbox=s.max_inbox,
                              history=s.history, keep=s.history_keep)
        loop = ServedLoop(live, dispatcher, reader, jail, options)
        mapper = Mapper(loaded, lambda: live.runtime.calendar.format(s.clock()))
        app = build_app(loop, writer, mapper, keys, reads, environ=os.environ,
                        histories=s.histories)
        server = uvicorn.Server(uvicorn.Config(app, host=s.host, port=s.port,
                                               access_log=False, log_level="warning",
                                               lifespan="off"))
        stopping.append(server)
        loop.on_failure = lost
        loop.start()
        if keys.open:
            say("warning: no API keys (SOPKIT_API_KEYS): every request is allowed; "
                "listening on loopback only")
        say(f"sopkit serve: {loaded.name}, store {store.url}, on http://{s.host}:{s.port}")
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
            say(f"error: cannot listen on {s.host}:{s.port}")
            return 2
    stats = loop.stats.to_json() if loop.stats else {}
    say(json.dumps({"stopped": loaded.name, **stats}, ensure_ascii=False))
    if beat.lost:
        say(f"error: another process took over the event loop of store {store.url}")
        return 1
    if loop.error is not None:
        say(f"error: the live loop failed: {mask_text(str(loop.error))}")
        return 1
    return 0


def _record_history(store: Store, keep: bool, fresh: bool) -> None:
    """Whether the kept inbox is the whole history of the store's state (meta `HISTORY`):
    yes from a new store kept throughout; no once `--history-keep` deleted some (then
    `HISTORY_FROM` says from when it is whole) or for a store that had state before the
    history was kept; off while a run keeps none (`--no-history`)."""
    was = store.get_meta(HISTORY)
    now = ("yes" if fresh or was == "yes" else "no") if keep else "off"
    if now != was:
        meta = {HISTORY: now}
        if now != "no" or was == "off" or was is None:
            meta[HISTORY_FROM] = ""  # from an unknown point: records were not kept
        store.commit({}, meta, [])
