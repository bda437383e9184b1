"""Going live: a store fed with history sends nothing stale, late rows expire, an opt-out
stops a message already waiting, and a redelivered event is applied once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from sopkit._cli.app import app

PLAYBOOK = """
[playbook]
name = "tea"
version = "1"
timezone = "Asia/Shanghai"
day_starts = "00:00"

[profile]
name = "string"

[events.purchase]
amount = "decimal"

[metrics]
days_since_purchase = {{ kind = "days_since", event = "purchase" }}
purchases = {{ kind = "count", event = "purchase" }}

[channels.out]
type = "jsonl"
path = "{out}"

[policy]
quiet_hours = {{ start = "21:00", end = "09:00" }}

[templates.thanks]
text = "谢谢第 {{{{ purchases }}}} 次光临"
[templates.recall]
text = "好久不见"

[[rules]]
name = "thanks"
on = "purchase"
actions = [{{ type = "send", channel = "out", template = "thanks"{expires} }}]

[[rules]]
name = "recall"
when = "days_since_purchase >= 30"
max_times = 1
actions = [{{ type = "send", channel = "out", template = "recall" }}]
"""


def _playbook(tmp: Path, expires: str = "") -> Path:
    path = tmp / "tea.toml"
    extra = f', expires = "{expires}"' if expires else ""
    path.write_text(PLAYBOOK.format(out=tmp / "sent.jsonl", expires=extra), encoding="utf-8")
    return path


def _write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events),
                    encoding="utf-8")
    return path


def _buy(customer: str, ts: str, **extra: Any) -> dict[str, Any]:
    return {"customer_id": customer, "type": "purchase", "ts": ts, "amount": "30", **extra}


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _run(playbook: Path, store: Path, clock: str, events: Path, *extra: str) -> Any:
    result = _cli("run", str(playbook), "--store", str(store), "--events", str(events),
                  "--once", "--clock", clock, "--lateness", "0s", "--engine", "native",
                  "--output", "jsonl", *extra)
    assert result.exit_code == 0, result.output
    return result


def _sent(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "sent.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def _outbox(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM outbox ORDER BY id")]


def test_a_new_store_fed_with_history_sends_nothing_stale(tmp_path: Path) -> None:
    """A first run over two years of history records every past action as backfilled, sends
    none of them, and counts them: a max_times 1 recall that fired in the past stays fired."""
    history = sorted((_buy(f"c{i}", f"2023-0{1 + i % 6}-1{i % 9}T10:00:00") for i in range(12)),
                     key=lambda e: e["ts"])
    events = _write(tmp_path / "events.jsonl", history)
    playbook = _playbook(tmp_path)
    store = tmp_path / "live.db"
    _run(playbook, store, "2025-03-01T12:00:00", events)
    rows = _outbox(store)
    assert _sent(tmp_path) == []
    assert {r["status"] for r in rows} == {"backfilled"}
    assert sum(r["rule"] == "recall" for r in rows) == 12  # every one of them went quiet
    assert all(r["reason"].startswith("backfilled: due before --send-from 2025-03-01T12:00")
               for r in rows)
    listed = _cli("outbox", "list", "--store", str(store), "--status", "backfilled",
                  "--output", "jsonl")
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == 24
    # from now on it is live: a new purchase is thanked, the recall is not sent a second time
    _write(events, [*history, _buy("c1", "2025-03-02T10:00:00")])
    _run(playbook, store, "2025-05-01T12:00:00", events)
    assert [(m["rule"], m["customer_id"]) for m in _sent(tmp_path)] == [("thanks", "c1")]


def test_send_from_sends_what_is_due_after_it(tmp_path: Path) -> None:
    """`--send-from` draws the line: actions due before it are backfilled, later ones sent."""
    events = _write(tmp_path / "events.jsonl", [_buy("c1", "2025-01-01T10:00:00"),
                                                _buy("c2", "2025-02-20T10:00:00")])
    store = tmp_path / "live.db"
    _run(_playbook(tmp_path), store, "2025-03-01T12:00:00", events,
         "--send-from", "2025-01-15T00:00:00")
    sent = [(m["rule"], m["customer_id"]) for m in _sent(tmp_path)]
    assert sent == [("recall", "c1"), ("thanks", "c2")]  # due 01-31 and 02-20
    statuses = {(r["rule"], r["customer_id"]): r["status"] for r in _outbox(store)}
    assert statuses[("thanks", "c1")] == "backfilled"  # due 01-01


def test_a_row_not_delivered_in_time_expires_instead_of_going_out_late(
        tmp_path: Path) -> None:
    """With `expires = "1d"`, a thank-you whose dispatcher was down for three days becomes
    `expired` with its reason; one delivered in time goes out."""
    playbook = _playbook(tmp_path, expires="1d")
    events = _write(tmp_path / "events.jsonl", [_buy("c1", "2025-01-01T10:00:00")])
    store = tmp_path / "live.db"
    _run(playbook, store, "2025-01-01T10:00:00", events, "--send-from", "2000-01-01")
    _write(events, [_buy("c1", "2025-01-01T10:00:00"), _buy("c2", "2025-01-01T10:30:00")])
    # the dispatcher was down: the next run starts three days later
    _cli("run", str(playbook), "--store", str(store), "--once", "--clock",
         "2025-01-01T10:00:00", "--lateness", "0s", "--engine", "native")
    result = _run(playbook, store, "2025-01-04T11:00:00", events)
    rows = {r["customer_id"]: r for r in _outbox(store) if r["rule"] == "thanks"}
    assert rows["c1"]["status"] == "delivered"
    assert rows["c2"]["status"] == "expired"
    assert rows["c2"]["reason"] == "expired: not delivered by 2025-01-02T10:30:00+08:00"
    assert [m["customer_id"] for m in _sent(tmp_path)] == ["c1"]
    assert '"outbox": {' in result.output and '"expired": 1' in result.output


def test_dry_run_shows_rows_that_would_expire(tmp_path: Path) -> None:
    """`dry-run` lists a row past its expiry as expired, not as something it would send."""
    playbook = _playbook(tmp_path, expires="1d")
    events = _write(tmp_path / "events.jsonl", [_buy("c1", "2025-01-01T22:00:00")])
    store = tmp_path / "live.db"
    _run(playbook, store, "2025-01-01T22:30:00", events, "--send-from", "2000-01-01")
    result = _cli("dry-run", str(playbook), "--store", str(store), "--at",
                  "2025-01-05T10:00:00", "--engine", "native", "--output", "jsonl")
    assert result.exit_code == 0, result.output  # nothing would be sent
    rows = [json.loads(line) for line in result.output.splitlines()]
    thanks = [r for r in rows if r.get("key", "").startswith("tea:1:thanks")]
    assert thanks and thanks[0]["status"] == "expired"


def test_an_opt_out_stops_a_message_already_deferred(tmp_path: Path) -> None:
    """A thank-you deferred by quiet hours to 09:00 is suppressed at delivery when the
    customer opted out at 23:00, across a restart; the row says why."""
    playbook = _playbook(tmp_path)
    events = tmp_path / "events.jsonl"
    purchase = _buy("c1", "2025-01-01T22:00:00")
    _write(events, [purchase])
    store = tmp_path / "live.db"
    _run(playbook, store, "2025-01-01T22:30:00", events, "--send-from", "2000-01-01")
    assert [r["status"] for r in _outbox(store)] == ["pending"]
    _write(events, [purchase, {"customer_id": "c1", "type": "opt_out",
                               "ts": "2025-01-01T23:00:00", "channel": "out"}])
    _run(playbook, store, "2025-01-02T10:00:00", events)
    (row,) = _outbox(store)
    assert (row["status"], row["reason"]) == ("suppressed", "opt-out: out (at delivery)")
    assert _sent(tmp_path) == []


def test_a_duplicate_event_id_is_quarantined_in_simulate(tmp_path: Path) -> None:
    """Two copies of one event (same event_id) in a history: one is applied, one thanked,
    the other quarantined as a duplicate."""
    playbook = _playbook(tmp_path)
    copy = _buy("c1", "2025-01-01T10:00:00", event_id="evt-1")
    events = _write(tmp_path / "events.jsonl", [copy, copy, _buy("c1", "2025-01-02T10:00:00",
                                                                 messageId="evt-2")])
    out, jail = tmp_path / "actions.jsonl", tmp_path / "q.jsonl"
    result = _cli("simulate", str(playbook), "--events", str(events), "--end",
                  "2025-01-03", "--out", str(out), "--quarantine", str(jail))
    assert result.exit_code == 0, result.output
    thanks = [json.loads(line)["message"] for line in out.read_text().splitlines()]
    assert thanks == ["谢谢第 1 次光临", "谢谢第 2 次光临"]
    (bad,) = [json.loads(line) for line in jail.read_text(encoding="utf-8").splitlines()]
    assert bad["line"] == 2 and bad["reason"].startswith("duplicate event_id 'evt-1'")


def test_a_redelivered_event_after_kill_9_is_applied_once(tmp_path: Path) -> None:
    """A live run killed with SIGKILL after applying an event, then fed the same event again
    (as a queue redelivers), sends one message, not two."""
    playbook = _playbook(tmp_path)
    events = tmp_path / "events.jsonl"
    copy = _buy("c1", "2025-01-01T10:00:00", event_id="order-77")
    _write(events, [copy])
    store = tmp_path / "live.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sopkit", "run", str(playbook), "--store", str(store),
         "--events", str(events), "--follow", "--tick", "0.05", "--clock",
         "2025-01-01T12:00:00", "--lateness", "0s", "--engine", "native",
         "--send-from", "2000-01-01"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # the run commits the event when the file goes idle
            if _sent(tmp_path):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(_sent(tmp_path)) == 1
    _write(events, [copy, copy])
    result = _run(playbook, store, "2025-01-01T12:00:00", events)
    assert len(_sent(tmp_path)) == 1
    assert json.loads(result.output.splitlines()[-1])["quarantined"] == 1
    quarantined = (tmp_path / "live.quarantine.jsonl").read_text(encoding="utf-8")
    assert "duplicate event_id 'order-77'" in quarantined


def test_explain_shows_the_past_as_backfilled(tmp_path: Path) -> None:
    """`explain --send-from` shows what the live store recorded: actions due before the
    go-live instant are backfilled, later ones planned."""
    events = _write(tmp_path / "events.jsonl", [_buy("c1", "2025-01-01T10:00:00"),
                                                _buy("c1", "2025-03-10T10:00:00")])
    result = _cli("explain", str(_playbook(tmp_path)), "--events", str(events), "--customer",
                  "c1", "--send-from", "2025-03-01T00:00:00", "--output", "jsonl")
    assert result.exit_code == 0, result.output
    actions = [json.loads(line)["data"] for line in result.stdout.splitlines()
               if json.loads(line)["kind"] == "action"]
    assert [(a["rule"], a["status"]) for a in actions] == [
        ("thanks", "backfilled"), ("recall", "backfilled"), ("thanks", "planned")]
