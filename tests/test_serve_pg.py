"""`sopkit serve` on a PostgreSQL store: the inbox works there as on SQLite."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

from conftest import fresh_pg_url
from http_receiver import Receiver
from live_helpers import shop_history, shop_playbook
from segment.analytics.client import Client
from serve_helpers import END, Served

from sopkit._live.openstore import open_store

TZ = dt.timezone(dt.timedelta(hours=8))


def _serve_history(playbook: Path, store: Path | str, history: Path, tmp: Path) -> None:
    """Every purchase of `history` through Segment's library (gzip bodies), then time to END."""
    quarantine = tmp / "q.jsonl"
    with Served(playbook, store, quarantine=quarantine) as server:
        failures: list[object] = []
        segment = Client("no-key-needed", host=server.url, sync_mode=True, gzip=True,
                         max_retries=0, on_error=lambda error, batch: failures.append(error))
        for i, line in enumerate(history.read_text(encoding="utf-8").splitlines()):
            event = json.loads(line)
            segment.identify(event["customer_id"], {"name": f"顾客{event['customer_id']}"},
                             timestamp=dt.datetime.fromisoformat(event["ts"]).replace(tzinfo=TZ),
                             message_id=f"who-{i}")
            segment.track(event["customer_id"], "purchase", {"amount": event["amount"]},
                          timestamp=dt.datetime.fromisoformat(event["ts"]).replace(tzinfo=TZ),
                          message_id=f"buy-{i}")
        assert not failures
        code, err = server.stop()
        assert code == 0, err
    with Served(playbook, store, clock=END, quarantine=quarantine) as server:
        code, err = server.stop()
        assert code == 0, err
    assert not quarantine.exists() or not quarantine.read_text(encoding="utf-8")


def test_serving_on_postgresql_makes_the_same_outbox_as_on_sqlite(tmp_path: Path,
                                                                   pg_url: str) -> None:
    """The same Segment calls served on PostgreSQL and on SQLite leave the same outbox."""
    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        history, _ = shop_history(tmp_path, customers=10)
        url = fresh_pg_url(pg_url)
        _serve_history(playbook, url, history, tmp_path)
        _serve_history(playbook, tmp_path / "live.db", history, tmp_path)
    store = open_store(url, create=False)
    try:
        on_pg = {(r.key, r.status, r.due_at) for r in store.rows()}
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "live.db") as db:
        on_sqlite = set(db.execute("SELECT key, status, due_at FROM outbox"))
    assert on_pg == on_sqlite
    assert len(on_pg) > 20 and {s for _, s, _ in on_pg} == {"delivered"}
