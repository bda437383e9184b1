"""The durable store, against a real SQLite file and a real PostgreSQL server.

Every test taking `store_url` runs twice: once on SQLite, once on PostgreSQL (conftest.py).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import fresh_pg_url

from sopkit._errors import UsageError
from sopkit._live.openstore import open_store
from sopkit._live.pgstore import PostgresStore
from sopkit._live.sqlitestore import SQLiteStore
from sopkit._live.store import SCHEMA_VERSION, STATUSES, OutboxRow, Store, StoreError

DB_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


def row(key: str, *, due: int = 100, status: str = "pending", customer: str = "c1",
        channel: str = "sms", kind: str = "send", created: int = 50,
        **message: Any) -> OutboxRow:
    """An outbox row as a live run would write it."""
    body = {"message": f"您好 {key}"} | message
    return OutboxRow(key=key, playbook="retail", customer_id=customer, rule="winback",
                     kind=kind, channel=channel, status=status, due_at=due, created_at=created,
                     message={"key": key, "kind": kind, "channel": channel,
                              "customer_id": customer, "rule": "winback",
                              "time": "2024-05-01T10:00:00+08:00", "body": body,
                              "contact": {"phone": "13812345678"}, "owner": "staff-01"})


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open, empty store (SQLite file or PostgreSQL schema), closed after the test."""
    opened = open_store(store_url)
    yield opened
    opened.close()


def _raw(url: str) -> Any:
    """A plain DB-API connection to the store's database, to look behind the store's back."""
    if url.startswith("postgresql://"):
        return psycopg.connect(url, autocommit=True)
    return sqlite3.connect(url, isolation_level=None)


# -- commit ----------------------------------------------------------------------------------

def test_commit_writes_state_meta_and_rows(store: Store) -> None:
    """commit stores customer states, meta and outbox rows, and counts the new rows."""
    new = store.commit({"c1": b"\x00state-1", "李雷": b"\xffstate-2"}, {"clock": "1700000000"},
                       [row("k1"), row("k2", status="suppressed")])
    assert new == 2
    assert dict(store.load_customers()) == {"c1": b"\x00state-1", "李雷": b"\xffstate-2"}
    assert store.get_meta("clock") == "1700000000"
    assert store.get_meta("missing") is None
    assert [(r.key, r.status) for r in store.rows()] == [("k1", "pending"),
                                                         ("k2", "suppressed")]
    assert store.rows()[0].message["body"]["message"] == "您好 k1"


def test_duplicate_keys_are_no_ops(store: Store) -> None:
    """Re-committing a row key (a replayed event) inserts nothing and counts 0 new rows."""
    assert store.commit({}, {}, [row("k1"), row("k2"), row("k1")]) == 2
    assert store.commit({"c1": b"v2"}, {"clock": "2"}, [row("k1", due=999), row("k3")]) == 1
    rows = {r.key: r for r in store.rows()}
    assert sorted(rows) == ["k1", "k2", "k3"]
    assert rows["k1"].due_at == 100, "the first row with a key wins"
    assert dict(store.load_customers()) == {"c1": b"v2"}


def test_commit_is_all_or_nothing(store: Store) -> None:
    """A failure inside commit leaves the state, the meta and the outbox as they were."""
    store.commit({"c1": b"before"}, {"clock": "1"}, [row("k1")])
    broken = row("k3")
    broken.key = None  # type: ignore[assignment]  # a NOT NULL violation inside the transaction
    with pytest.raises(DB_ERRORS):
        store.commit({"c1": b"after", "c2": b"new"}, {"clock": "2"}, [row("k2"), broken])
    assert dict(store.load_customers()) == {"c1": b"before"}
    assert store.get_meta("clock") == "1"
    assert [r.key for r in store.rows()] == ["k1"]


def test_commit_refuses_the_schema_version_key(store: Store) -> None:
    """The schema version in meta cannot be overwritten through commit."""
    with pytest.raises(ValueError, match="schema_version"):
        store.commit({}, {"schema_version": "9"}, [])
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_load_customers_reads_every_page(store: Store) -> None:
    """Thousands of customers come back complete, read a page at a time."""
    states = {f"c{i:05d}": f"state {i}".encode() for i in range(2500)}
    store.commit(states, {}, [])
    assert dict(store.load_customers()) == states


# -- claiming -------------------------------------------------------------------------------

def test_claim_leases_due_rows_only(store: Store) -> None:
    """claim takes pending rows due by now, oldest first, and leases them to the worker."""
    store.commit({}, {}, [row("late", due=200), row("first", due=90), row("due", due=150),
                          row("gone", due=10, status="suppressed")])
    claimed = store.claim(150, 10, 60, "w1")
    assert [r.key for r in claimed] == ["first", "due"]
    assert {(r.status, r.lease_until, r.leased_by, r.attempts) for r in claimed} == \
        {("leased", 210, "w1", 1)}
    assert store.claim(150, 10, 60, "w2") == [], "leased rows are not claimed again"
    assert store.counts() == dict.fromkeys(STATUSES, 0) | {
        "pending": 1, "leased": 2, "suppressed": 1}


def test_claim_respects_the_limit(store: Store) -> None:
    """claim takes at most `limit` rows; the next claim takes the next ones."""
    store.commit({}, {}, [row(f"k{i}", due=100 + i) for i in range(5)])
    assert [r.key for r in store.claim(200, 2, 60, "w")] == ["k0", "k1"]
    assert [r.key for r in store.claim(200, 2, 60, "w")] == ["k2", "k3"]


def test_expired_lease_is_reclaimed(store: Store) -> None:
    """A row leased by a dispatcher that crashed is claimed again once the lease runs out."""
    store.commit({}, {}, [row("k1")])
    (first,) = store.claim(100, 10, 60, "crashed")
    assert store.claim(159, 10, 60, "w2") == []
    (again,) = store.claim(160, 10, 60, "w2")
    assert (again.id, again.attempts, again.leased_by, again.lease_until) == \
        (first.id, 2, "w2", 220)


def test_commit_moves_a_handed_over_customers_rows_in_the_same_transaction(
        store: Store) -> None:
    """Rows added by the same commit as a hand-over already carry the new owner."""
    store.commit({}, {}, [row("old-task", kind="task", assignee="staff-01")])
    store.commit({}, {}, [row("new-task", kind="task", assignee="staff-01"),
                          row("other", customer="c2", kind="task", assignee="staff-01")],
                 {"c1": "staff-02"})
    owners = {r.key: (r.message["owner"], r.message["body"]["assignee"]) for r in store.rows()}
    assert owners == {"old-task": ("staff-02", "staff-02"), "new-task": ("staff-02", "staff-02"),
                      "other": ("staff-01", "staff-01")}


def test_leases_run_on_the_wall_clock_in_a_replay(store: Store) -> None:
    """With a fixed business clock, a lease still runs out as wall time passes."""
    store.commit({}, {}, [row("k1", due=100)])
    (first,) = store.claim(500, 10, 60, "crashed", lease_now=10_000)
    assert first.lease_until == 10_060
    assert store.claim(500, 10, 60, "w2", lease_now=10_059) == []
    (again,) = store.claim(500, 10, 60, "w2", lease_now=10_060)
    assert (again.id, again.leased_by, again.attempts) == (first.id, "w2", 2)


def test_a_restarted_worker_takes_its_own_rows_back(store: Store) -> None:
    """release_worker frees only that worker's leased rows, keeping their attempts."""
    store.commit({}, {}, [row("a", due=1), row("b", due=2), row("c", due=3)])
    store.claim(100, 2, 60, "old")
    store.claim(100, 1, 60, "other")
    assert store.release_worker("old") == 2
    assert {(r.key, r.status, r.attempts) for r in store.rows()} == {
        ("a", "pending", 1), ("b", "pending", 1), ("c", "leased", 1)}


def test_claim_skips_channels(store: Store) -> None:
    """Rows of skipped channels stay pending and do not hold back other channels' rows."""
    store.commit({}, {}, [row("a", channel="gone", due=1), row("b", channel="gone", due=2),
                          row("c", channel="sms", due=3)])
    assert [r.key for r in store.claim(100, 1, 60, "w", skip_channels=["gone"])] == ["c"]
    assert [r.status for r in store.rows(customer_id="c1")] == ["pending", "pending", "leased"]


def test_marks_record_the_outcome(store: Store) -> None:
    """delivered, retry and dead each record their time, error or receipt on the row."""
    store.commit({}, {}, [row("ok"), row("again"), row("bad")])
    ok, again, bad = store.claim(100, 10, 60, "w")
    assert ok.id and again.id and bad.id
    store.mark_delivered(ok.id, {"status": "delivered", "provider_id": "msg-1"}, 105)
    store.mark_retry(again.id, 400, "HTTP 503")
    store.mark_dead(bad.id, "HTTP 400: 号码无效", 106)
    rows = {r.key: r for r in store.rows()}
    assert (rows["ok"].status, rows["ok"].delivered_at, rows["ok"].receipt) == \
        ("delivered", 105, {"status": "delivered", "provider_id": "msg-1"})
    assert (rows["again"].status, rows["again"].due_at, rows["again"].last_error,
            rows["again"].attempts) == ("pending", 400, "HTTP 503", 1)
    assert (rows["bad"].status, rows["bad"].last_error, rows["bad"].settled_at) == \
        ("dead", "HTTP 400: 号码无效", 106)
    assert store.claim(399, 10, 60, "w") == []
    assert [r.key for r in store.claim(400, 10, 60, "w")] == ["again"]


def test_a_late_mark_does_not_undo_a_newer_outcome(store: Store) -> None:
    """A slow dispatcher whose lease ran out cannot turn a row delivered by another back."""
    store.commit({}, {}, [row("k1")])
    (slow,) = store.claim(100, 10, 60, "slow")
    (fast,) = store.claim(160, 10, 60, "fast")
    assert slow.id == fast.id and fast.id is not None
    store.mark_delivered(fast.id, {"status": "delivered"}, 161)
    store.mark_retry(fast.id, 999, "timed out")
    store.mark_dead(fast.id, "gave up", 170)
    (after,) = store.rows()
    assert (after.status, after.delivered_at, after.last_error) == ("delivered", 161, "")


def test_release_gives_a_row_back_uncounted(store: Store) -> None:
    """A released row is pending again at its due time, its claim not counted."""
    store.commit({}, {}, [row("k1", due=100)])
    (leased,) = store.claim(100, 10, 60, "w")
    assert leased.id is not None
    store.release(leased.id)
    (back,) = store.rows()
    assert (back.status, back.due_at, back.attempts, back.leased_by) == \
        ("pending", 100, 0, None)


def _claim_all(url: str, worker: str, start: threading.Barrier, got: list[int]) -> None:
    db = open_store(url)
    try:
        start.wait()
        while batch := db.claim(1000, 7, 600, worker):
            got.extend(r.id for r in batch if r.id is not None)
    finally:
        db.close()


def test_concurrent_claims_never_overlap(store_url: str) -> None:
    """Four dispatchers claiming at once, each with its own connection, never share a row."""
    db = open_store(store_url)
    db.commit({}, {}, [row(f"k{i:03d}", due=i) for i in range(300)])
    expected = {r.id for r in db.rows()}
    db.close()
    start = threading.Barrier(4)
    got: list[list[int]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=_claim_all, args=(store_url, f"w{i}", start, got[i]))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in got for i in ids]
    assert len(every) == len(set(every)) == 300
    assert set(every) == expected


def test_postgres_claim_skips_rows_locked_by_another_transaction(pg_url: str) -> None:
    """On PostgreSQL a claim passes over a row another transaction holds instead of waiting."""
    url = fresh_pg_url(pg_url)
    db = open_store(url)
    db.commit({}, {}, [row("held", due=1), row("free", due=2)])
    with psycopg.connect(url) as other:  # not autocommit: the lock lasts until rollback
        other.execute("SELECT id FROM outbox WHERE key = 'held' FOR UPDATE")
        assert [r.key for r in db.claim(100, 10, 60, "w")] == ["free"]
        other.rollback()
    assert [r.key for r in db.claim(100, 10, 60, "w")] == ["held"]
    db.close()


# -- inspection and repair -------------------------------------------------------------------

def _dead(store: Store, *keys: str) -> list[int]:
    store.commit({}, {}, [row(k) for k in keys])
    ids = []
    for r in store.claim(100, 100, 60, "w"):
        assert r.id is not None
        store.mark_dead(r.id, "HTTP 500", 110)
        ids.append(r.id)
    return ids


def test_rows_filters_and_counts(store: Store) -> None:
    """rows filters by status, customer, ids and limit; counts lists every status."""
    store.commit({}, {}, [row("a", customer="c1"), row("b", customer="c2"),
                          row("c", customer="c2", status="holdout")])
    assert [r.key for r in store.rows("pending")] == ["a", "b"]
    assert [r.key for r in store.rows(customer_id="c2")] == ["b", "c"]
    assert [r.key for r in store.rows(limit=2)] == ["a", "b"]
    ids = [r.id for r in store.rows() if r.id is not None]
    assert [r.key for r in store.rows(ids=[ids[2], ids[0]])] == ["a", "c"]
    assert store.rows(ids=[]) == []
    assert store.counts() == dict.fromkeys(STATUSES, 0) | {"pending": 2, "holdout": 1}


def test_requeue_puts_dead_rows_back(store: Store) -> None:
    """requeue makes dead rows pending and due now with fresh attempts; others are untouched."""
    one, two = _dead(store, "d1", "d2")
    store.commit({}, {}, [row("p", due=500)])
    assert store.requeue([one], "dead", 300) == 1
    rows = {r.key: r for r in store.rows()}
    assert (rows["d1"].status, rows["d1"].due_at, rows["d1"].attempts) == ("pending", 300, 0)
    assert rows["d1"].last_error == "HTTP 500", "the last error is kept for context"
    assert rows["d2"].status == "dead"
    assert store.requeue(None, "dead", 301) == 1
    assert store.requeue(None, "dead", 302) == 0
    assert rows["p"].due_at == 500 and store.rows(ids=[two])[0].due_at == 301


def test_purge_deletes_settled_rows_only(store: Store) -> None:
    """purge deletes rows of one settled status, optionally only those settled before a time."""
    store.commit({}, {}, [row("old", status="cancelled", created=100),
                          row("new", status="cancelled", created=200), row("p")])
    assert store.purge("cancelled", 150) == 1
    assert [r.key for r in store.rows()] == ["new", "p"]
    assert store.purge("cancelled", None) == 1
    for status in ("pending", "leased"):
        with pytest.raises(ValueError, match="cannot purge"):
            store.purge(status, None)
    assert [r.key for r in store.rows()] == ["p"]


def test_reassign_pending_hands_rows_to_the_new_owner(store: Store) -> None:
    """A hand-over points pending rows at the new owner; a task for a named role stays put."""
    store.commit({}, {}, [row("t1", kind="task", channel="", assignee="staff-01"),
                          row("t2", kind="task", channel="", assignee="店长"),
                          row("s1"), row("done", status="cancelled"),
                          row("other", customer="c2")])
    assert store.reassign_pending("c1", "staff-02") == 3
    rows = {r.key: r.message for r in store.rows()}
    assert rows["t1"]["owner"] == "staff-02" and rows["t1"]["body"]["assignee"] == "staff-02"
    assert rows["t2"]["body"]["assignee"] == "店长"
    assert rows["s1"]["owner"] == "staff-02"
    assert rows["done"]["owner"] == rows["other"]["owner"] == "staff-01"


# -- opening ---------------------------------------------------------------------------------

def test_reopened_store_keeps_everything(store_url: str) -> None:
    """Closing and reopening a store gives back the same state, meta and rows."""
    db = open_store(store_url)
    db.commit({"王芳": b"\x01\x02"}, {"clock": "42", "offset": "1024"},
              [row("k1"), row("k2", status="holdout")])
    (leased,) = db.claim(100, 10, 60, "w")
    assert leased.id is not None
    db.mark_delivered(leased.id, {"status": "delivered", "detail": "已送达"}, 101)
    before = db.rows()
    db.close()
    again = open_store(store_url)
    assert dict(again.load_customers()) == {"王芳": b"\x01\x02"}
    assert (again.get_meta("clock"), again.get_meta("offset")) == ("42", "1024")
    assert again.rows() == before
    assert again.rows()[0].receipt == {"status": "delivered", "detail": "已送达"}
    again.close()


def test_newer_schema_is_refused(store_url: str) -> None:
    """A store written by a newer sopkit is refused with a message saying to upgrade."""
    open_store(store_url).close()
    raw = _raw(store_url)
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.close()
    with pytest.raises(UsageError, match=r"newer sopkit \(schema 99.*upgrade"):
        open_store(store_url)


def test_sqlite_file_of_another_application_is_refused(tmp_path: Path) -> None:
    """An SQLite database without sopkit's tables is left alone, and the error says why."""
    path = tmp_path / "crm.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE contacts (name TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(UsageError, match=r"not a sopkit store.*contacts"):
        open_store(str(path))
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all\n" * 100)
    with pytest.raises(UsageError, match="not a usable SQLite database"):
        open_store(str(text))
    assert text.read_text() == "not a database at all\n" * 100


def test_sqlite_is_wal_and_fully_synchronous(tmp_path: Path) -> None:
    """The SQLite store runs in WAL mode with synchronous=FULL (durable across power loss)."""
    db = SQLiteStore(tmp_path / "s.db")
    assert db._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db._db.execute("PRAGMA synchronous").fetchone() == (2,)  # 2 is FULL
    assert db._db.execute("PRAGMA busy_timeout").fetchone() == (10_000,)
    db.close()


def test_committed_rows_survive_a_killed_process(tmp_path: Path) -> None:
    """A process killed right after commit returns loses nothing it committed."""
    path = tmp_path / "crash.db"
    script = (
        "import os\nfrom sopkit._live.openstore import open_store\n"
        "from sopkit._live.store import OutboxRow\n"
        f"db = open_store({str(path)!r})\n"
        "db.commit({'c1': b'state'}, {'clock': '7'}, [OutboxRow(key='k', playbook='p', "
        "customer_id='c1', rule='r', kind='send', channel='sms', status='pending', due_at=1, "
        "created_at=1, message={'key': 'k'})])\n"
        "os._exit(9)  # no close, no checkpoint: as if killed\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert done.returncode == 9, done.stderr
    db = open_store(str(path))
    assert dict(db.load_customers()) == {"c1": b"state"} and db.get_meta("clock") == "7"
    assert [r.key for r in db.rows()] == ["k"]
    db.close()


def test_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths and sqlite:/// URLs open SQLite; other schemes are refused naming the forms."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for url in ("plain.db", "sqlite:///sub/rel.db", f"sqlite:///{tmp_path}/abs.db"):
        opened = open_store(url)
        assert isinstance(opened, SQLiteStore)
        opened.close()
    assert (tmp_path / "sub" / "rel.db").exists() and (tmp_path / "abs.db").exists()
    with pytest.raises(UsageError, match=r"unsupported scheme 'mysql'.*postgresql://"):
        open_store("mysql://u:secret@host/db")
    with pytest.raises(UsageError, match="three slashes"):
        open_store("sqlite://x.db")
    with pytest.raises(UsageError, match="does not exist"):
        open_store("no/such/dir/s.db")
    with pytest.raises(UsageError, match="empty"):
        open_store("  ")
    try:
        open_store("mysql://u:secret@host/db")
    except UsageError as exc:
        assert "secret" not in str(exc)


def test_postgres_url_forms(pg_url: str) -> None:
    """postgresql:// and postgres:// both open PostgreSQL; the store's url hides passwords."""
    url = fresh_pg_url(pg_url)
    for form in (url, url.replace("postgresql://", "postgres://", 1)):
        opened = open_store(form)
        assert isinstance(opened, PostgresStore)
        opened.close()
    with_password = url.replace("postgres@", "postgres:hunter2@", 1)
    opened = open_store(with_password)  # trust authentication ignores the password
    assert "hunter2" not in opened.url and "postgres:***@127.0.0.1" in opened.url
    opened.close()


def test_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    """A server that is not there gives a StoreError naming the URL, password hidden."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError, match="cannot connect") as caught:
        open_store(f"postgresql://u:hunter2@127.0.0.1:{port}/db")
    assert "hunter2" not in str(caught.value) and "u:***@" in str(caught.value)


def test_sqlite_write_lock_held_too_long_is_a_store_error(tmp_path: Path) -> None:
    """When another writer holds the SQLite file past the busy timeout, the error says so."""
    path = tmp_path / "busy.db"
    db = SQLiteStore(path, busy_timeout_ms=50)
    db.commit({}, {}, [row("k1")])
    (leased,) = db.claim(100, 10, 60, "w")
    assert leased.id is not None
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="database is locked"):
        db.claim(200, 10, 60, "w")
    with pytest.raises(StoreError, match="database is locked"):
        db.mark_delivered(leased.id, {"status": "delivered"}, 101)
    other.execute("ROLLBACK")
    other.close()
    db.mark_delivered(leased.id, {"status": "delivered"}, 101)
    assert db.counts()["delivered"] == 1
    db.close()
