"""The inbox commits concurrent appends together; each request keeps its rows, its order and
its own answer (a seq, or InboxFull)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from sopkit._live.inbox import Entry, Inbox, InboxFull


def _appends(inbox: Inbox, requests: int, size: int,
             bound: int) -> list[int | InboxFull]:
    """`requests` threads appending `size` records each at once; each one's outcome."""
    start = threading.Barrier(requests)
    outcomes: list[int | InboxFull] = [0] * requests

    def send(n: int) -> None:
        entries = [Entry("events", {"request": n, "item": i}) for i in range(size)]
        start.wait()
        try:
            outcomes[n] = inbox.append(entries, 1_700_000_000, 0, bound)
        except InboxFull as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=send, args=(n,)) for n in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_concurrent_requests_each_get_their_rows_in_order(tmp_path: Path) -> None:
    """32 requests of 3 records sent at once: all committed, each request's records
    contiguous and in order, ending at the seq it was answered."""
    inbox = Inbox(str(tmp_path / "store.db"))
    outcomes = _appends(inbox, 32, 3, 100_000)
    inbox.close()
    assert all(isinstance(o, int) for o in outcomes)
    with sqlite3.connect(tmp_path / "store.db") as db:
        rows = {seq: json.loads(record)
                for seq, record in db.execute("SELECT seq, record FROM inbox")}
    assert len(rows) == 96
    for n, last in enumerate(outcomes):
        assert isinstance(last, int)
        assert [rows[last - 2 + i] for i in range(3)] == \
            [{"request": n, "item": i} for i in range(3)]


def test_the_bound_holds_per_request_when_requests_are_committed_together(
        tmp_path: Path) -> None:
    """Bound 10, 8 requests of 3 at once into an empty inbox: exactly 3 are taken (3, 6,
    9 waiting), the other 5 get InboxFull and leave nothing behind."""
    inbox = Inbox(str(tmp_path / "store.db"))
    outcomes = _appends(inbox, 8, 3, 10)
    assert sum(isinstance(o, int) for o in outcomes) == 3
    assert sum(isinstance(o, InboxFull) for o in outcomes) == 5
    assert inbox.waiting(0)[0] == 9
    inbox.close()
