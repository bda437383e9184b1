"""The store (sopkit/_live/store.py), seed-23 sample: what a host embedding the store notices."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from test_store import row

import sopkit
from sopkit.channels import MemoryChannel


def test_a_store_opened_in_one_thread_is_dispatched_from_another(tmp_path: Path) -> None:
    """A host opens the SQLite store at start-up and runs the dispatcher in a worker thread:
    the row is delivered and read back as such, with no error about threads."""
    store = sopkit.open_store(str(tmp_path / "outbox.db"))
    sms = MemoryChannel("sms")
    store.commit({}, {}, [row("k1", due=100)])
    done: dict[str, Any] = {}

    def work() -> None:
        try:
            done["stats"] = sopkit.Dispatcher(store, {"sms": sms}, worker="w").run_once(100)
        except Exception as exc:  # reported below, with the test's assertion
            done["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    try:
        assert "error" not in done, done.get("error")
        assert done["stats"].delivered == 1
        assert [(r.key, r.status) for r in store.rows()] == [("k1", "delivered")]
        assert [m.key for m in sms.sent] == ["k1"]
    finally:
        store.close()


def test_a_store_file_asks_for_the_heartbeat_and_a_memory_store_does_not(
        tmp_path: Path) -> None:
    """`sopkit run` keeps a SQLite file's loop lock alive with a heartbeat (the store's
    RENEWS); a store in memory has no other process to fend off and asks for none."""
    on_file = sopkit.open_store(str(tmp_path / "live.db"))
    in_memory = sopkit.open_store(":memory:")
    try:
        assert (on_file.RENEWS, in_memory.RENEWS) == (True, False)
    finally:
        on_file.close()
        in_memory.close()
