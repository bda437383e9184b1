"""`sopkit outbox list|retry|purge`: output for people and machines, masking, exit codes."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from test_store import row
from typer.core import TyperOption
from typer.testing import CliRunner

from sopkit._cli.app import app
from sopkit._live.openstore import open_store
from sopkit._live.store import STATUSES, Store

DOCS = Path(__file__).resolve().parent.parent / "docs"
PHONE = "13812345678"


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["outbox", *args], env=env)


def _seed(url: str) -> dict[str, int]:
    """A store with one row in most statuses; returns the ids by key."""
    db = open_store(url)
    db.commit({}, {}, [row("p1", due=100, customer=PHONE), row("d1", due=100),
                       row("ok", due=100), row("s1", status="suppressed", created=100),
                       row("h1", status="holdout", customer="c2", created=300)])
    for claimed in db.claim(100, 10, 60, "w"):
        assert claimed.id is not None
        if claimed.key == "d1":
            db.mark_dead(claimed.id, f"HTTP 400: bad number {PHONE}", 110)
        elif claimed.key == "ok":
            db.mark_delivered(claimed.id, {"status": "delivered"}, 120)
        else:
            db.mark_retry(claimed.id, 500, "HTTP 503")
    ids = {r.key: r.id for r in db.rows() if r.id is not None}
    db.close()
    return ids


def _store(url: str) -> Store:
    return open_store(url)


def test_list_table_shows_rows_and_counts_masked(store_url: str) -> None:
    """The table lists each row with its error and the counts per status, phones masked."""
    _seed(store_url)
    result = _run("list", "--store", store_url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "138****5678" in out and PHONE not in out
    assert "HTTP 400: bad" in out and "HTTP 503" in out
    assert "1970-01-01 00:08:20" in out  # p1 is due again at 500
    counts = dict(re.findall(r"│ (\w+) +│ +(\d+) │", out.split("Rows per status")[1]))
    assert counts == {s: str(n) for s, n in zip(
        STATUSES, (1, 0, 1, 1, 1, 1, 0, 0, 0), strict=True)}


def test_list_unmasked_shows_personal_data(store_url: str) -> None:
    """--unmasked shows phone numbers in full."""
    _seed(store_url)
    result = _run("list", "--store", store_url, "--unmasked")
    assert result.exit_code == 0 and PHONE in result.stdout


def test_list_jsonl_for_machines(store_url: str) -> None:
    """--output jsonl prints one masked JSON object per row; the counts go to stderr."""
    ids = _seed(store_url)
    result = _run("list", "--store", store_url, "--output", "jsonl", "--status", "dead")
    assert result.exit_code == 0
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    assert (record["id"], record["key"], record["status"], record["attempts"]) == \
        (ids["d1"], "d1", "dead", 1)
    assert record["last_error"] == "HTTP 400: bad number 138****5678"
    assert record["message"]["contact"]["phone"] == "138****5678"
    assert record["message"]["body"]["message"] == "您好 d1"
    assert "dead 1" in result.stderr and "pending 1" in result.stderr
    unmasked = _run("list", "--store", store_url, "--output", "jsonl", "--unmasked",
                    "--customer", PHONE)
    (mine,) = [json.loads(x) for x in unmasked.stdout.splitlines()]
    assert mine["customer_id"] == PHONE and mine["key"] == "p1"


def test_list_limit_says_what_it_left_out(tmp_path: Path) -> None:
    """--limit shows the first rows and says more exist; --limit 0 shows them all."""
    url = str(tmp_path / "s.db")
    db = open_store(url)
    db.commit({}, {}, [row(f"k{i}") for i in range(5)])
    db.close()
    short = _run("list", "--store", url, "--limit", "2")
    assert short.exit_code == 0
    assert "only the first 2 matching rows are shown" in short.stdout
    assert "k0" not in short.stdout  # the table shows ids, not keys
    jsonl = _run("list", "--store", url, "--output", "jsonl", "--limit", "2")
    assert [json.loads(x)["key"] for x in jsonl.stdout.splitlines()] == ["k0", "k1"]
    every = _run("list", "--store", url, "--output", "jsonl")
    assert len(every.stdout.splitlines()) == 5
    full = _run("list", "--store", url, "--limit", "0")
    assert "only the first" not in full.stdout


def test_list_unknown_status_is_a_usage_error(tmp_path: Path) -> None:
    """A misspelt --status exits 2 and suggests the right one."""
    result = _run("list", "--store", str(tmp_path / "s.db"), "--status", "daed")
    assert result.exit_code == 2
    assert "unknown status 'daed'; did you mean 'dead'?" in result.stderr


def test_store_from_the_environment(tmp_path: Path) -> None:
    """$SOPKIT_STORE stands in for --store; without either, exit 2."""
    url = str(tmp_path / "env.db")
    _seed(url)
    assert _run("list", env={"SOPKIT_STORE": url}).exit_code == 0
    missing = _run("list", env={"SOPKIT_STORE": ""})
    assert missing.exit_code == 2


def test_retry_requeues_every_dead_row(store_url: str) -> None:
    """retry without --id puts every dead row back to pending, due now, attempts reset."""
    ids = _seed(store_url)
    before = int(time.time())
    result = _run("retry", "--store", store_url)
    after = int(time.time())
    assert result.exit_code == 0 and "requeued 1 dead row:" in result.stdout
    db = _store(store_url)
    (back,) = db.rows(ids=[ids["d1"]])
    assert back.status == "pending" and back.attempts == 0
    assert before <= back.due_at <= after
    db.close()
    assert "no dead rows to retry" in _run("retry", "--store", store_url).stdout


def test_retry_by_id_refuses_rows_that_are_not_dead(store_url: str) -> None:
    """retry --id naming a delivered or missing row exits 2 and changes nothing."""
    ids = _seed(store_url)
    result = _run("retry", "--store", store_url, "--id", str(ids["d1"]), "--id",
                  str(ids["ok"]), "--id", "999")
    assert result.exit_code == 2
    assert f"row {ids['ok']} is delivered, not dead" in result.stderr
    assert "row 999 does not exist" in result.stderr
    assert "nothing was requeued" in result.stderr
    db = _store(store_url)
    assert db.counts()["dead"] == 1
    db.close()
    ok = _run("retry", "--store", store_url, "--id", str(ids["d1"]))
    assert ok.exit_code == 0 and "requeued 1" in ok.stdout


def test_purge_deletes_and_counts(store_url: str) -> None:
    """purge deletes rows in a settled status (settled before --before) and says how many."""
    _seed(store_url)
    result = _run("purge", "--store", store_url, "--status", "holdout", "--before",
                  "1970-01-01T00:04:00")
    assert (result.exit_code, result.stdout.strip()) == (
        0, "purged 0 holdout rows settled before 1970-01-01T00:04:00Z")
    result = _run("purge", "--store", store_url, "--status", "holdout", "--before",
                  "1970-01-01T08:06:00+08:00")
    assert result.stdout.strip() == "purged 1 holdout row settled before 1970-01-01T00:06:00Z"
    result = _run("purge", "--store", store_url, "--status", "delivered")
    assert result.stdout.strip() == "purged 1 delivered row"
    db = _store(store_url)
    assert db.counts()["delivered"] == db.counts()["holdout"] == 0
    assert db.counts()["dead"] == 1
    db.close()


@pytest.mark.parametrize("status", ["pending", "leased"])
def test_purge_refuses_unsent_rows(tmp_path: Path, status: str) -> None:
    """purge never deletes pending or leased rows: exit 2 with the reason, nothing deleted."""
    url = str(tmp_path / "s.db")
    _seed(url)
    result = _run("purge", "--store", url, "--status", status)
    assert result.exit_code == 2
    assert f"refusing to purge {status} rows: they have not been delivered yet" in \
        result.stderr
    db = _store(url)
    assert db.counts()["pending"] == 1
    db.close()


def test_purge_bad_date_and_status(tmp_path: Path) -> None:
    """A --before that is not ISO 8601, or a status that does not exist, exits 2."""
    url = str(tmp_path / "s.db")
    bad_date = _run("purge", "--store", url, "--status", "dead", "--before", "yesterday")
    assert bad_date.exit_code == 2 and "not an ISO 8601 date" in bad_date.stderr
    bad_status = _run("purge", "--store", url, "--status", "sent")
    assert bad_status.exit_code == 2 and "unknown status 'sent'" in bad_status.stderr


def test_store_errors_exit_2_with_the_reason(tmp_path: Path) -> None:
    """An unsupported URL or a store from a newer sopkit exits 2 with a clear message."""
    result = _run("list", "--store", "mysql://localhost/crm")
    assert result.exit_code == 2 and "unsupported scheme 'mysql'" in result.stderr
    path = tmp_path / "new.db"
    open_store(str(path)).close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    result = _run("purge", "--store", str(path), "--status", "dead")
    assert result.exit_code == 2 and "written by a newer sopkit" in result.stderr


def test_outbox_commands_are_documented() -> None:
    """docs/cli.md has a section for each `sopkit outbox` command naming all its options."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    group: Any = typer.main.get_command(app)
    outbox = group.commands["outbox"]
    assert outbox.commands, "the outbox group has commands"
    for name, command in outbox.commands.items():
        heading = f"### `sopkit outbox {name}`"
        assert heading in text, heading
        section = text.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
        for param in command.params:
            if isinstance(param, TyperOption):
                for flag in (*param.opts, *param.secondary_opts):
                    if flag != "--help":
                        assert f"`{flag}" in section, f"outbox {name} {flag}"
