"""`sopkit run` and `sopkit dry-run`: live decisions equal simulated ones, delivered once."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from http_receiver import Receiver
from live_helpers import ENV, SECRET, shop_history, shop_playbook
from typer.testing import CliRunner

from sopkit._cli.app import app
from sopkit._lang.clock import Calendar
from sopkit.channels._webhook import verify_signature

END = "2025-03-01T12:00:00"


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, args, env={**ENV, **(env or {})})


def _run(playbook: Path, store: Path, events: Path, profiles: Path | None = None,
         clock: str = END, *extra: str) -> dict[str, Any]:
    args = ["run", "--send-from", "2000-01-01",
            str(playbook), "--store", str(store), "--events", str(events),
            "--once", "--clock", clock, "--lateness", "0s", "--engine", "native",
            "--quarantine", str(store.with_suffix(".quarantine.jsonl")), "--output", "jsonl",
            *extra]
    if profiles is not None:
        args += ["--profiles", str(profiles)]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output.strip().splitlines()[-1]))


def _simulated(playbook: Path, events: Path, profiles: Path, tmp: Path,
               end: str = END) -> list[dict[str, Any]]:
    out = tmp / "sim.jsonl"
    result = _invoke(["simulate", str(playbook), "--events", str(events), "--profiles",
                      str(profiles), "--end", end, "--engine", "native", "--out", str(out),
                      "--unmasked", "--output", "jsonl"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def _outbox(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM outbox ORDER BY key")]


POLICY = """
[policy]
quiet_hours = { start = "21:00", end = "09:00" }
task_capacity = 3
[[policy.caps]]
max = 2
per = "7d"
"""


def test_a_live_run_makes_the_decisions_the_simulation_predicts(tmp_path: Path) -> None:
    """Same keys, statuses, reasons and delivery times as simulate, policies included."""
    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook", POLICY)
        events, profiles = shop_history(tmp_path)
        _run(playbook, tmp_path / "live.db", events, profiles)
        simulated = _simulated(playbook, events, profiles, tmp_path)
    cal = Calendar("Asia/Shanghai")
    deliverable = [r for r in simulated if r["action"] in ("send", "task", "webhook",
                                                            "reassign")]
    expected = {(r["key"], r["rule"], r["action"],
                 "decided" if r["status"] in ("planned", "deferred") else r["status"],
                 r.get("reason", ""), cal.parse(r.get("deliver_at", r["time"])))
                for r in deliverable}
    rows = _outbox(tmp_path / "live.db")
    got = {(r["key"], r["rule"], r["kind"],
            "decided" if r["status"] in ("delivered", "pending") else r["status"],
            r["reason"], r["due_at"]) for r in rows}
    assert got == expected
    statuses = Counter(r["status"] for r in simulated)
    assert statuses["deferred"] > 5 and statuses["suppressed"] > 5, statuses
    assert len(rows) == len(deliverable) > 40


def test_each_planned_message_reaches_the_webhook_once_and_signed(tmp_path: Path) -> None:
    """The receiver sees one signed request per planned send, Chinese text intact."""
    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        events, profiles = shop_history(tmp_path)
        stats = _run(playbook, tmp_path / "live.db", events, profiles)
        sends = [r for r in _simulated(playbook, events, profiles, tmp_path)
                 if r["action"] == "send"]
        requests = list(rx.requests)
    assert stats["dispatched"]["delivered"] == len(_outbox(tmp_path / "live.db"))
    keys = Counter(json.loads(r.body)["data"]["key"] for r in requests)
    assert keys == Counter(r["key"] for r in sends)
    for request in requests:
        verify_signature(SECRET, request.headers, request.body)
    texts = {json.loads(r.body)["data"]["body"]["message"] for r in requests}
    assert "顾客1，感谢第 1 次购买！" in texts


def test_a_restart_resumes_after_the_last_committed_line(tmp_path: Path) -> None:
    """Feeding the same growing file twice applies each event once and sends nothing twice."""
    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        events, profiles = shop_history(tmp_path)
        lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
        growing = tmp_path / "growing.jsonl"
        growing.write_text("".join(lines[:25]), encoding="utf-8")
        # a replay: lines past the pretend clock are applied too (no --max-future limit)
        first = _run(playbook, tmp_path / "live.db", growing, profiles, "2025-01-10T00:00:00",
                     "--max-future", "none")
        growing.write_text("".join(lines), encoding="utf-8")
        second = _run(playbook, tmp_path / "live.db", growing, profiles)
        one_go = tmp_path / "one"
        one_go.mkdir()
        _run(playbook, one_go / "live.db", events, profiles)
        counts = rx.counts()
    assert first["events_applied"] == 25
    assert second["events_skipped"] == 25
    assert second["events_applied"] == len(lines) - 25
    assert max(counts.values()) == 2  # once from the resumed store, once from the other one
    resumed = {(r["key"], r["status"], r["due_at"]) for r in _outbox(tmp_path / "live.db")}
    assert resumed == {(r["key"], r["status"], r["due_at"]) for r in _outbox(one_go / "live.db")}


def test_dry_run_says_what_would_be_sent_and_sends_nothing(tmp_path: Path) -> None:
    """dry-run exits 0 when nothing is due, 3 when wake-ups would send, and writes nothing."""
    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        events, profiles = shop_history(tmp_path)
        store = tmp_path / "live.db"
        _run(playbook, store, events, profiles, "2025-01-30T00:00:00")
        sent = len(rx.requests)
        before = _outbox(store)
        quiet = _invoke(["dry-run", str(playbook), "--store", str(store), "--engine", "native",
                         "--at", "2025-01-30T00:00:00"])
        later = _invoke(["dry-run", str(playbook), "--store", str(store), "--engine", "native",
                         "--at", "2025-02-14T10:00:00", "--output", "jsonl"])
        assert len(rx.requests) == sent
    assert quiet.exit_code == 0, quiet.output
    assert "Would dispatch now: 0" in quiet.output
    assert later.exit_code == 3, later.output
    rows = [json.loads(line) for line in later.output.splitlines()]
    assert rows and {r["message"]["rule"] for r in rows} == {"quiet"}
    assert all(r["source"] == "wake-up" for r in rows)
    assert any("138****" in json.dumps(r, ensure_ascii=False) for r in rows)
    assert _outbox(store) == before


def test_a_changed_playbook_needs_a_new_version(tmp_path: Path) -> None:
    """A store refuses the same playbook version with different logic (bump it), then the
    bumped version until `sopkit migrate` deploys it."""
    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        events, profiles = shop_history(tmp_path, customers=3)
        store = str(tmp_path / "live.db")
        _run(playbook, tmp_path / "live.db", events, profiles)
        text = playbook.read_text(encoding="utf-8").replace("== 14", "== 21")
        playbook.write_text(text, encoding="utf-8")
        args = ["run", str(playbook), "--store", store, "--once", "--clock", END,
                "--engine", "native"]
        refused = _invoke(args)
        playbook.write_text(text.replace('version = "1"', 'version = "2"'), encoding="utf-8")
        undeployed = _invoke(args)
        deployed = _invoke(["migrate", str(playbook), "--store", store])
        accepted = _invoke(args)
    assert refused.exit_code == 2
    assert "bump [playbook].version" in refused.output
    assert undeployed.exit_code == 2 and "sopkit migrate" in undeployed.output
    assert deployed.exit_code == 0, deployed.output
    assert "rule changed" in deployed.output and "quiet" in deployed.output
    assert accepted.exit_code == 0, accepted.output


def test_a_missing_secret_stops_the_run_before_anything_is_applied(tmp_path: Path) -> None:
    """Without the webhook secret's variable, run exits 2 naming it and writes no state."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    events, _ = shop_history(tmp_path, customers=3)
    result = CliRunner().invoke(app, ["run", "--send-from", "2000-01-01",
                                      str(playbook), "--store", str(tmp_path / "x.db"),
                                      "--events", str(events), "--once"],
                                env={"SOPKIT_TEST_WEBHOOK_SECRET": ""})
    assert result.exit_code == 2
    assert "SOPKIT_TEST_WEBHOOK_SECRET" in result.output
    assert not (tmp_path / "x.db").exists()


def test_a_gone_endpoint_dead_letters_instead_of_retrying_forever(tmp_path: Path) -> None:
    """410 Gone dead-letters that row and disables the channel; the rest wait, not lost."""
    from http_receiver import Reply

    with Receiver(default=Reply(410)) as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        events, profiles = shop_history(tmp_path, customers=3)
        stats = _run(playbook, tmp_path / "live.db", events, profiles)
        assert len(rx.requests) == 1
    rows = [r for r in _outbox(tmp_path / "live.db") if r["channel"] == "hook"]
    dead = [r for r in rows if r["status"] == "dead"]
    assert len(dead) == 1 and "410" in dead[0]["last_error"]
    assert {r["status"] for r in rows if r not in dead} == {"pending"}
    assert all(r["attempts"] == 0 for r in rows if r not in dead)
    assert "hook" in stats["disabled"]


def test_a_live_run_on_postgresql_makes_the_same_rows_as_on_sqlite(tmp_path: Path,
                                                                  pg_url: str) -> None:
    """The PostgreSQL store ends a run with the same outbox as the SQLite one."""
    from conftest import fresh_pg_url

    from sopkit._live.openstore import open_store

    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        events, profiles = shop_history(tmp_path, customers=10)
        url = fresh_pg_url(pg_url)
        result = _invoke(["run", "--send-from", "2000-01-01",
                          str(playbook), "--store", url, "--events", str(events),
                          "--profiles", str(profiles), "--once", "--clock", END,
                          "--lateness", "0s", "--engine", "native"])
        assert result.exit_code == 0, result.output
        _run(playbook, tmp_path / "live.db", events, profiles)
    store = open_store(url)
    try:
        on_pg = {(r.key, r.status, r.due_at) for r in store.rows()}
    finally:
        store.close()
    assert on_pg == {(r["key"], r["status"], r["due_at"]) for r in _outbox(tmp_path / "live.db")}
    assert {s for _, s, _ in on_pg} == {"delivered"}


def test_events_from_stdin_are_applied_and_delivered(tmp_path: Path) -> None:
    """`--events -` reads JSON lines from standard input."""
    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        events, profiles = shop_history(tmp_path, customers=5)
        result = CliRunner().invoke(app, [
            "run", "--send-from", "2000-01-01",
str(playbook), "--store", str(tmp_path / "live.db"), "--events", "-",
            "--profiles", str(profiles), "--once", "--clock", END, "--lateness", "0s",
            "--engine", "native", "--output", "jsonl"],
            input=events.read_text(encoding="utf-8"), env=ENV)
        assert result.exit_code == 0, result.output
        stats = json.loads(result.output.strip().splitlines()[-1])
        lines = len(events.read_text(encoding="utf-8").splitlines())
        assert stats["events_applied"] == lines
        assert len(rx.requests) == stats["dispatched"]["delivered"] - sum(
            1 for r in _outbox(tmp_path / "live.db") if r["channel"] == "")


def test_follow_picks_up_lines_appended_later_and_stops_cleanly(tmp_path: Path) -> None:
    """`--follow` applies and delivers lines written after start, without waiting for a full
    batch; SIGTERM stops it with exit 0."""
    import os
    import signal
    import subprocess
    import sys
    import time

    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        events, profiles = shop_history(tmp_path, customers=4)
        lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
        growing = tmp_path / "growing.jsonl"
        growing.write_text(lines[0], encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, "-m", "sopkit", "run", "--send-from", "2000-01-01",
             str(playbook), "--store",
             str(tmp_path / "live.db"), "--events", str(growing), "--profiles", str(profiles),
             # the clock is fixed after the whole history, so the appended (older) lines are
             # "late": allow 60 days, or idle ticks would move time past them
             "--follow", "--tick", "0.2", "--lateness", "60d",
             "--clock", END, "--engine", "native", "--output", "jsonl"],
            env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            assert rx.wait_for(1, timeout=30), "the first line was not delivered"
            with growing.open("a", encoding="utf-8") as f:
                f.writelines(lines[1:])
            sends = sum(1 for line in lines if '"purchase"' in line)

            def thanked() -> int:
                return sum(1 for r in rx.requests if json.loads(r.body)["data"]["rule"] ==
                           "thanks")

            deadline = time.monotonic() + 30
            while thanked() < sends and time.monotonic() < deadline:
                rx.wait_for(len(rx.requests) + 1, timeout=0.5)
            assert thanked() == sends, f"{thanked()} of {sends} thank-you messages"
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["events_applied"] == len(lines)
