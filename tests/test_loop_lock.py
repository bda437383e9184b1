"""One event loop per store: `sopkit run` takes the store's loop lock before touching state.

Store-level tests run on a real SQLite file and a real PostgreSQL schema; the command-line
tests start real `sopkit run` processes (subprocess), kill them with SIGKILL and start
others. Lease expiry is tested on virtual time (the store takes `now` from its caller).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import fresh_pg_url
from live_helpers import ENV, shop_history, shop_playbook

from sopkit._errors import UsageError
from sopkit._live.looplock import LoopLocked, LoopLockLost
from sopkit._live.openstore import open_store
from sopkit._live.store import OutboxRow

CLOCK = "2025-02-01T00:00:00"
NOWHERE = "http://127.0.0.1:9/hook"  # nothing listens: deliveries are retried, never sent


def _row(key: str) -> OutboxRow:
    return OutboxRow(key=key, playbook="shop", customer_id="c1", rule="r", kind="send",
                     channel="hook", status="pending", due_at=1, created_at=1,
                     message={"key": key})


def test_a_second_holder_is_refused_naming_the_first(store_url: str) -> None:
    """While one store object holds the loop lock another is refused, told who holds it."""
    first, second = open_store(store_url), open_store(store_url)
    try:
        held = first.acquire_loop_lock("alpha", 1_000, host="box-a", pid=11)
        with pytest.raises(LoopLocked) as refused:
            second.acquire_loop_lock("beta", 1_001, host="box-b", pid=22)
        assert refused.value.exit_code == 2
        text = str(refused.value)
        assert "worker 'alpha' (pid 11 on box-a" in text and "one event loop" in text
        assert second.loop_lock_holder() == held
        first.release_loop_lock(held)
        taken = second.acquire_loop_lock("beta", 1_002, host="box-b", pid=22)
        assert second.loop_lock_holder() == taken
        second.commit({}, {"k": "v"}, [_row("r1")])  # the holder commits as before
    finally:
        first.close()
        second.close()


def test_sqlite_lease_runs_out_and_a_same_named_restart_takes_it_at_once(
        tmp_path: Path) -> None:
    """SQLite: another host's lease is taken only after it expires; the same worker name
    takes it back at once; the run that lost it can neither renew nor commit."""
    url = str(tmp_path / "s.db")
    old, new, again = open_store(url), open_store(url), open_store(url)
    held = old.acquire_loop_lock("w1", 1_000, 30, host="elsewhere", pid=5)
    with pytest.raises(LoopLocked, match="runs out at 1970-01-01 00:17:10 UTC"):
        new.acquire_loop_lock("w2", 1_029, 30, host="here", pid=6)
    assert old.renew_loop_lock(held, 1_020, 30)  # renewed: now runs to 1_050
    with pytest.raises(LoopLocked):
        new.acquire_loop_lock("w2", 1_049, 30, host="here", pid=6)
    new.acquire_loop_lock("w2", 1_050, 30, host="here", pid=6)  # expired: taken over
    assert not old.renew_loop_lock(held, 1_051, 30)
    with pytest.raises(LoopLockLost, match=r"taken over.*'w2'"):
        old.commit({}, {"k": "stale"}, [_row("late")])
    assert [r.key for r in new.rows()] == []  # the loser's commit wrote nothing
    again.acquire_loop_lock("w2", 1_052, 30, host="other-box", pid=7)  # same name: at once
    for db in (old, new, again):
        db.close()


def test_postgres_lock_goes_with_the_connection(pg_url: str) -> None:
    """PostgreSQL: the advisory lock is freed when the holder's connection closes."""
    url = fresh_pg_url(pg_url)
    first, second = open_store(url), open_store(url)
    first.acquire_loop_lock("alpha", 1_000)
    with pytest.raises(LoopLocked, match="PostgreSQL frees the lock"):
        second.acquire_loop_lock("beta", 5_000_000)  # no lease: time does not free it
    first.close()
    _wait_for(lambda: _advisory_locks(url) == 0, "PostgreSQL to end the session", 10)
    second.acquire_loop_lock("beta", 1_001)
    second.close()


# -- real `sopkit run` processes ------------------------------------------------------------

def _store_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return str(tmp_path / "live.db")
    return fresh_pg_url(request.getfixturevalue("pg_url"))


def _command(playbook: Path, store: str, events: Path, profiles: Path, *extra: str
             ) -> list[str]:
    return [sys.executable, "-m", "sopkit", "run", str(playbook), "--store", store,
            "--events", str(events), "--profiles", str(profiles), "--clock", CLOCK,
            "--lateness", "0s", "--engine", "native", "--output", "jsonl", *extra]


def _start(command: list[str], tmp: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(command, env={**os.environ, **ENV}, cwd=tmp, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _line_committed(store: str) -> int:
    """The input line the store has committed (0 while the run has not created it)."""
    try:
        db = open_store(store, create=False)
    except UsageError:
        return 0
    try:
        return int(db.get_meta("input.line") or 0)
    finally:
        db.close()


def _wait_for(check: Any, what: str, seconds: float = 60) -> None:
    """Wait for a real process to reach a state (polled; these are not virtual times)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _rows(store: str) -> list[tuple[str, str]]:
    db = open_store(store, create=False)
    try:
        return sorted((r.key, r.rule) for r in db.rows())
    finally:
        db.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_runs_on_a_brand_new_store_one_loop_no_traceback(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Two `run`s started together on a new store: one runs, the other exits 2 naming the
    holder (no traceback), and every event is applied once."""
    store = _store_for(kind, tmp_path, request)
    playbook = shop_playbook(tmp_path, NOWHERE)
    events, profiles = shop_history(tmp_path, customers=20)
    lines = len(events.read_text(encoding="utf-8").splitlines())
    command = _command(playbook, store, events, profiles, "--follow", "--tick", "0.1")
    procs = [_start(command, tmp_path, "a"), _start(command, tmp_path, "b")]
    try:
        _wait_for(lambda: any(p.poll() is not None for p in procs), "one run to give way")
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        _, err = loser.communicate()
        assert loser.returncode == 2, err
        assert "is in use: `sopkit run` worker" in err and "Traceback" not in err
        assert winner.poll() is None  # the holder is still running
        _wait_for(lambda: _line_committed(store) == lines, "the holder to apply the input")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    out, err = winner.communicate(timeout=60)
    assert winner.returncode == 0, err
    assert json.loads(out)["events_applied"] == lines
    alone = tmp_path / "alone"
    alone.mkdir()
    single = subprocess.run(_command(playbook, str(alone / "s.db"), events, profiles,
                                     "--once"), env={**os.environ, **ENV}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert single.returncode == 0, single.stderr
    assert _rows(store) == _rows(str(alone / "s.db"))  # the same rows, none twice


def _advisory_locks(store: str) -> int:
    with psycopg.connect(store, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                             "AND granted").fetchone()
    return int(found[0]) if found else 0


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_killed_holder_is_taken_over_by_the_next_run(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """While a run holds the store another exits 2; after SIGKILL of the holder the next run
    (another worker name, same host) takes the store over and finishes the input."""
    store = _store_for(kind, tmp_path, request)
    playbook = shop_playbook(tmp_path, NOWHERE)
    events, profiles = shop_history(tmp_path, customers=20)
    holder = _start(_command(playbook, store, events, profiles, "--follow", "--tick", "0.1",
                             "--worker", "first"), tmp_path, "holder")
    try:
        _wait_for(lambda: _line_committed(store) > 0, "the holder to commit")
        refused = subprocess.run(_command(playbook, store, events, profiles, "--once"),
                                 env={**os.environ, **ENV}, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120, check=False)
        assert refused.returncode == 2, refused.stderr
        assert "worker 'first'" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    if kind == "postgresql":  # the server ends the dead client's session, and its lock
        _wait_for(lambda: _advisory_locks(store) == 0, "PostgreSQL to end the session", 10)
    after = subprocess.run(_command(playbook, store, events, profiles, "--once"),
                           env={**os.environ, **ENV}, cwd=tmp_path, capture_output=True,
                           text=True, timeout=120, check=False)
    assert after.returncode == 0, after.stderr
    lines = len(events.read_text(encoding="utf-8").splitlines())
    assert _line_committed(store) == lines


def test_read_only_commands_need_no_lock(tmp_path: Path) -> None:
    """dry-run and outbox list work while a run holds the store."""
    store = str(tmp_path / "live.db")
    playbook = shop_playbook(tmp_path, NOWHERE)
    events, profiles = shop_history(tmp_path, customers=10)
    holder = _start(_command(playbook, store, events, profiles, "--follow", "--tick", "0.1"),
                    tmp_path, "holder")
    try:
        _wait_for(lambda: _line_committed(store) > 0, "the holder to commit")
        env = {**os.environ, **ENV}
        dry = subprocess.run([sys.executable, "-m", "sopkit", "dry-run", str(playbook),
                              "--store", store, "--engine", "native"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
        listed = subprocess.run([sys.executable, "-m", "sopkit", "outbox", "list", "--store",
                                 store], env=env, capture_output=True, text=True, timeout=120,
                                check=False)
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.communicate(timeout=60)
    assert dry.returncode in (0, 3), dry.stderr
    assert listed.returncode == 0 and "Rows per status" in listed.stdout, listed.stderr


def test_the_heartbeat_renews_and_notices_a_takeover(tmp_path: Path) -> None:
    """While held, the heartbeat extends the lease; once another run takes the lock over, it
    calls on_lost, and leaving the block does not free the new holder's lock."""
    import threading

    from sopkit._live.looplock import holding

    url = str(tmp_path / "s.db")
    store, rival = open_store(url), open_store(url)
    lost = threading.Event()
    ticks = iter(range(1_000, 10**9, 5))  # a virtual wall clock: 5 s per reading
    with holding(store, "mine", wall=lambda: next(ticks), on_lost=lost.set,
                 reopen=lambda: open_store(url, create=False), lease_seconds=30,
                 beat_seconds=0.01) as beat:
        first = store.loop_lock_holder()
        assert first is not None
        _wait_for(lambda: (rival.loop_lock_holder() or first).until > first.until,
                  "the heartbeat to renew the lease", 10)
        rival.acquire_loop_lock("mine", 1_000, 30, host="another-box", pid=1)  # same name
        assert lost.wait(10)
    assert beat.lost
    holder = rival.loop_lock_holder()
    assert holder is not None and holder.host == "another-box"
    store.close()
    rival.close()
