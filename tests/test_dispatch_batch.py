"""Batched delivery: a pass's outcomes in one store transaction, a BatchSender gets its rows
in one call, the jsonl channel writes and fsyncs once per batch (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_store import row

from sopkit._live.dispatch import Dispatcher
from sopkit._live.store import Store
from sopkit.channels import BatchSender, MemoryChannel, Message, Receipt
from sopkit.channels._console import JsonlChannel

NOW = 1_700_000_000


class CountingJsonl(JsonlChannel):
    """The jsonl channel, counting the calls the dispatcher makes."""

    def __init__(self, path: Path) -> None:
        super().__init__("file", {"path": str(path)}, {})
        self.batches: list[int] = []

    def send_batch(self, messages: list[Message]) -> list[Receipt]:
        self.batches.append(len(messages))
        return super().send_batch(messages)


def test_jsonl_is_a_batch_sender_and_gets_a_pass_in_one_call(any_store: Store,
                                                            tmp_path: Path) -> None:
    """Twelve due rows for a jsonl channel: one send_batch call, twelve lines, all delivered."""
    channel = CountingJsonl(tmp_path / "out.jsonl")
    assert isinstance(channel, BatchSender)
    any_store.commit({}, {}, [row(f"k{i:02d}", due=NOW, channel="file") for i in range(12)])
    stats = Dispatcher(any_store, {"file": channel}, worker="w").run_once(NOW)
    channel.close()
    assert (stats.claimed, stats.delivered, channel.batches) == (12, 12, [12])
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["key"] for line in lines] == [f"k{i:02d}" for i in range(12)]
    rows = any_store.rows()
    assert {r.status for r in rows} == {"delivered"}
    assert [r.receipt["provider_id"] for r in rows if r.receipt] == \
        [f"line {i}" for i in range(1, 13)]


def test_a_pass_mixes_outcomes_and_records_them_all(any_store: Store, tmp_path: Path) -> None:
    """One pass with a delivery, a retry, a dead letter and an expiry records each outcome."""
    sms = MemoryChannel("sms", {}, {})
    sms.script += [Receipt.delivered("ok"), Receipt.retry("busy", retry_after=60),
                   Receipt.failed("bad number")]
    any_store.commit({}, {}, [row("a", due=NOW), row("b", due=NOW), row("c", due=NOW),
                              row("d", due=NOW, expires_at="2020-01-01T00:00:00+00:00")])
    stats = Dispatcher(any_store, {"sms": sms}, worker="w").run_once(NOW)
    assert (stats.delivered, stats.retried, stats.dead, stats.expired) == (1, 1, 1, 1)
    got = {r.key: r for r in any_store.rows()}
    assert [got[k].status for k in "abcd"] == ["delivered", "pending", "dead", "expired"]
    assert got["b"].due_at == NOW + 60 and got["b"].last_error == "busy"
    assert got["c"].last_error == "bad number"


def test_mark_many_applies_only_to_rows_still_leased(any_store: Store) -> None:
    """A late mark never overwrites a newer outcome, in a batch as one by one."""
    any_store.commit({}, {}, [row("a", due=NOW), row("b", due=NOW)])
    a, b = sorted(any_store.claim(NOW, 10, 60, "w"), key=lambda r: r.key)
    assert a.id is not None and b.id is not None
    any_store.mark_dead(a.id, "gone", NOW)
    any_store.mark_many([("mark_delivered", (a.id, {"status": "delivered"}, NOW)),
                         ("mark_retry", (b.id, NOW + 5, "later"))])
    got = {r.key: r for r in any_store.rows()}
    assert (got["a"].status, got["b"].status, got["b"].due_at) == ("dead", "pending", NOW + 5)


def test_an_interrupted_pass_still_records_what_was_sent(any_store: Store) -> None:
    """A pass stopped by Ctrl-C mid-way records the rows sent before it; the rest stay
    leased, to be sent again when their lease runs out."""

    class Interrupted(MemoryChannel):
        def send(self, message: Message) -> Receipt:
            if len(self.sent) == 2:
                raise KeyboardInterrupt
            return super().send(message)

    any_store.commit({}, {}, [row(f"k{i}", due=NOW) for i in range(4)])
    with pytest.raises(KeyboardInterrupt):
        Dispatcher(any_store, {"sms": Interrupted("sms", {}, {})}, worker="w").run_once(NOW)
    got = {r.key: r.status for r in any_store.rows()}
    assert got == {"k0": "delivered", "k1": "delivered", "k2": "leased", "k3": "leased"}


def test_jsonl_batch_writes_each_key_once_with_one_fsync(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch with a key already in the file and a key twice: one line each, one fsync."""
    syncs: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (syncs.append(fd), real(fd))[1])
    path = tmp_path / "out.jsonl"
    channel = JsonlChannel("file", {"path": str(path)}, {})
    message = Message.from_json(row("old", due=NOW).message)
    assert channel.send(message).status == "delivered"
    batch = [Message.from_json(row(k, due=NOW).message) for k in ("old", "n1", "n2", "n1")]
    receipts = channel.send_batch(batch)
    channel.close()
    assert [r.detail for r in receipts] == [
        "already written", f"written to {path} line 2", f"written to {path} line 3",
        "already written"]
    assert len(syncs) == 2  # the single send, then the batch
    keys = [json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert keys == ["old", "n1", "n2"]
