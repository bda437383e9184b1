"""Crash safety: `sopkit run` killed with SIGKILL at random moments loses and doubles nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from live_helpers import ENV, kill_while_working, line_count, shop_history, shop_playbook

import sopkit

END = "2025-03-01T12:00:00"
KILLS = int(os.environ.get("SOPKIT_KILLS", "12"))  # `make test-deep`: 48
HERE = Path(__file__).parent


def _start_receiver(tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port_file, log = tmp / "port", tmp / "received.jsonl"
    proc = subprocess.Popen([sys.executable, str(HERE / "http_receiver.py"), "--port-file",
                             str(port_file), "--log", str(log)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        if port_file.exists() and port_file.read_text().strip():
            return proc, f"http://127.0.0.1:{port_file.read_text().strip()}/hook", log
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the receiver did not start")


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_sends_nothing_twice(
        tmp_path: Path) -> None:
    """SIGKILLs (12; SOPKIT_KILLS) during one history, then a clean finish: each message once."""
    receiver, url, log = _start_receiver(tmp_path)
    try:
        playbook = shop_playbook(tmp_path, url)
        events, profiles = shop_history(tmp_path, customers=max(300, 25 * KILLS), seed=11)
        store = tmp_path / "live.db"
        command = [sys.executable, "-m", "sopkit", "run", "--send-from", "2000-01-01",
                   str(playbook), "--store", str(store),
                   "--events", str(events), "--profiles", str(profiles), "--once",
                   "--clock", END, "--lateness", "0s", "--batch", "7", "--engine", "native",
                   "--quarantine", str(tmp_path / "q.jsonl"), "--output", "jsonl",
                   "--worker", "kill-test"]
        env = {**os.environ, **ENV}
        killed = sum(1 for _ in kill_while_working(command, env, lambda: line_count(log),
                                                   KILLS, random.Random(2024)))
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                               check=False)
        assert final.returncode == 0, final.stderr
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(timeout=10)
    loaded = sopkit.load_playbook(playbook)
    with (tmp_path / "sim.jsonl").open("w", encoding="utf-8") as out:
        sopkit.simulate(loaded, events, profiles=profiles, end=END, out=out, engine="native",
                        masked=False)
    simulated = [json.loads(line) for line in (tmp_path / "sim.jsonl").open(encoding="utf-8")]
    expected = {r["key"] for r in simulated if r["action"] == "send" and r["status"] == "planned"}
    received: Counter[str] = Counter()
    bodies: dict[str, set[str]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        request = json.loads(line)
        wid = request["headers"]["webhook-id"]
        received[wid] += 1
        bodies.setdefault(wid, set()).add(json.dumps(json.loads(request["body"])["data"]["body"],
                                                     sort_keys=True, ensure_ascii=False))
    lost = expected - set(received)
    unexpected = set(received) - expected
    redelivered = sum(n - 1 for n in received.values())
    print(f"kills={killed} expected={len(expected)} received ids={len(received)} "
          f"lost={len(lost)} unexpected={len(unexpected)} redelivered={redelivered}")
    assert len(expected) > 500
    assert not lost, sorted(lost)[:5]
    assert not unexpected, sorted(unexpected)[:5]
    assert all(len(b) == 1 for b in bodies.values()), "a redelivery changed the message"
    with sqlite3.connect(store) as db:
        statuses = dict(db.execute("SELECT status, count(*) FROM outbox GROUP BY status"))
    assert statuses.get("pending", 0) == 0 and statuses.get("leased", 0) == 0
    assert statuses.get("dead", 0) == 0
