"""Backpressure and readiness of `sopkit serve`'s app over a real SQLite store, with its live
loop held back (not started) so the inbox fills up, then started to drain it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from live_helpers import shop_playbook
from serve_helpers import free_port

import sopkit
from sopkit._io import Quarantine
from sopkit._live.dispatch import Dispatcher
from sopkit._live.inbox import Inbox
from sopkit._live.loop import LiveRun
from sopkit._live.openstore import open_store
from sopkit._serve.app import build_app
from sopkit._serve.auth import Keys
from sopkit._serve.ingest import Mapper
from sopkit._serve.service import LoopOptions, ServedLoop


def _event(i: int) -> dict[str, str]:
    return {"customer_id": f"c{i}", "type": "purchase", "ts": f"2025-01-0{i + 1}T10:00:00",
            "amount": "3", "event_id": f"e{i}"}


@contextmanager
def _listening(app: Any) -> Iterator[httpx.Client]:
    """The app on a real uvicorn server on 127.0.0.1, in a thread; a client for it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):  # waiting for a real server to listen, a bounded number of times
        if server.started:
            break
        time.sleep(0.01)
    assert server.started
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_full_inbox_answers_429_until_the_loop_catches_up(tmp_path: Path) -> None:
    """Past the bound of unapplied records, ingest answers 429 with Retry-After and stores
    nothing; /readyz says the loop is not running; once it runs, ingest is accepted again."""
    loaded = sopkit.load_playbook(shop_playbook(tmp_path, "http://127.0.0.1:9/hook"))
    url = str(tmp_path / "live.db")
    store = open_store(url)
    live = LiveRun(loaded, store, engine="native")
    reader, writer = Inbox(url), Inbox(url)
    options = LoopOptions(clock=lambda: 1735660800, lateness=0, batch=10, tick=0.01,
                          max_future=None, max_inbox=3)
    loop = ServedLoop(live, Dispatcher(store, {}, worker="t"), reader, Quarantine(None),
                      options)
    app = build_app(loop, writer, Mapper(loaded, lambda: "2025-01-01T00:00:00"), Keys())
    try:
        with _listening(app) as http:
            assert http.post("/v1/events", json=[_event(0), _event(1)]).status_code == 202
            full = http.post("/v1/events", json=[_event(2), _event(3)])
            assert full.status_code == 429
            assert full.headers["retry-after"] == "1"
            assert full.headers["content-type"] == "application/problem+json"
            assert http.post("/v1/events", json=_event(2)).status_code == 202  # 3 fit
            assert http.post("/v1/events", json=_event(3)).status_code == 429
            assert http.get("/readyz").status_code == 503
            assert "sopkit_inbox_depth 3" in http.get("/metrics").text
            loop.start()
            loop.stop(timeout=60)  # drains what was accepted
            assert loop.error is None
            assert http.post("/v1/events", json=_event(3)).status_code == 202
    finally:
        reader.close()
        writer.close()
        store.close()
    customers = {r.customer_id for r in open_store(url, create=False).rows()}
    assert customers == {"c0", "c1", "c2"}  # the 429'd records were not stored
