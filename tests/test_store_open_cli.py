"""Commands that read or repair a store never create one, and follow the store's clock.

Only `sopkit run` creates a store. `dry-run`, `outbox ...`, `handover status` and
`campaign results` on a path that is not a store exit 2 and leave the path as it was.
A store run on a replay clock (`run --clock`) keeps it: `dry-run` and `outbox retry` use it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import fresh_pg_url
from live_helpers import ENV, shop_history, shop_playbook
from typer.testing import CliRunner

from sopkit._cli.app import app
from sopkit._lang.clock import Calendar
from sopkit._live.openstore import open_store

NOWHERE = "http://127.0.0.1:9/hook"
CLOCK = "2025-02-14T10:00:00"


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args, env=ENV)


def _readers(playbook: Path, store: str) -> list[list[str]]:
    return [["dry-run", str(playbook), "--store", store],
            ["outbox", "list", "--store", store],
            ["outbox", "retry", "--store", store],
            ["outbox", "purge", "--store", store, "--status", "dead"],
            ["handover", "status", str(playbook), "--store", store],
            ["campaign", "results", str(playbook), "--store", store, "--offline"]]


def test_a_missing_path_is_exit_2_and_no_file_appears(tmp_path: Path) -> None:
    """Every reading command on a path that does not exist exits 2 and creates nothing."""
    playbook = shop_playbook(tmp_path, NOWHERE)
    store = tmp_path / "typo.db"
    for args in _readers(playbook, str(store)):
        result = _invoke(args)
        assert result.exit_code == 2, (args, result.output)
        assert f"no store at '{store}'" in result.stderr and "sopkit run` creates" in \
            result.stderr
        assert not list(tmp_path.glob("typo.db*")), args


def test_a_file_that_is_not_a_store_is_left_as_it_was(tmp_path: Path) -> None:
    """An empty file or another application's SQLite database: exit 2, the bytes unchanged
    (not even switched to WAL)."""
    playbook = shop_playbook(tmp_path, NOWHERE)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    crm = tmp_path / "crm.db"
    raw = sqlite3.connect(crm)
    raw.execute("CREATE TABLE contacts (name TEXT)")
    raw.commit()
    raw.close()
    before = {p: p.read_bytes() for p in (empty, crm)}
    for path, says in ((empty, "not a sopkit store (an empty database)"),
                       (crm, "not a sopkit store (it has tables contacts)")):
        for args in _readers(playbook, str(path)):
            result = _invoke(args)
            assert result.exit_code == 2 and says in result.stderr, (args, result.output)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.glob("*.db*")) == ["crm.db", "empty.db"]


def test_an_empty_postgres_schema_stays_empty(tmp_path: Path, pg_url: str) -> None:
    """On PostgreSQL a schema without sopkit's tables: exit 2, no table created."""
    playbook = shop_playbook(tmp_path, NOWHERE)
    url = fresh_pg_url(pg_url)
    for args in _readers(playbook, url):
        result = _invoke(args)
        assert result.exit_code == 2 and "is not a sopkit store" in result.stderr, args
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM information_schema.tables "
                             "WHERE table_schema = current_schema()").fetchone()
    assert found == (0,)


def test_run_still_creates_a_new_store(tmp_path: Path) -> None:
    """`run` on a new path creates the store (and then the readers accept it)."""
    playbook = shop_playbook(tmp_path, NOWHERE)
    events, profiles = shop_history(tmp_path, customers=5)
    store = tmp_path / "new.db"
    result = _invoke(["run", str(playbook), "--store", str(store), "--events", str(events),
                      "--profiles", str(profiles), "--once", "--clock", CLOCK,
                      "--engine", "native"])
    assert result.exit_code == 0, result.output
    assert _invoke(["outbox", "list", "--store", str(store)]).exit_code == 0


@pytest.fixture
def replayed(tmp_path: Path) -> tuple[Path, Path]:
    """A store run once on the replay clock CLOCK (its webhook unreachable)."""
    playbook = shop_playbook(tmp_path, NOWHERE)
    events, profiles = shop_history(tmp_path, customers=20)
    store = tmp_path / "replay.db"
    result = _invoke(["run", str(playbook), "--store", str(store), "--events", str(events),
                      "--profiles", str(profiles), "--once", "--clock", CLOCK,
                      "--lateness", "0s", "--engine", "native", "--send-from", "2000-01-01"])
    assert result.exit_code == 0, result.output
    return playbook, store


def test_dry_run_defaults_to_the_stores_replay_clock(replayed: tuple[Path, Path]) -> None:
    """Without --at, dry-run of a replayed store looks at the replay clock, and says so."""
    playbook, store = replayed
    default = _invoke(["dry-run", str(playbook), "--store", str(store), "--engine", "native",
                       "--output", "jsonl"])
    explicit = _invoke(["dry-run", str(playbook), "--store", str(store), "--engine",
                        "native", "--output", "jsonl", "--at", CLOCK])
    assert default.exit_code == explicit.exit_code
    assert default.stdout == explicit.stdout
    assert "replay clock (`run --clock`): showing 2025-02-14T10:00:00+08:00" in default.stderr
    assert "replay clock" not in explicit.stderr


def test_outbox_retry_makes_rows_due_at_the_replay_clock(replayed: tuple[Path, Path]) -> None:
    """A dead row retried in a replayed store is due at the replay clock, not the wall clock."""
    _, store = replayed
    db = open_store(str(store))
    at = Calendar("Asia/Shanghai").parse(CLOCK)
    (claimed,) = db.claim(at + 30 * 86400, 1, 60, "test")  # past any retry back-off
    assert claimed.id is not None
    db.mark_dead(claimed.id, "HTTP 400", at)
    db.close()
    result = _invoke(["outbox", "retry", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "due at the store's replay clock 2025-02-14T02:00:00Z" in result.stdout
    db = open_store(str(store), create=False)
    (row,) = db.rows(ids=[claimed.id])
    db.close()
    assert (row.status, row.due_at, row.attempts) == ("pending", at, 0)


def test_a_run_on_the_system_clock_forgets_the_replay_clock(
        replayed: tuple[Path, Path], tmp_path: Path) -> None:
    """After a `run` without --clock, dry-run goes back to the system clock."""
    playbook, store = replayed
    result = _invoke(["run", str(playbook), "--store", str(store), "--once", "--engine",
                      "native", "--lateness", "0s"])
    assert result.exit_code == 0, result.output
    dry = _invoke(["dry-run", str(playbook), "--store", str(store), "--engine", "native"])
    assert "replay clock" not in dry.stderr
