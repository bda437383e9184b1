"""`sopkit serve`'s live loop under a backlog: many records per committed transaction (group
commit), bounded by `--batch` and by a time since the oldest uncommitted record, with the
same decisions and position as one record a transaction; over a real SQLite store."""

from __future__ import annotations

from pathlib import Path

from live_helpers import shop_playbook

import sopkit
from sopkit._io import Quarantine
from sopkit._live.dispatch import Dispatcher
from sopkit._live.inbox import Entry, Inbox
from sopkit._live.loop import LiveRun
from sopkit._live.openstore import open_store
from sopkit._serve.service import LoopOptions, ServedLoop

CLOCK = 1735660800 + 40 * 86400  # 2025-02-10


def _drained(tmp: Path, name: str, batch: int, max_wait: float | None,
             events: int = 40) -> tuple[int, int, list[tuple[str, str]]]:
    """A store whose inbox holds `events` purchases, applied by the served loop (which stops
    once the inbox is empty): (commits, position, outbox (key, status) rows)."""
    loaded = sopkit.load_playbook(shop_playbook(tmp, "http://127.0.0.1:9/hook"))
    url = str(tmp / f"{name}.db")
    store = open_store(url)
    inbox = Inbox(url)
    inbox.append([Entry("events", {"customer_id": f"c{i % 7}", "type": "purchase",
                                   "ts": f"2025-01-{i % 28 + 1:02d}T10:00:00",
                                   "amount": "30.00", "event_id": f"e{i}"})
                  for i in range(events)], CLOCK, 0, 10**6)
    live = LiveRun(loaded, store, engine="native")
    options = LoopOptions(clock=lambda: CLOCK, lateness=0, batch=batch, tick=0.01,
                          max_future=None, max_inbox=10**6, max_wait=max_wait)
    loop = ServedLoop(live, Dispatcher(store, {}, worker="t"), inbox, Quarantine(None),
                      options)
    loop.shutdown = True  # apply what the inbox holds, then stop
    loop.start()
    loop.stop(timeout=60)
    assert loop.error is None and loop.stats is not None
    rows = sorted((r.key, r.rule) for r in store.rows())
    commits, position = loop.stats.commits, loop.position
    inbox.close()
    store.close()
    return commits, position, rows


def test_a_backlog_is_committed_in_few_transactions_with_the_same_decisions(
        tmp_path: Path) -> None:
    """40 waiting records go in one or two transactions with a large --batch, against 40
    with --batch 1; the position and the outbox are the same either way."""
    few, position, rows = _drained(tmp_path, "grouped", batch=1000, max_wait=None)
    many, position_one, rows_one = _drained(tmp_path, "single", batch=1, max_wait=None)
    assert position == position_one == 40
    assert rows == rows_one and rows
    assert few <= 3 < 40 <= many


def test_the_time_bound_commits_before_the_batch_is_full(tmp_path: Path) -> None:
    """With a wait of 0 s the loop commits after each record even though --batch is not
    reached: the oldest uncommitted record never waits longer than the bound."""
    commits, position, _ = _drained(tmp_path, "timed", batch=1000, max_wait=0.0)
    assert position == 40
    assert commits >= 40
