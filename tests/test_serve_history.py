"""`sopkit serve --history-keep`: kept history older than the horizon is deleted, and the
timeline says from when it is whole; `sopkit explain --store` explains from the same history."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from live_helpers import ENV, shop_playbook
from serve_helpers import Served
from test_serve_operate import ADMIN, CLOCK, EVENTS, INGEST, KEYS, PHONE
from typer.testing import CliRunner

from sopkit._cli.app import app
from sopkit._live.inbox import HISTORY, HISTORY_FROM, Entry, Inbox, Row
from sopkit._live.openstore import open_store


def _time(row: Row) -> int | None:
    return int(json.loads(row.record)["t"])


def test_expiring_deletes_old_applied_rows_and_keeps_the_rest(store_url: str) -> None:
    """Only applied rows before the horizon go, oldest first, a batch at a time; the store
    then says its history is whole only from the horizon on (SQLite and PostgreSQL)."""
    store = open_store(store_url, create=True)
    store.commit({}, {HISTORY: "yes"}, [])
    inbox = Inbox(store_url)
    try:
        last = inbox.append([Entry("sopkit", {"t": t}) for t in (10, 20, 95, 30, 40)],
                            now=0, after=0, bound=100)
        assert inbox.expire(last - 1, 50, _time, limit=1) == (1, None)  # one batch of one
        assert store.get_meta(HISTORY) == "no" and store.get_meta(HISTORY_FROM) == "50"
        assert inbox.expire(last - 1, 50, _time, limit=10) == (1, 95)  # stops at 95
        kept = [json.loads(r.record)["t"] for r in inbox.read(0, 10)]
        assert kept == [95, 30, 40]  # 30 follows a newer record; 40 is not applied yet
        assert inbox.expire(last - 1, 50, _time, limit=10) == (0, 95)  # nothing more
        assert store.get_meta(HISTORY_FROM) == "50"
    finally:
        inbox.close()
        store.close()


def test_a_pruned_timeline_says_so_and_explain_store_shows_the_same(
        tmp_path: Path, store_url: str) -> None:
    """With --history-keep 2d the records before the clock minus 2 days are deleted: the
    timeline says its history is whole from then on, and `explain --store` prints its
    entries (and says the history is partial); serve warned of the longer 30d window
    (SQLite and PostgreSQL)."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    playbook.write_text(playbook.read_text(encoding="utf-8").replace(
        "[metrics]\n", '[metrics]\nrecent = { kind = "count", event = "purchase", '
        'window = "30d" }\n'), encoding="utf-8")
    store, jail = store_url, tmp_path / "q.jsonl"
    with Served(playbook, store, "--lateness", "30d", "--history-keep", "2d", clock=CLOCK,
                env=KEYS, quarantine=jail) as server:
        accepted = server.post("/v1/events", EVENTS,
                               headers={"Authorization": f"Bearer {INGEST}"})
        server.applied(accepted.json()["last_seq"])
        found: dict[str, object] = {}
        for _ in range(200):  # polling a real server until its loop has pruned, bounded
            found = httpx.get(f"{server.url}/v1/customers/{PHONE}/timeline?unmasked=true",
                              headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()
            if found.get("history_complete") is False:
                break
        assert found.get("history_complete") is False, found
        assert str(found["history_from"]).startswith("2025-01-03T00:00:00")
        entries = found["entries"]
        assert isinstance(entries, list)
        assert [e["time"][:10] for e in entries if e["kind"] == "event"] == \
            ["2025-01-03"]  # the purchase of 01-02 is gone, the one of 01-03 is kept
        explained = CliRunner().invoke(app, ["explain", str(playbook), "--store", str(store),
                                             "--customer", PHONE, "--output", "jsonl",
                                             "--unmasked", "--quarantine", str(jail)],
                                       env=ENV)
        assert explained.exit_code == 0, explained.output
        assert [json.loads(line) for line in explained.stdout.splitlines()] == entries
        assert "2025-01-03" in explained.stderr and "--history-keep" in explained.stderr
        code, err = server.stop()
        assert code == 0, err
        assert "--history-keep 2d is shorter than the playbook's longest window" in err
    db = open_store(str(store))
    try:
        assert db.get_meta(HISTORY) == "no"
    finally:
        db.close()


def test_explain_store_without_kept_history_tells_how_to_keep_it(tmp_path: Path) -> None:
    """A store no `serve --history` kept records in: exit 2, naming the option."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    store = tmp_path / "live.db"
    open_store(str(store), create=True).close()
    explained = CliRunner().invoke(app, ["explain", str(playbook), "--store", str(store),
                                         "--customer", PHONE], env=ENV)
    assert explained.exit_code == 2
    assert "sopkit serve --history" in explained.output
    neither = CliRunner().invoke(app, ["explain", str(playbook), "--customer", PHONE],
                                 env=ENV)
    assert neither.exit_code == 2 and "--events" in neither.output


def test_a_bad_history_keep_is_a_usage_error(tmp_path: Path) -> None:
    """`--history-keep` reads durations as `--max-future` does: a bad one exits 2."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    ran = CliRunner().invoke(app, ["serve", str(playbook), "--store",
                                   str(tmp_path / "s.db"), "--history-keep", "5x"], env=ENV)
    assert ran.exit_code == 2 and "--history-keep" in ran.output
