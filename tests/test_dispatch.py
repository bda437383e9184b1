"""The dispatcher: outcomes, backoff, Retry-After, dead letters, disabled channels.

Channels are `MemoryChannel`, the shipped fake of the seam, scripted with receipts; the
store is a real SQLite file (and, where the store's part matters, PostgreSQL too).
"""

from __future__ import annotations

import itertools
import sqlite3
import statistics
from pathlib import Path

import pytest
from test_store import row

from sopkit._live.dispatch import Dispatcher
from sopkit._live.openstore import open_store
from sopkit._live.sqlitestore import SQLiteStore
from sopkit._live.store import OutboxRow, Store
from sopkit.channels import MemoryChannel, Message, Receipt

NOW = 1_700_000_000


def _rows(store: Store) -> dict[str, OutboxRow]:
    return {r.key: r for r in store.rows()}


def _sms() -> MemoryChannel:
    return MemoryChannel("sms", {}, {})


def test_delivered_row_gets_its_receipt(store: Store) -> None:
    """A delivered send is marked delivered with the channel's receipt, e-mails masked."""
    sms = _sms()
    sms.script.append(Receipt.delivered("accepted for li.lei@example.com", provider_id="m-1"))
    store.commit({}, {}, [row("k1", due=NOW)])
    stats = Dispatcher(store, {"sms": sms}, worker="w").run_once(NOW)
    assert (stats.claimed, stats.delivered, stats.by_channel["sms"]["delivered"]) == (1, 1, 1)
    (sent,) = sms.sent
    assert isinstance(sent, Message)
    assert (sent.key, sent.attempt, sent.body["message"], sent.contact["phone"]) == \
        ("k1", 1, "您好 k1", "13812345678")
    done = _rows(store)["k1"]
    assert (done.status, done.delivered_at) == ("delivered", NOW)
    assert done.receipt == {"status": "delivered", "detail": "accepted for l***@example.com",
                            "provider_id": "m-1"}


def test_rows_not_yet_due_are_left_alone(store: Store) -> None:
    """run_once sends only what is due at `now`."""
    sms = _sms()
    store.commit({}, {}, [row("now", due=NOW), row("later", due=NOW + 1)])
    Dispatcher(store, {"sms": sms}, worker="w").run_once(NOW)
    assert [m.key for m in sms.sent] == ["now"]
    assert _rows(store)["later"].status == "pending"


def test_backoff_is_exponential_capped_and_deterministic(store: Store) -> None:
    """Backoff ceilings double per attempt up to max_delay; jitter is fixed by key and attempt."""
    d = Dispatcher(store, {}, worker="w", base_delay=30, max_delay=3600)
    keys = [f"retail:1:winback:c{i}:1:0" for i in range(400)]
    means = []
    for attempt in range(1, 10):
        ceiling = min(3600, 30 * 2 ** (attempt - 1))
        delays = [d.backoff(k, attempt) for k in keys]
        assert all(1 <= x <= ceiling for x in delays), attempt
        assert len(set(delays)) > min(ceiling, 400) * 0.5, "full jitter spreads the rows"
        means.append(statistics.mean(delays) / ceiling)
    assert all(0.4 < m < 0.6 for m in means), "uniform up to each ceiling"
    growth = [statistics.mean(d.backoff(k, a) for k in keys) for a in (1, 2, 3, 4, 5)]
    assert all(1.6 < b / a < 2.4 for a, b in itertools.pairwise(growth))
    assert max(d.backoff(k, 40) for k in keys) <= 3600
    again = Dispatcher(store, {}, worker="other", base_delay=30, max_delay=3600)
    assert [again.backoff(k, 3) for k in keys] == [d.backoff(k, 3) for k in keys]
    assert d.backoff(keys[0], 3) != d.backoff(keys[0], 4) or \
        d.backoff(keys[1], 3) != d.backoff(keys[1], 4)


def test_retry_waits_the_backoff_then_tries_again(store: Store) -> None:
    """A retry receipt puts the row back, due after the backoff; the next attempt is number 2."""
    sms = _sms()
    sms.script.append(Receipt.retry("HTTP 503"))
    store.commit({}, {}, [row("k1", due=NOW)])
    d = Dispatcher(store, {"sms": sms}, worker="w", base_delay=60)
    assert d.run_once(NOW).retried == 1
    wait = d.backoff("k1", 1)
    pending = _rows(store)["k1"]
    assert (pending.status, pending.due_at, pending.last_error, pending.attempts) == \
        ("pending", NOW + wait, "HTTP 503", 1)
    assert d.run_once(NOW + wait - 1).claimed == 0
    assert d.run_once(NOW + wait).delivered == 1
    assert [m.attempt for m in sms.sent] == [1, 2]


@pytest.mark.parametrize(("retry_after", "wait"), [(5.0, 5), (7200.2, 7201)])
def test_retry_after_is_honoured(store: Store, retry_after: float, wait: int) -> None:
    """A channel's retry_after (shorter or longer than the backoff) sets the next due time."""
    sms = _sms()
    sms.script.append(Receipt.retry("rate limited", retry_after=retry_after))
    store.commit({}, {}, [row("k1", due=NOW)])
    Dispatcher(store, {"sms": sms}, worker="w", base_delay=300).run_once(NOW)
    assert _rows(store)["k1"].due_at == NOW + wait


def test_dead_after_max_attempts(store: Store) -> None:
    """A row that keeps asking for a retry is dead after max_attempts, with the last error."""
    sms = _sms()
    sms.script.extend(Receipt.retry(f"busy {i}") for i in range(1, 4))
    store.commit({}, {}, [row("k1", due=NOW)])
    d = Dispatcher(store, {"sms": sms}, worker="w", max_attempts=3)
    now = NOW
    outcomes = []
    for _ in range(3):
        stats = d.run_once(now)
        outcomes.append((stats.retried, stats.dead))
        now = _rows(store)["k1"].due_at
    assert outcomes == [(1, 0), (1, 0), (0, 1)]
    dead = _rows(store)["k1"]
    assert (dead.status, dead.attempts, dead.last_error) == \
        ("dead", 3, "retries exhausted: busy 3")
    assert [m.attempt for m in sms.sent] == [1, 2, 3]


def test_failed_is_dead_at_once(store: Store) -> None:
    """A permanent failure goes straight to the dead letters, after one attempt."""
    sms = _sms()
    sms.script.append(Receipt.failed("HTTP 400: invalid number 13812345678"))
    store.commit({}, {}, [row("k1", due=NOW)])
    stats = Dispatcher(store, {"sms": sms}, worker="w").run_once(NOW)
    assert (stats.dead, stats.retried) == (1, 0)
    dead = _rows(store)["k1"]
    assert (dead.status, dead.attempts, dead.last_error, dead.settled_at) == \
        ("dead", 1, "HTTP 400: invalid number 138****5678", NOW)


class _Raising(MemoryChannel):
    """A channel plugin with a bug: it raises instead of returning a Receipt."""

    def send(self, message: Message) -> Receipt:
        super().send(message)
        raise ConnectionResetError(f"peer reset while sending to {message.contact['phone']}")


def test_exception_is_a_retry_with_the_error_masked(store: Store) -> None:
    """An exception from a channel is retried; its type and masked message are recorded."""
    store.commit({}, {}, [row("k1", due=NOW)])
    stats = Dispatcher(store, {"sms": _Raising("sms")}, worker="w").run_once(NOW)
    assert stats.retried == 1
    pending = _rows(store)["k1"]
    assert pending.status == "pending"
    assert pending.last_error == "ConnectionResetError: peer reset while sending to 138****5678"


def test_unknown_channel_is_dead_with_a_suggestion(store: Store) -> None:
    """A row naming a channel the dispatcher does not have is dead, naming the close match."""
    store.commit({}, {}, [row("k1", due=NOW, channel="smss")])
    stats = Dispatcher(store, {"sms": _sms()}, worker="w").run_once(NOW)
    assert stats.dead == 1
    assert _rows(store)["k1"].last_error == "unknown channel 'smss'; did you mean 'sms'?"


def test_task_without_channel_is_recorded(store: Store) -> None:
    """A staff task with no delivery channel is delivered as 'recorded', nothing sent."""
    sms = _sms()
    store.commit({}, {}, [row("t1", due=NOW, channel="", kind="task")])
    stats = Dispatcher(store, {"sms": sms}, worker="w").run_once(NOW)
    assert (stats.delivered, stats.by_channel[""]["delivered"], sms.sent) == (1, 1, [])
    done = _rows(store)["t1"]
    assert (done.status, done.receipt) == ("delivered",
                                           {"status": "delivered", "detail": "recorded"})


def test_disabled_channel_keeps_its_rows_pending(store: Store) -> None:
    """After a disable receipt the channel's other rows stay pending; other channels go on."""
    hook, sms = MemoryChannel("hook"), _sms()
    hook.script.append(Receipt.failed("HTTP 410 Gone", disable=True))
    store.commit({}, {}, [row("h1", due=NOW, channel="hook"), row("h2", due=NOW + 1,
                                                                    channel="hook"),
                          row("s1", due=NOW + 2), row("h3", due=NOW + 100, channel="hook")])
    d = Dispatcher(store, {"hook": hook, "sms": sms}, worker="w")
    stats = d.run_once(NOW + 10)
    assert (stats.dead, stats.released, stats.delivered) == (1, 1, 1)
    assert stats.disabled == {"hook": "HTTP 410 Gone"}
    rows = _rows(store)
    assert (rows["h1"].status, rows["h1"].last_error) == ("dead", "HTTP 410 Gone")
    assert (rows["h2"].status, rows["h2"].attempts) == ("pending", 0)
    assert rows["s1"].status == "delivered"
    later = d.run_once(NOW + 200)
    assert later.claimed == 0, "a disabled channel's rows are not claimed again"
    assert [m.key for m in hook.sent] == ["h1"]
    restarted = Dispatcher(store, {"hook": hook, "sms": sms}, worker="w2")
    assert restarted.run_once(NOW + 200).delivered == 2
    assert [m.key for m in hook.sent] == ["h1", "h2", "h3"]


def test_crashed_dispatcher_rows_are_sent_after_the_lease(store: Store) -> None:
    """Rows leased by a dispatcher that died are sent by another once the lease ran out."""
    sms = _sms()
    store.commit({}, {}, [row("k1", due=NOW)])
    store.claim(NOW, 10, 60, "died")
    d = Dispatcher(store, {"sms": sms}, worker="w2", lease_seconds=60)
    assert d.run_once(NOW + 59).claimed == 0
    assert d.run_once(NOW + 60).delivered == 1
    assert [m.attempt for m in sms.sent] == [2]


class _Broken(MemoryChannel):
    def send(self, message: Message) -> Receipt:
        return "ok"  # type: ignore[return-value]  # a plugin that ignores the protocol


def test_a_non_receipt_answer_is_a_retry(store: Store) -> None:
    """A channel answering something other than a Receipt is retried, and the error says so."""
    store.commit({}, {}, [row("k1", due=NOW)])
    Dispatcher(store, {"sms": _Broken("sms")}, worker="w").run_once(NOW)
    assert _rows(store)["k1"].last_error == "channel 'sms' returned str, not a Receipt"


def test_unreadable_message_is_dead(store: Store) -> None:
    """A row whose message lacks required fields cannot ever be sent: it is dead."""
    broken = row("k1", due=NOW)
    broken.message = {"key": "k1"}
    store.commit({}, {}, [broken])
    Dispatcher(store, {"sms": _sms()}, worker="w").run_once(NOW)
    dead = _rows(store)["k1"]
    assert dead.status == "dead" and dead.last_error.startswith("unreadable message")


def test_batch_limits_one_run(store: Store) -> None:
    """run_once claims at most `batch` rows; the next run takes the rest."""
    sms = _sms()
    store.commit({}, {}, [row(f"k{i}", due=NOW) for i in range(5)])
    d = Dispatcher(store, {"sms": sms}, worker="w", batch=3)
    assert [d.run_once(NOW).delivered for _ in range(3)] == [3, 2, 0]


def test_stats_to_json_counts_per_channel(store: Store) -> None:
    """The stats report totals and per-channel outcomes for logs and `sopkit run`."""
    sms, mail = _sms(), MemoryChannel("mail")
    sms.script.extend([Receipt.retry("busy"), Receipt.delivered()])
    mail.script.append(Receipt.failed("bounced"))
    store.commit({}, {}, [row("a", due=NOW), row("b", due=NOW),
                          row("c", due=NOW, channel="mail")])
    stats = Dispatcher(store, {"sms": sms, "mail": mail}, worker="w").run_once(NOW)
    assert stats.to_json() == {
        "claimed": 3, "delivered": 1, "retried": 1, "dead": 1, "released": 0,
        "expired": 0, "suppressed": 0,
        "by_channel": {"mail": {"delivered": 0, "retried": 0, "dead": 1, "released": 0,
                                "expired": 0, "suppressed": 0},
                       "sms": {"delivered": 1, "retried": 1, "dead": 0, "released": 0,
                               "expired": 0, "suppressed": 0}},
        "disabled": {}}


def test_bad_settings_are_refused(store: Store) -> None:
    """Settings that cannot work (no attempts, empty batches) are a clear ValueError."""
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        Dispatcher(store, {}, worker="w", max_attempts=0)
    with pytest.raises(ValueError, match="batch must be at least 1"):
        Dispatcher(store, {}, worker="w", batch=0)


def test_two_dispatchers_share_the_work_on_both_stores(store_url: str) -> None:
    """Two dispatchers on one store (SQLite and PostgreSQL) send every row exactly once."""
    first, second = open_store(store_url), open_store(store_url)
    first.commit({}, {}, [row(f"k{i:02d}", due=NOW) for i in range(40)])
    a, b = _sms(), _sms()
    da = Dispatcher(first, {"sms": a}, worker="a", batch=7)
    db = Dispatcher(second, {"sms": b}, worker="b", batch=7)
    while da.run_once(NOW).claimed + db.run_once(NOW).claimed:
        pass
    keys = [m.key for m in a.sent + b.sent]
    assert sorted(keys) == [f"k{i:02d}" for i in range(40)] and a.sent and b.sent
    assert first.counts()["delivered"] == 40
    first.close()
    second.close()


def test_nothing_due_is_told_without_the_write_lock(tmp_path: Path) -> None:
    """A pass with nothing due returns at once while another writer (the inbox) holds the
    SQLite write lock; once the lock is free, a due row is claimed as before."""
    path = tmp_path / "store.db"
    store = SQLiteStore(path, busy_timeout_ms=100)
    store.commit({}, {}, [row("later", due=NOW + 60)])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a long inbox commit, say
    try:
        assert Dispatcher(store, {"sms": _sms()}, worker="w").run_once(NOW).claimed == 0
    finally:
        other.execute("ROLLBACK")
        other.close()
    sms = _sms()
    assert Dispatcher(store, {"sms": sms}, worker="w").run_once(NOW + 60).delivered == 1
    assert [m.key for m in sms.sent] == ["later"]
    store.close()
