"""Rows the live loop commits leased to its dispatcher, sent without claiming them back.

Every test runs on SQLite and on PostgreSQL (`any_store`, conftest.py).
"""

from __future__ import annotations

from test_store import row

from sopkit._live.dispatch import Dispatcher
from sopkit._live.store import OutboxRow, Store
from sopkit.channels import MemoryChannel

NOW = 1_700_000_000


def _commit(store: Store, dispatcher: Dispatcher, rows: list[OutboxRow], now: int) -> int:
    """What the live loop does with a batch's rows: lease the due ones, commit, hand over."""
    dispatcher.lease_new(rows, now)
    new = store.commit({}, {}, rows)
    dispatcher.adopt(rows)
    return new


def test_due_rows_are_committed_leased_and_sent_in_the_next_pass(any_store: Store) -> None:
    """A new row due now is stored leased to the dispatcher and delivered by its next pass,
    as attempt 1; a row due later stays pending."""
    sms = MemoryChannel("sms", {}, {})
    dispatcher = Dispatcher(any_store, {"sms": sms}, worker="w", wall=lambda: NOW)
    assert _commit(any_store, dispatcher, [row("k1", due=NOW), row("k2", due=NOW + 60)], NOW) == 2
    stored = {r.key: r for r in any_store.rows()}
    assert (stored["k1"].status, stored["k1"].leased_by, stored["k1"].attempts,
            stored["k1"].lease_until) == ("leased", "w", 1, NOW + 60)
    assert stored["k2"].status == "pending"
    stats = dispatcher.run_once(NOW)
    assert (stats.claimed, stats.delivered) == (1, 1)
    assert [(m.key, m.attempt) for m in sms.sent] == [("k1", 1)]
    done = {r.key: r for r in any_store.rows()}
    assert (done["k1"].status, done["k1"].attempts) == ("delivered", 1)
    assert done["k2"].status == "pending"


def test_a_replayed_batch_sends_nothing_twice(any_store: Store) -> None:
    """Committing the same keys again (a batch replayed after a crash) inserts nothing and
    hands nothing over: the delivered row is not sent again."""
    sms = MemoryChannel("sms", {}, {})
    dispatcher = Dispatcher(any_store, {"sms": sms}, worker="w", wall=lambda: NOW)
    _commit(any_store, dispatcher, [row("k1", due=NOW)], NOW)
    dispatcher.run_once(NOW)
    assert _commit(any_store, dispatcher, [row("k1", due=NOW)], NOW) == 0
    stats = dispatcher.run_once(NOW)
    assert (stats.claimed, [m.key for m in sms.sent]) == (0, ["k1"])
    assert [r.status for r in any_store.rows()] == ["delivered"]


def test_a_handed_over_row_whose_lease_ran_out_is_sent_once(any_store: Store) -> None:
    """When the pass comes after the row's lease ran out, the claim takes the row back and
    it goes out once (attempt 2), not once as claimed and once as handed over."""
    sms = MemoryChannel("sms", {}, {})
    wall = [NOW]
    dispatcher = Dispatcher(any_store, {"sms": sms}, worker="w", lease_seconds=60,
                            wall=lambda: wall[0])
    _commit(any_store, dispatcher, [row("k1", due=NOW)], NOW)
    wall[0] = NOW + 61
    stats = dispatcher.run_once(NOW + 61)
    assert (stats.claimed, stats.delivered) == (1, 1)
    assert [(m.key, m.attempt) for m in sms.sent] == [("k1", 2)]
    assert dispatcher.run_once(NOW + 61).claimed == 0


def test_rows_of_a_disabled_channel_are_left_pending(any_store: Store) -> None:
    """A channel disabled earlier gets no rows leased: they wait, pending, for a restart."""
    sms = MemoryChannel("sms", {}, {})
    dispatcher = Dispatcher(any_store, {"sms": sms}, worker="w", wall=lambda: NOW)
    dispatcher.disabled["sms"] = "410 Gone"
    _commit(any_store, dispatcher, [row("k1", due=NOW)], NOW)
    assert [r.status for r in any_store.rows()] == ["pending"]
    assert dispatcher.run_once(NOW).claimed == 0
    assert sms.sent == []
