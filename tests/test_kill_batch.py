"""Crash safety of batched delivery: a jsonl channel takes each pass's rows in one write and
one fsync, and the store marks them in one transaction; SIGKILL anywhere loses and doubles
nothing."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from live_helpers import ENV, kill_while_working, line_count, shop_history, shop_playbook

import sopkit

END = "2025-03-01T12:00:00"
KILLS = 12
HOOK = 'type = "webhook"\nurl = "RECEIVER_URL"\nsecret_env = "SOPKIT_TEST_WEBHOOK_SECRET"\n'


def _jsonl_playbook(tmp: Path, out: Path) -> Path:
    """The shop playbook with its channel `hook` writing to a jsonl file instead."""
    path = shop_playbook(tmp, "RECEIVER_URL")
    text = path.read_text(encoding="utf-8")
    assert HOOK in text
    path.write_text(text.replace(HOOK, f'type = "jsonl"\npath = "{out}"\n'), encoding="utf-8")
    return path


def _keys(out: Path) -> list[str]:
    if not out.exists():
        return []
    text = out.read_text(encoding="utf-8")
    whole = text[: text.rfind("\n") + 1]  # a line cut short by the kill is not written
    return [json.loads(line)["key"] for line in whole.splitlines() if line.strip()]


def _delivered(store: Path) -> set[str]:
    if not store.exists():
        return set()
    with sqlite3.connect(store) as db:
        return {key for (key,) in db.execute(
            "SELECT key FROM outbox WHERE status = 'delivered' AND channel = 'hook'")}


@pytest.mark.slow
def test_sigkill_during_batched_jsonl_delivery_loses_nothing_and_writes_nothing_twice(
        tmp_path: Path) -> None:
    """12 SIGKILLs with batched jsonl delivery: every message in the file once, none marked
    delivered before its line is written."""
    out = tmp_path / "out" / "actions.jsonl"
    playbook = _jsonl_playbook(tmp_path, out)
    events, profiles = shop_history(tmp_path, customers=300, seed=11)
    store = tmp_path / "live.db"
    command = [sys.executable, "-m", "sopkit", "run", "--send-from", "2000-01-01",
               str(playbook), "--store", str(store), "--events", str(events),
               "--profiles", str(profiles), "--once", "--clock", END, "--lateness", "0s",
               "--batch", "7", "--engine", "native", "--quarantine",
               str(tmp_path / "q.jsonl"), "--output", "jsonl", "--worker", "kill-test"]
    env = {**os.environ, **ENV}
    killed = 0
    for _ in kill_while_working(command, env, lambda: line_count(out), KILLS,
                                random.Random(2025)):
        killed += 1
        # the invariant at every kill: a row marked delivered is in the file
        missing = _delivered(store) - set(_keys(out))
        assert not missing, f"marked delivered but not written: {sorted(missing)[:3]}"
    assert killed == KILLS
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                           check=False)
    assert final.returncode == 0, final.stderr
    loaded = sopkit.load_playbook(playbook)
    with (tmp_path / "sim.jsonl").open("w", encoding="utf-8") as sim:
        sopkit.simulate(loaded, events, profiles=profiles, end=END, out=sim, engine="native",
                        masked=False)
    simulated = [json.loads(line) for line in (tmp_path / "sim.jsonl").open(encoding="utf-8")]
    expected = {r["key"] for r in simulated if r["action"] == "send" and r["status"] == "planned"}
    written = Counter(_keys(out))
    assert len(expected) > 500
    assert not expected - set(written), "a planned message was never written"
    assert not set(written) - expected, "a message nobody planned was written"
    assert max(written.values()) == 1, "a message was written twice"
    with sqlite3.connect(store) as db:
        statuses = dict(db.execute("SELECT status, count(*) FROM outbox GROUP BY status"))
        again = db.execute("SELECT count(*) FROM outbox WHERE receipt LIKE "
                           "'%already written%'").fetchone()[0]
    assert statuses.get("pending", 0) == 0 and statuses.get("leased", 0) == 0
    assert statuses.get("dead", 0) == 0
    assert _delivered(store) == expected
    print(f"kills={killed} written={len(written)} sent again after a kill={again}")
