"""The inbox commits concurrent appends together; each request keeps its rows, its order and
its own answer (a seq, or InboxFull)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sopkit._live.inbox import Entry, Inbox, InboxFull
from sopkit._serve.committer import Committer


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


def _each_has_its_rows(path: Path, outcomes: Sequence[object]) -> None:
    """Request n's 3 records are the 3 rows ending at the seq it was answered, in order."""
    with sqlite3.connect(path) as db:
        rows = {seq: json.loads(record)
                for seq, record in db.execute("SELECT seq, record FROM inbox")}
    assert len(rows) == 3 * len(outcomes)
    for n, last in enumerate(outcomes):
        assert isinstance(last, int)
        assert [rows[last - 2 + i] for i in range(3)] == \
            [{"request": n, "item": i} for i in range(3)]


def test_concurrent_requests_each_get_their_rows_in_order(tmp_path: Path) -> None:
    """32 requests of 3 records sent at once: all committed, each request's records
    contiguous and in order, ending at the seq it was answered."""
    inbox = Inbox(str(tmp_path / "store.db"))
    outcomes = _appends(inbox, 32, 3, 100_000)
    inbox.close()
    assert all(isinstance(o, int) for o in outcomes)
    _each_has_its_rows(tmp_path / "store.db", outcomes)


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


class _CountingInbox(Inbox):
    """A real inbox that counts its commits of requests (`append_many` calls)."""

    calls = 0

    def append_many(self, appends: Any) -> list[int | Exception]:
        self.calls += 1
        return super().append_many(appends)


def test_the_committer_answers_each_request_and_commits_a_burst_together(
        tmp_path: Path) -> None:
    """`serve`'s committer: 32 requests of 3 records at once get their own contiguous rows
    and seqs in two commits at most (the first, and all that came meanwhile); with bound
    10, 3 of 8 are taken and the rest get InboxFull."""
    inbox = _CountingInbox(str(tmp_path / "store.db"))
    committer = Committer(inbox)

    async def burst(requests: int, bound: int) -> list[int | BaseException]:
        return await asyncio.gather(
            *(committer.append([Entry("events", {"request": n, "item": i})
                                for i in range(3)], 1_700_000_000, 0, bound)
              for n in range(requests)), return_exceptions=True)

    outcomes = asyncio.run(burst(32, 100_000))
    assert inbox.calls <= 2
    _each_has_its_rows(tmp_path / "store.db", outcomes)
    inbox.close()
    bounded = _CountingInbox(str(tmp_path / "bounded.db"))
    committer = Committer(bounded)
    outcomes = asyncio.run(burst(8, 10))
    assert sum(isinstance(o, int) for o in outcomes) == 3
    assert sum(isinstance(o, InboxFull) for o in outcomes) == 5
    bounded.close()
