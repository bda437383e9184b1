"""`sopkit run --cache-customers`: a bounded cache decides exactly as holding everyone does."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sopkit import load_playbook
from sopkit._cli.app import app
from sopkit._lang.clock import Calendar
from sopkit._live.loop import LiveRun
from sopkit._live.openstore import open_store

ROOT = Path(__file__).parent.parent
END = "2026-03-01T12:00:00"
COMPARED = ("key", "customer_id", "rule", "kind", "channel", "status", "due_at", "created_at",
            "message", "reason")


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def _run(playbook: Path, store: Path, events: Path, profiles: Path | None, cache: int,
         clock: str = END) -> dict[str, Any]:
    args = ["run", str(playbook), "--store", str(store), "--events", str(events), "--once",
            "--clock", clock, "--lateness", "0s", "--engine", "native", "--send-from",
            "2000-01-01", "--max-future", "none", "--cache-customers", str(cache),
            "--quarantine", str(store.with_suffix(".quarantine.jsonl")), "--output", "jsonl"]
    if profiles is not None:
        args += ["--profiles", str(profiles)]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output.strip().splitlines()[-1]))


def _outbox(store: Path) -> list[tuple[Any, ...]]:
    """The outbox in the order the run decided it (by id), without delivery bookkeeping."""
    with sqlite3.connect(store) as db:
        return [tuple(r) for r in db.execute(f"SELECT {', '.join(COMPARED)} FROM outbox "
                                             "ORDER BY id")]


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


def _crm(tmp: Path) -> tuple[Path, Path, Path]:
    """The CRM example (hand-over, delayed follow-ups, 30-day recall) over 40 customers, with
    a staff member leaving half-way."""
    rng = random.Random(15)
    start = dt.datetime(2025, 9, 1, 9, 0)
    owners = ["li.na", "wang.fang", "zhao.lei"]
    profiles = [{"customer_id": f"c{i:02d}", "name": f"顾客{i}", "phone": f"1390000{i:04d}",
                 "owner": owners[i % 3]} for i in range(40)]
    events: list[dict[str, Any]] = []
    for i in range(40):
        for _ in range(rng.randint(1, 4)):
            when = start + dt.timedelta(minutes=rng.randint(0, 120 * 24 * 60))
            events.append({"customer_id": f"c{i:02d}", "type": "purchase",
                           "ts": when.isoformat(), "amount": f"{rng.randint(10, 300)}.00"})
    events.append({"type": "staff_departed", "staff": "zhao.lei", "ts": "2025-10-20T18:00:00"})
    events.sort(key=lambda e: (e["ts"], e.get("customer_id", "")))
    return (ROOT / "examples" / "crm" / "crm.toml", _write(tmp / "crm.jsonl", events),
            _write(tmp / "crm-profiles.jsonl", profiles))


def _tea(tmp: Path) -> tuple[Path, Path, Path]:
    """The calendar example (monthly campaign to everyone, lunar birthdays, workday delays)
    over 25 customers."""
    rng = random.Random(16)
    start = dt.datetime(2025, 9, 1, 10, 0)
    profiles = [{"customer_id": f"t{i:02d}", "name": f"茶友{i}",
                 "lunar_birthday": f"19{70 + i}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"}
                for i in range(25)]
    events = [{"customer_id": f"t{rng.randrange(25):02d}", "type": "purchase",
               "ts": (start + dt.timedelta(minutes=rng.randint(0, 150 * 24 * 60))).isoformat(),
               "amount": str(rng.choice([80, 300, 1200]))} for _ in range(60)]
    events.sort(key=lambda e: (e["ts"], e["customer_id"]))
    return (ROOT / "examples" / "calendar" / "tea.toml", _write(tmp / "tea.jsonl", events),
            _write(tmp / "tea-profiles.jsonl", profiles))


def _membership(tmp: Path) -> tuple[Path, Path, Path]:
    """The membership example as shipped (5 members: consent, renewals, task capacity)."""
    home = ROOT / "examples" / "membership"
    return home / "membership-live.toml", home / "events.jsonl", home / "profiles.csv"


CASES = {"crm": _crm, "tea": _tea, "membership": _membership}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_tiny_cache_writes_the_outbox_a_run_holding_everyone_writes(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 3 customers held (the rest evicted and read back), every outbox row is the same,
    decided in the same order, as a run holding every customer, and as simulate predicts."""
    monkeypatch.chdir(tmp_path)  # the membership example's jsonl channel writes to out/
    playbook, events, profiles = CASES[case](tmp_path)
    everyone = _run(playbook, tmp_path / "all.db", events, profiles, 0)
    tiny = _run(playbook, tmp_path / "tiny.db", events, profiles, 3)
    held = _outbox(tmp_path / "all.db")
    assert _outbox(tmp_path / "tiny.db") == held
    assert len(held) > 10
    assert tiny["customers"] == everyone["customers"] > 3
    assert tiny["events_applied"] == everyone["events_applied"]
    out = tmp_path / "sim.jsonl"
    result = _invoke(["simulate", str(playbook), "--events", str(events), "--profiles",
                      str(profiles), "--end", END, "--engine", "native", "--out", str(out),
                      "--unmasked", "--output", "jsonl"])
    assert result.exit_code == 0, result.output
    cal = Calendar(load_playbook(playbook).model.playbook.timezone)
    simulated = {(r["key"], cal.parse(r.get("deliver_at", r["time"])))
                 for line in out.read_text(encoding="utf-8").splitlines()
                 if (r := json.loads(line))["action"] in ("send", "task", "webhook",
                                                          "reassign")}
    assert {(row[0], row[6]) for row in held} == simulated


def test_a_restart_mid_history_with_a_tiny_cache_changes_nothing(tmp_path: Path) -> None:
    """A run stopped half-way and resumed, 2 customers held each time, ends with the outbox
    of one uninterrupted run holding everyone."""
    playbook, events, profiles = _crm(tmp_path)
    lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
    growing = tmp_path / "growing.jsonl"
    growing.write_text("".join(lines[:len(lines) // 2]), encoding="utf-8")
    first = _run(playbook, tmp_path / "tiny.db", growing, profiles, 2, "2025-10-15T00:00:00")
    growing.write_text("".join(lines), encoding="utf-8")
    second = _run(playbook, tmp_path / "tiny.db", growing, profiles, 2)
    _run(playbook, tmp_path / "all.db", events, profiles, 0)
    assert first["events_applied"] == len(lines) // 2
    assert second["events_skipped"] == len(lines) // 2
    assert _outbox(tmp_path / "tiny.db") == _outbox(tmp_path / "all.db")


def test_an_evicted_customer_with_a_pending_follow_up_wakes_on_time(tmp_path: Path) -> None:
    """A customer dropped from the cache right after a purchase is read back when their
    3-day follow-up is due (from the store's next_wake), and it fires at that instant."""
    playbook = load_playbook(ROOT / "examples" / "crm" / "crm.toml")
    store = open_store(str(tmp_path / "s.db"))
    try:
        live = LiveRun(playbook, store, engine="native", cache_customers=1)
        rt = live.runtime
        bought = rt.calendar.parse("2025-09-01T10:00:00")
        live.commit(rt.ingest({"customer_id": "c1", "type": "purchase",
                               "ts": "2025-09-01T10:00:00", "amount": "20"}))
        live.commit(rt.ingest({"customer_id": "c2", "type": "purchase",
                               "ts": "2025-09-01T11:00:00", "amount": "20"}))
        assert list(rt.customers) == ["c2"]  # c1 was evicted, committed
        assert store.due_customers(bought + 3 * 86400)[0] == (bought + 3 * 86400, "c1")
        actions = rt.advance_ts(bought + 5 * 86400)
        follow = [a for a in actions if a.customer_id == "c1" and a.rule == "follow_up"]
        assert {a.ts for a in follow} == {bought + 3 * 86400} and len(follow) == 2
        assert [a.customer_id for a in actions if a.rule == "follow_up"] == \
            ["c1", "c1", "c2", "c2"]  # by time, then customer id
    finally:
        store.close()


def test_a_schema_2_store_is_upgraded_in_place_and_runs_on(tmp_path: Path) -> None:
    """A store written before the next_wake column (schema 2) is upgraded when opened: the
    column is filled from each state, and a run on it continues exactly as on a store that
    was never at schema 2."""
    playbook, events, profiles = _crm(tmp_path)
    lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
    growing = tmp_path / "growing.jsonl"
    growing.write_text("".join(lines[:40]), encoding="utf-8")
    _run(playbook, tmp_path / "old.db", growing, profiles, 0, "2025-10-01T00:00:00")
    shutil.copy(tmp_path / "old.db", tmp_path / "never.db")  # stays at schema 3
    with sqlite3.connect(tmp_path / "old.db") as db:
        wakes = dict(db.execute("SELECT customer_id, next_wake FROM customers"))
        db.execute("DROP INDEX customers_wake")
        db.execute("ALTER TABLE customers DROP COLUMN next_wake")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    shutil.copy(tmp_path / "old.db", tmp_path / "kept.db")
    store = open_store(str(tmp_path / "old.db"), create=False)
    try:
        assert store.get_meta("schema_version") == "3"
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "old.db") as db:
        assert dict(db.execute("SELECT customer_id, next_wake FROM customers")) == wakes
    assert sum(w is not None for w in wakes.values()) > 10
    growing.write_text("".join(lines), encoding="utf-8")
    _run(playbook, tmp_path / "old.db", growing, profiles, 3)
    _run(playbook, tmp_path / "kept.db", growing, profiles, 0)  # upgraded by the run itself
    _run(playbook, tmp_path / "never.db", growing, profiles, 0)
    assert _outbox(tmp_path / "old.db") == _outbox(tmp_path / "never.db") == \
        _outbox(tmp_path / "kept.db")


def test_a_bounded_cache_is_refused_for_a_playbook_with_rfm(tmp_path: Path) -> None:
    """`--cache-customers` with an [rfm] playbook exits 2 naming [rfm] and what to do;
    without the option the same run holds everyone and works."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "rules").mkdir()
    shutil.copy(ROOT / "rules" / "rfm.toml", tmp_path / "rules" / "rfm.toml")
    text = (ROOT / "playbooks" / "vip.toml").read_text(encoding="utf-8")
    playbook = tmp_path / "pb" / "vip.toml"  # its channels print, so no secrets are needed
    playbook.write_text(text.replace('type = "wecom"', 'type = "console"')
                        .replace('type = "sms"', 'type = "console"'), encoding="utf-8")
    events = _write(tmp_path / "e.jsonl", [])
    args = ["run", str(playbook), "--store", str(tmp_path / "s.db"), "--events", str(events),
            "--once", "--clock", END]
    refused = _invoke([*args, "--cache-customers", "10"])
    assert refused.exit_code == 2
    assert "[rfm]" in refused.output and "leave --cache-customers out" in refused.output
    assert _invoke(args).exit_code == 0


def test_the_next_wake_column_follows_each_commit(store_url: str) -> None:
    """Each commit writes a customer's next wake-up beside the state; due_customers pages
    them in (time, customer id) order from the index, idle customers never listed."""
    store = open_store(store_url)
    try:
        state = {cid: json.dumps({"v": 3, "id": cid, "wake_at": w}).encode()
                 for cid, w in (("a", 200), ("b", 100), ("c", 200), ("d", 300))}
        state["idle"] = b'{"v":3,"id":"idle"}'
        store.commit(state, {}, [])
        assert store.due_customers(250) == [(100, "b"), (200, "a"), (200, "c")]
        assert store.due_customers(250, (200, "a")) == [(200, "c")]
        assert store.due_customers(1000, None, 2) == [(100, "b"), (200, "a")]
        store.commit({"b": state["b"]}, {}, [], wakes={"b": 400})
        assert store.due_customers(1000) == [(200, "a"), (200, "c"), (300, "d"), (400, "b")]
        assert store.load_customer("idle") == state["idle"] and store.count_customers() == 5
        assert store.load_customer("nobody") is None
    finally:
        store.close()


def test_opening_a_schema_2_store_fills_next_wake_from_each_state(store_url: str) -> None:
    """Opening a schema 2 store (no next_wake column) adds the column and its index, fills
    it from every state's wake_at over several pages, and records schema 3."""
    import test_store

    store = open_store(store_url)
    states = {f"c{i:04d}": json.dumps({"v": 3, "id": f"c{i:04d}",
                                       **({"wake_at": 5000 - i} if i % 3 else {})}).encode()
              for i in range(2500)}
    store.commit(states, {}, [])
    store.close()
    raw = test_store._raw(store_url)
    raw.execute("DROP INDEX customers_wake")
    raw.execute("ALTER TABLE customers DROP COLUMN next_wake")
    raw.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    raw.close()
    store = open_store(store_url, create=False)
    try:
        assert store.get_meta("schema_version") == "3"
        due = store.due_customers(10_000, None, 5000)
        assert due == sorted((5000 - i, f"c{i:04d}") for i in range(2500) if i % 3)
    finally:
        store.close()
