"""`sopkit serve` killed with SIGKILL while a client sends: every 202 is applied exactly once."""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import threading
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from live_helpers import shop_playbook
from serve_helpers import Served

ROUNDS = 4
BASE = dt.datetime(2025, 1, 2, 9, 0)


@pytest.mark.slow
def test_sigkill_during_ingest_applies_every_accepted_event_exactly_once(
        tmp_path: Path) -> None:
    """Four SIGKILLs mid-stream (batches of 1 to 5 events), then a clean restart: each
    acknowledged event made exactly one thank-you, each customer's count has no gap or
    repeat, and an unacknowledged batch is applied whole or not at all."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    store = tmp_path / "live.db"
    rng = random.Random(16)
    sent: dict[int, tuple[str, str]] = {}  # event number -> (customer, ts)
    batches: list[list[int]] = []
    acked: set[int] = set()
    number = 0
    for _ in range(ROUNDS):
        server = Served(playbook, store)
        enough = threading.Event()
        target = len(acked) + rng.randint(20, 60)

        def client(server: Served = server, enough: threading.Event = enough,
                   target: int = target) -> None:
            nonlocal number
            with httpx.Client(timeout=30) as http:
                while True:
                    batch = []
                    for _ in range(rng.randint(1, 5)):
                        cid = f"k{number % 7}"
                        ts = (BASE + dt.timedelta(minutes=number)).isoformat()
                        sent[number] = (cid, ts)
                        batch.append(number)
                        number += 1
                    batches.append(batch)
                    records = [{"customer_id": sent[n][0], "type": "purchase",
                                "ts": sent[n][1], "amount": "1", "event_id": f"n{n}"}
                               for n in batch]
                    try:
                        reply = http.post(server.url + "/v1/events", json=records)
                    except httpx.TransportError:
                        return  # killed mid-request: not acknowledged
                    assert reply.status_code == 202, reply.text
                    acked.update(batch)
                    if len(acked) >= target:
                        enough.set()

        thread = threading.Thread(target=client)
        thread.start()
        assert enough.wait(timeout=120), "the client did not get its events accepted"
        server.kill()
        thread.join(timeout=60)
        assert not thread.is_alive()
    final = Served(playbook, store)
    code, err = final.stop()
    assert code == 0, err
    with sqlite3.connect(store) as db:
        messages = [json.loads(m) for (m,) in db.execute(
            "SELECT message FROM outbox WHERE rule = 'thanks' ORDER BY id")]
    applied: dict[tuple[str, str], int] = defaultdict(int)
    counts: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        local = dt.datetime.fromisoformat(message["time"]).replace(tzinfo=None).isoformat()
        applied[(message["customer_id"], local)] += 1
        counts[message["customer_id"]].append(
            int(message["body"]["message"].split("第 ")[1].split(" ")[0]))
    assert all(n == 1 for n in applied.values()), "an event was applied twice"
    assert {sent[n] for n in acked} <= set(applied), "an acknowledged event was lost"
    assert set(applied) <= set(sent.values())
    for batch in batches:  # a batch is one transaction of the inbox: all or nothing
        assert len({sent[n] in applied for n in batch}) == 1, batch
    for cid, seen in counts.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), cid
    assert len(acked) >= 80
