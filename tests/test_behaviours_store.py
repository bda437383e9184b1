"""Store and outbox behaviours a user notices that the older tests left unchecked (issue 14).

Tests taking `store_url` run twice: on a real SQLite file and on a real PostgreSQL server
(conftest.py); the live-run ones drive `sopkit run` against a real HTTP receiver.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_receiver import Receiver
from live_helpers import ENV, shop_history, shop_playbook
from test_store import row
from typer.testing import CliRunner

from sopkit._cli.app import app
from sopkit._errors import UsageError
from sopkit._live.openstore import open_store
from sopkit._live.store import STATUSES, Store

END = "2025-03-01T12:00:00"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open, empty store (SQLite file or PostgreSQL schema), closed after the test."""
    opened = open_store(store_url)
    yield opened
    opened.close()


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args, env=ENV)


def _one_row_per_status(store: Store) -> None:
    """Customer c1 with one outbox row in each status, all owned by staff-01."""
    store.commit({}, {}, [row("leased", kind="task", channel="", assignee="staff-01"),
                          row("delivered", kind="task", channel="", assignee="staff-01"),
                          row("dead", kind="task", channel="", assignee="staff-01"),
                          row("pending", kind="task", channel="", assignee="staff-01", due=900),
                          *(row(s, status=s, kind="task", channel="", assignee="staff-01")
                            for s in ("suppressed", "holdout", "cancelled", "backfilled",
                                      "expired"))])
    claimed = {r.key: r.id for r in store.claim(100, 3, 60, "w")}
    assert sorted(claimed) == ["dead", "delivered", "leased"]
    store.mark_delivered(claimed["delivered"] or 0, {"status": "delivered"}, 110)
    store.mark_dead(claimed["dead"] or 0, "HTTP 400", 110)
    assert {r.key: r.status for r in store.rows()} == {s: s for s in STATUSES}


# ---- hand-over -------------------------------------------------------------------------------

def test_hand_over_rewrites_pending_rows_only(store: Store) -> None:
    """A hand-over moves only the not-yet-claimed task: delivered, dead and leased ones keep
    the old owner, so the history says who really handled them."""
    _one_row_per_status(store)
    assert store.reassign_pending("c1", "staff-02") == 1
    owners = {r.key: (r.message["owner"], r.message["body"]["assignee"]) for r in store.rows()}
    assert owners.pop("pending") == ("staff-02", "staff-02")
    assert set(owners.values()) == {("staff-01", "staff-01")}
    assert len(owners) == len(STATUSES) - 1


def test_hand_over_in_a_commit_rewrites_pending_rows_only(store: Store) -> None:
    """A departure committed with the run's batch rewrites pending rows, never delivered ones."""
    _one_row_per_status(store)
    store.commit({}, {}, [], reassign={"c1": "staff-02"})
    moved = sorted(r.key for r in store.rows() if r.message["owner"] == "staff-02")
    assert moved == ["pending"]


# ---- reading a store back ---------------------------------------------------------------------

def test_every_stored_customer_is_read_back_once(store: Store) -> None:
    """Loading 2,500 customers (three pages) yields each exactly once, in id order."""
    states = {f"c{i:05d}": f"state {i}".encode() for i in range(2500)}
    store.commit(states, {}, [])
    loaded = list(store.load_customers())
    assert [customer for customer, _ in loaded] == sorted(states)
    assert dict(loaded) == states


def test_settled_at_is_set_for_rows_created_final_and_empty_for_pending(store: Store) -> None:
    """`settled_at` (shown by `outbox list --output jsonl`) is the creation time of a row made
    suppressed, held out or cancelled, and empty while a row is pending."""
    store.commit({}, {}, [row("p", created=50), row("s", status="suppressed", created=60),
                          row("h", status="holdout", created=70),
                          row("x", status="cancelled", created=80)])
    assert {r.key: r.settled_at for r in store.rows()} == {"p": None, "s": 60, "h": 70, "x": 80}


def test_a_meta_table_without_a_schema_version_is_refused(store_url: str) -> None:
    """A store whose meta table lost its schema version is refused as not a sopkit store."""
    open_store(store_url).close()
    if store_url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as raw:
            raw.execute("DELETE FROM meta WHERE key = 'schema_version'")
    else:
        with sqlite3.connect(store_url) as raw:
            raw.execute("DELETE FROM meta WHERE key = 'schema_version'")
    with pytest.raises(UsageError, match="has a meta table but no sopkit schema version; it "
                       r"is not a sopkit store \(name another file or database\)"):
        open_store(store_url)
    result = _invoke(["outbox", "list", "--store", store_url])
    assert result.exit_code == 2 and "no sopkit schema version" in result.stderr


# ---- new outbox rows -------------------------------------------------------------------------

def test_a_replayed_batch_counts_no_new_rows(store: Store) -> None:
    """Committing rows already in the outbox (a replay after a restart) counts 0 new rows."""
    batch = [row("k1"), row("k2", status="suppressed"), row("k3", kind="task", channel="")]
    assert store.commit({}, {}, batch) == 3
    assert store.commit({}, {}, batch) == 0
    assert store.commit({}, {}, []) == 0
    assert store.commit({}, {}, [*batch, row("k4")]) == 1
    assert len(store.rows()) == 4


def test_postgresql_restart_reports_only_the_new_outbox_rows(tmp_path: Path, pg_url: str) -> None:
    """`sopkit run` on PostgreSQL, restarted on a grown file, reports the rows it added, and a
    restart with nothing new reports 0 (the "new outbox rows" figure a person reads)."""
    from conftest import fresh_pg_url

    url = fresh_pg_url(pg_url)
    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        events, profiles = shop_history(tmp_path, customers=10)
        lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
        growing = tmp_path / "growing.jsonl"
        growing.write_text("".join(lines[:8]), encoding="utf-8")
        stats = []
        for clock in ("2025-01-10T00:00:00", END, END):
            if clock == END:
                growing.write_text("".join(lines), encoding="utf-8")
            result = _invoke(["run", str(playbook), "--store", url, "--events", str(growing),
                              "--profiles", str(profiles), "--once", "--clock", clock,
                              "--lateness", "0s", "--engine", "native", "--quarantine",
                              str(tmp_path / "q.jsonl"), "--output", "jsonl"])
            assert result.exit_code == 0, result.output
            stats.append(json.loads(result.output.strip().splitlines()[-1]))
            db = open_store(url)
            stats[-1]["rows_after"] = len(db.rows())
            db.close()
        table = _invoke(["run", str(playbook), "--store", url, "--events", str(growing),
                         "--once", "--clock", END, "--lateness", "0s", "--engine", "native",
                         "--quarantine", str(tmp_path / "q.jsonl")])
        assert table.exit_code == 0, table.output
    first, second, third = stats
    assert first["rows_new"] == first["rows_after"] > 0
    assert second["rows_new"] == second["rows_after"] - first["rows_after"] > 0
    assert (third["rows_new"], third["rows_after"]) == (0, second["rows_after"])
    assert third["events_skipped"] == len(lines)
    assert f"{len(lines)} already applied earlier" in table.stdout
    assert "new outbox rows: 0" in table.stdout


# ---- outbox purge --before -------------------------------------------------------------------

def test_purge_before_keeps_a_row_settled_at_that_very_second(store_url: str) -> None:
    """--before T purges rows settled before T; one settled exactly at T stays until later."""
    db = open_store(store_url)
    db.commit({}, {}, [row("at", status="holdout", created=1717200000),   # 2024-06-01T00:00Z
                       row("just_before", status="holdout", created=1717199999)])
    db.close()
    purge = ["outbox", "purge", "--store", store_url, "--status", "holdout", "--before"]
    first = _invoke([*purge, "2024-06-01"])
    assert (first.exit_code, first.stdout.strip()) == (
        0, "purged 1 holdout row settled before 2024-06-01T00:00:00Z")
    second = _invoke([*purge, "2024-06-01T08:00:00+08:00"])  # the same instant
    assert second.stdout.strip() == "purged 0 holdout rows settled before 2024-06-01T00:00:00Z"
    db = open_store(store_url)
    assert [r.key for r in db.rows()] == ["at"]
    db.close()
    third = _invoke([*purge, "2024-06-01T00:00:01Z"])
    assert third.stdout.strip() == "purged 1 holdout row settled before 2024-06-01T00:00:01Z"


def test_purge_before_goes_by_delivery_time_not_creation(store_url: str) -> None:
    """A row created long ago but delivered recently is not purged by an earlier --before."""
    db = open_store(store_url)
    db.commit({}, {}, [row("late", created=100, due=100)])
    (claimed,) = db.claim(100, 1, 60, "w")
    db.mark_delivered(claimed.id or 0, {"status": "delivered"}, 1717200000)
    db.close()
    purge = ["outbox", "purge", "--store", store_url, "--status", "delivered", "--before"]
    assert _invoke([*purge, "2024-06-01"]).stdout.strip().startswith("purged 0 delivered rows")
    assert _invoke([*purge, "2024-06-02"]).stdout.strip().startswith("purged 1 delivered row")


# ---- PostgreSQL connection errors --------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_postgresql_says_why_on_one_line_exit_1() -> None:
    """`outbox list` on a server that is not there: exit 1, one line naming the masked URL,
    "cannot connect" and libpq's reason; never the password, never a traceback."""
    port = _closed_port()
    result = _invoke(["outbox", "list", "--store", f"postgresql://u:hunter2@127.0.0.1:{port}/db"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: store 'postgresql://u:***@127.0.0.1:{port}/db': "
                               "cannot connect: ")
    assert "Connection refused" in lines[0] and "\t" not in lines[0]
    assert "hunter2" not in result.output and "Traceback" not in result.output


def test_a_url_without_a_password_is_shown_as_given() -> None:
    """Without a password nothing is masked: the error names the URL exactly as typed."""
    port = _closed_port()
    url = f"postgresql://sopkit@127.0.0.1:{port}/db"
    result = _invoke(["outbox", "list", "--store", url])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: store '{url}': cannot connect: ")


def test_malformed_postgresql_url_is_a_usage_error() -> None:
    """A PostgreSQL URL with an unknown parameter is a usage error (exit 2) saying so."""
    result = _invoke(["outbox", "list", "--store",
                      f"postgresql://u:hunter2@127.0.0.1:{_closed_port()}/db?bogus=1"])
    assert result.exit_code == 2
    assert "bad PostgreSQL URL" in result.stderr and '"bogus"' in result.stderr
    assert "hunter2" not in result.output


def test_postgresql_url_with_a_bad_port_is_a_usage_error() -> None:
    """A PostgreSQL URL whose port is not a number is a usage error (exit 2), no traceback."""
    result = _invoke(["outbox", "list", "--store", "postgresql://u:hunter2@127.0.0.1:x/db"])
    assert result.exit_code == 2
    assert "bad PostgreSQL URL" in result.stderr


def test_a_bad_port_url_still_hides_the_password() -> None:
    """The error about a non-numeric port names the URL with the password masked (`u:***@`),
    never the password itself."""
    result = _invoke(["outbox", "list", "--store", "postgresql://u:hunter2@127.0.0.1:x/db"])
    assert result.exit_code == 2
    assert "store 'postgresql://u:***@127.0.0.1:x/db': bad PostgreSQL URL" in result.stderr
    assert "hunter2" not in result.output


# ---- schema version and durability (mutation sample, seed 21) --------------------------------

def test_a_store_of_the_next_schema_is_refused_naming_both_versions(store_url: str) -> None:
    """A store at schema 4 (a newer sopkit's) is refused: this sopkit reads schema 3."""
    from test_store import _raw

    open_store(store_url).close()
    raw = _raw(store_url)
    raw.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    raw.close()
    with pytest.raises(UsageError, match=r"newer sopkit \(schema 4; this sopkit reads schema 3 "
                                         r"and older\)"):
        open_store(store_url)


def test_an_sqlite_store_commits_with_synchronous_full(tmp_path: Path) -> None:
    """The store's connection waits for the disk on every commit (synchronous=FULL, as
    docs/live.md promises), so a power loss cannot undo a "delivered" mark."""
    store = open_store(str(tmp_path / "s.db"))
    try:
        assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # type: ignore[attr-defined]  # the SQLite store's own connection: the pragma is per connection
    finally:
        store.close()


def test_rows_due_at_one_instant_are_claimed_in_the_order_they_were_decided(
        store: Store) -> None:
    """A dispatcher's batch lists rows due at the same second by id (the order the run
    decided them), also after one of them went back to pending for a retry."""
    store.commit({}, {}, [row(f"r{i}", due=100) for i in range(1, 5)])
    (first,) = store.claim(100, 1, 60, "w")
    store.mark_retry(first.id or 0, 100, "HTTP 503")  # r1 pending again, due as before
    (second,) = store.claim(100, 1, 60, "w")
    store.mark_retry(second.id or 0, 100, "HTTP 503")
    assert [r.key for r in store.claim(100, 10, 60, "w")] == ["r1", "r2", "r3", "r4"]


def test_a_postgresql_url_without_psycopg_says_what_to_install() -> None:
    """Where psycopg is not installed, a PostgreSQL --store exits 2 and names the extra to
    install (`pip install 'sopkit[postgresql]'`), without a traceback."""
    import subprocess
    import sys

    code = ("import runpy, sys\n"
            "sys.modules['psycopg'] = None  # as if it were not installed\n"
            "sys.argv = ['sopkit', 'outbox', 'list', '--store', "
            "'postgresql://u@127.0.0.1:1/db']\n"
            "runpy.run_module('sopkit', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parent.parent, check=False)
    assert done.returncode == 2
    assert "a PostgreSQL store needs psycopg: pip install 'sopkit[postgresql]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_one_letter_prefix_is_a_drive_not_a_scheme(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`--store c:live.db` is a path (a Windows drive letter), opened as an SQLite file, not
    refused as an unsupported scheme 'c'."""
    monkeypatch.chdir(tmp_path)
    store = open_store("c:live.db")
    try:
        assert store.get_meta("schema_version") == "3"
    finally:
        store.close()
    assert (tmp_path / "c:live.db").is_file()


def test_stores_in_two_postgresql_schemas_each_run_their_own_loop(pg_url: str) -> None:
    """Two playbooks' stores sharing one database (a schema each) hold their event-loop locks
    at the same time: one run never blocks the other."""
    from conftest import fresh_pg_url

    first, second = open_store(fresh_pg_url(pg_url)), open_store(fresh_pg_url(pg_url))
    try:
        first.acquire_loop_lock("retail", 1_000)
        second.acquire_loop_lock("vip", 1_000)  # no LoopLocked: another schema, another lock
    finally:
        first.close()
        second.close()
