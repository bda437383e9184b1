"""Dispatcher behaviours a user notices that the older tests left unchecked (issue 14).

Each test drives a real Dispatcher over a real SQLite outbox and reads what an operator sees:
the rows' status, due time and error, the run's stats, the dispatcher's log lines. Channels
are MemoryChannel (the shipped fake of the channel seam), one with a `send_group`.
"""

from __future__ import annotations

import logging

import pytest
from test_store import row

from sopkit._live.dispatch import Dispatcher
from sopkit._live.store import OutboxRow, Store
from sopkit.channels import MemoryChannel, Message, Receipt

NOW = 1_700_000_000
FIRING = "2024-12-12T10:00:00+08:00"


def _rows(store: Store) -> dict[str, OutboxRow]:
    return {r.key: r for r in store.rows()}


class _GroupChannel(MemoryChannel):
    """A channel that can send one campaign firing as a group (like WeCom 企业群发)."""

    def __init__(self, name: str = "wecom") -> None:
        super().__init__(name)
        self.groups: list[list[str]] = []
        self.group_script: list[list[Receipt]] = []

    def send_group(self, messages: list[Message]) -> list[Receipt]:
        self.groups.append([m.key for m in messages])
        if self.group_script:
            return self.group_script.pop(0)
        return [Receipt.delivered("group task") for _ in messages]


def _campaign(key: str, due: int = NOW) -> OutboxRow:
    return row(key, due=due, channel="wecom", firing=FIRING)


def test_no_base_delay_retries_at_once(store: Store) -> None:
    """With base_delay=0 (allowed) a retried row is due again at once, not a second later."""
    sms = MemoryChannel("sms")
    sms.script.append(Receipt.retry("HTTP 503"))
    store.commit({}, {}, [row("k1", due=NOW)])
    d = Dispatcher(store, {"sms": sms}, worker="w", base_delay=0)
    assert d.run_once(NOW).retried == 1
    assert _rows(store)["k1"].due_at == NOW
    assert d.run_once(NOW).delivered == 1


def test_retry_after_zero_is_honoured(store: Store) -> None:
    """A channel saying Retry-After: 0 gets the row back at once, not after the backoff."""
    sms = MemoryChannel("sms")
    sms.script.append(Receipt.retry("rate limited", retry_after=0))
    store.commit({}, {}, [row("k1", due=NOW)])
    Dispatcher(store, {"sms": sms}, worker="w", base_delay=300).run_once(NOW)
    assert _rows(store)["k1"].due_at == NOW


def test_retry_after_below_a_second_waits_a_second(store: Store) -> None:
    """A fractional Retry-After (0.2 s) is rounded up to one second, not replaced by backoff."""
    sms = MemoryChannel("sms")
    sms.script.append(Receipt.retry("rate limited", retry_after=0.2))
    store.commit({}, {}, [row("k1", due=NOW)])
    Dispatcher(store, {"sms": sms}, worker="w", base_delay=3600).run_once(NOW)
    assert _rows(store)["k1"].due_at == NOW + 1


def test_backoff_jitter_reaches_the_ceiling(store: Store) -> None:
    """Full jitter: first retries of many rows spread over the whole (0, base_delay] range."""
    d = Dispatcher(store, {}, worker="w", base_delay=1000)
    waits = [d.backoff(f"retail:1:winback:c{i}:1:0", 1) for i in range(300)]
    assert max(waits) > 900 and min(waits) < 100


def test_default_backoff_is_capped_at_six_hours(store: Store) -> None:
    """By default no retry waits over 6 hours, and the longest waits of late attempts reach it."""
    d = Dispatcher(store, {}, worker="w")
    waits = [d.backoff(f"retail:1:winback:c{i}:1:0", 30) for i in range(20_000)]
    assert 6 * 3600 - 6 < max(waits) <= 6 * 3600


class _Killed(MemoryChannel):
    """A dispatcher process killed while sending: the error is not one a channel returns."""

    def send(self, message: Message) -> Receipt:
        raise KeyboardInterrupt


def test_default_lease_is_a_minute(store: Store) -> None:
    """A row claimed by a dispatcher that then died is taken again 60 s later, not sooner."""
    store.commit({}, {}, [row("k1", due=NOW)])
    with pytest.raises(KeyboardInterrupt):
        Dispatcher(store, {"sms": _Killed("sms")}, worker="died").run_once(NOW)
    sms = MemoryChannel("sms")
    other = Dispatcher(store, {"sms": sms}, worker="w2")
    assert other.run_once(NOW + 59).claimed == 0
    assert other.run_once(NOW + 60).delivered == 1
    assert [m.attempt for m in sms.sent] == [2]


def test_a_full_claim_ending_in_a_campaign_claims_the_rest_of_it(store: Store) -> None:
    """A batch cut inside a campaign firing claims on, so the firing goes as one group."""
    wecom, sms = _GroupChannel(), MemoryChannel("sms")
    store.commit({}, {}, [row("a-sms", due=NOW - 10), _campaign("g1", NOW - 5),
                          _campaign("g2"), _campaign("g3")])
    stats = Dispatcher(store, {"wecom": wecom, "sms": sms}, worker="w",
                       batch=2).run_once(NOW)
    assert (stats.claimed, stats.delivered) == (4, 4)
    assert wecom.groups == [["g1", "g2", "g3"]] and wecom.sent == []
    assert [m.key for m in sms.sent] == ["a-sms"]


def test_campaign_rows_and_plain_rows_each_go_their_way(store: Store) -> None:
    """In one batch, campaign rows go as one group send and other rows one by one."""
    wecom, sms = _GroupChannel(), MemoryChannel("sms")
    store.commit({}, {}, [_campaign("g1"), row("s1", due=NOW), _campaign("g2"),
                          row("w1", due=NOW, channel="wecom")])
    stats = Dispatcher(store, {"wecom": wecom, "sms": sms}, worker="w").run_once(NOW)
    assert stats.delivered == 4
    assert wecom.groups == [["g1", "g2"]]
    assert [m.key for m in wecom.sent] == ["w1"] and [m.key for m in sms.sent] == ["s1"]


def test_a_campaign_task_is_not_group_sent(store: Store) -> None:
    """A staff task of a campaign firing goes through the channel's send, not a group send."""
    wecom = _GroupChannel()
    task = row("t1", due=NOW, channel="wecom", kind="task", firing=FIRING)
    store.commit({}, {}, [task, _campaign("g1")])
    Dispatcher(store, {"wecom": wecom}, worker="w").run_once(NOW)
    assert wecom.groups == [["g1"]] and [m.key for m in wecom.sent] == ["t1"]


def test_group_rows_of_a_channel_disabled_mid_batch_are_released(store: Store) -> None:
    """Once a receipt disables a channel, its campaign rows later in the batch stay pending."""
    wecom = _GroupChannel()
    wecom.script.append(Receipt.failed("token revoked", disable=True))
    store.commit({}, {}, [row("w1", due=NOW - 5, channel="wecom"), _campaign("g1"),
                          _campaign("g2")])
    d = Dispatcher(store, {"wecom": wecom}, worker="w")
    stats = d.run_once(NOW)
    assert (stats.dead, stats.released, stats.by_channel["wecom"]["released"]) == (1, 2, 2)
    assert wecom.groups == []
    rows = _rows(store)
    assert (rows["g1"].status, rows["g2"].status) == ("pending", "pending")
    assert d.run_once(NOW + 60).claimed == 0, "the disabled channel stays off"


def test_a_group_answering_too_few_receipts_is_retried(store: Store) -> None:
    """A group send answering fewer receipts than messages retries every row, saying why."""
    wecom = _GroupChannel()
    wecom.group_script.append([Receipt.delivered("one")])
    store.commit({}, {}, [_campaign("g1"), _campaign("g2")])
    stats = Dispatcher(store, {"wecom": wecom}, worker="w").run_once(NOW)
    assert stats.retried == 2
    assert {r.last_error for r in store.rows()} == \
        {"channel 'wecom' answered 1 receipts for 2 messages"}


def test_retry_and_dead_letters_are_logged(store: Store,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """The log says when a row is retried and names each dead letter with its channel."""
    sms = MemoryChannel("sms")
    sms.script.append(Receipt.retry("HTTP 503"))
    store.commit({}, {}, [row("k1", due=NOW), row("k2", due=NOW, channel="smss")])
    with caplog.at_level(logging.INFO, logger="sopkit.dispatch"):
        Dispatcher(store, {"sms": sms}, worker="w", base_delay=10).run_once(NOW)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("retrying k1 via sms in ") and "(attempt 1 of 8): HTTP 503"
               in line for line in lines), lines
    assert any(line.startswith("dead letter k2 via smss: unknown channel 'smss'")
               for line in lines), lines


def test_staff_task_dead_letter_log_shows_no_channel(store: Store,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A dead staff task logs 'via -' rather than an empty channel name."""
    tasks = MemoryChannel("")
    tasks.script.append(Receipt.failed("no such staff"))
    store.commit({}, {}, [row("t1", due=NOW, channel="", kind="task")])
    with caplog.at_level(logging.INFO, logger="sopkit.dispatch"):
        Dispatcher(store, {"": tasks}, worker="w").run_once(NOW)
    assert "dead letter t1 via -: no such staff" in [r.getMessage() for r in caplog.records]


def test_disabled_channel_rows_are_released_and_counted(store: Store) -> None:
    """Rows of a channel disabled earlier in the batch are given back and counted released."""
    hook = MemoryChannel("hook")
    hook.script.append(Receipt.failed("HTTP 410 Gone", disable=True))
    store.commit({}, {}, [row(f"h{i}", due=NOW + i, channel="hook") for i in range(3)])
    stats = Dispatcher(store, {"hook": hook}, worker="w").run_once(NOW + 10)
    assert stats.to_json()["by_channel"]["hook"]["released"] == 2
    assert [r.status for r in sorted(store.rows(), key=lambda r: r.key)] == \
        ["dead", "pending", "pending"]


def test_zero_batch_is_refused(store: Store) -> None:
    """batch=0 (a dispatcher that would never send) is refused with the setting named."""
    with pytest.raises(ValueError, match="batch must be at least 1, not 0"):
        Dispatcher(store, {}, worker="w", batch=0)


@pytest.mark.parametrize("setting", ["base_delay", "max_delay"])
def test_a_zero_delay_setting_retries_at_once(store: Store, setting: str) -> None:
    """base_delay=0 or max_delay=0 (both allowed) make a retried row due again at once."""
    sms = MemoryChannel("sms")
    sms.script.append(Receipt.retry("HTTP 503"))
    store.commit({}, {}, [row("k1", due=NOW)])
    delays = {"base_delay": 30, "max_delay": 6 * 3600} | {setting: 0}
    Dispatcher(store, {"sms": sms}, worker="w", base_delay=delays["base_delay"],
               max_delay=delays["max_delay"]).run_once(NOW)
    assert _rows(store)["k1"].due_at == NOW


def test_a_one_second_cap_waits_one_second(store: Store) -> None:
    """With max_delay=1 every retry waits exactly one second (never 0: no busy loop)."""
    sms = MemoryChannel("sms")
    sms.script.extend(Receipt.retry("HTTP 503") for _ in range(3))
    store.commit({}, {}, [row(f"k{i}", due=NOW) for i in range(3)])
    Dispatcher(store, {"sms": sms}, worker="w", max_delay=1).run_once(NOW)
    assert {r.due_at for r in store.rows()} == {NOW + 1}


def test_a_negative_retry_after_falls_back_to_the_backoff(store: Store) -> None:
    """A plugin's negative retry_after (-0.5 s) is ignored: the row waits the backoff."""
    sms = MemoryChannel("sms")
    sms.script.append(Receipt.retry("confused plugin", retry_after=-0.5))
    store.commit({}, {}, [row("k1", due=NOW)])
    d = Dispatcher(store, {"sms": sms}, worker="w", base_delay=300)
    d.run_once(NOW)
    assert _rows(store)["k1"].due_at == NOW + d.backoff("k1", 1) > NOW


def test_campaign_rows_of_a_channel_without_group_sends_go_one_by_one(store: Store) -> None:
    """Campaign rows on a channel that cannot group (SMS) are each sent on their own."""
    sms = MemoryChannel("sms")
    store.commit({}, {}, [row("c1", due=NOW, firing=FIRING), row("c2", due=NOW, firing=FIRING)])
    stats = Dispatcher(store, {"sms": sms}, worker="w").run_once(NOW)
    assert stats.delivered == 2 and [m.key for m in sms.sent] == ["c1", "c2"]


def test_an_expired_row_is_settled_unsent(store: Store) -> None:
    """A row past its expires_at is settled 'expired' with the reason, and never sent."""
    sms = MemoryChannel("sms")
    store.commit({}, {}, [row("k1", due=NOW, expires_at="2023-11-14T00:00:00+00:00")])
    stats = Dispatcher(store, {"sms": sms}, worker="w").run_once(NOW)
    assert (stats.expired, stats.delivered, sms.sent) == (1, 0, [])
    done = _rows(store)["k1"]
    assert (done.status, done.reason, done.settled_at) == \
        ("expired", "expired: not delivered by 2023-11-14T00:00:00+00:00", NOW)


def test_one_run_claims_a_hundred_rows_by_default(store: Store) -> None:
    """By default run_once sends at most 100 rows; the next run takes the rest."""
    sms = MemoryChannel("sms")
    store.commit({}, {}, [row(f"k{i:03d}", due=NOW) for i in range(101)])
    d = Dispatcher(store, {"sms": sms}, worker="w")
    assert [d.run_once(NOW).delivered for _ in range(2)] == [100, 1]
