"""The channel seam: `MockChannel` drives the dispatcher end to end (a real SQLite store),
the optional capabilities are protocols the generic code asks by `isinstance`, HTTP channels
send through the httpx transport they are given, and commands close the channels they build.
"""

from __future__ import annotations

import gc
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_store import row
from typer.testing import CliRunner
from wecom_fake import WecomFake

from sopkit._cli.app import app
from sopkit._live.dispatch import Dispatcher
from sopkit._live.loop import handover_status
from sopkit._live.store import OutboxRow, Store
from sopkit._runtime.campaigns import results
from sopkit.channels import (
    CheckableFactory,
    Closable,
    GroupSender,
    MemoryChannel,
    Message,
    MockChannel,
    Receipt,
    SendOutcome,
    SendResults,
    SmsChannel,
    SmtpChannel,
    TagMirror,
    TransferOutcome,
    TransferResults,
    WebhookChannel,
    WecomChannel,
)

NOW = 1_700_000_000
DATA = Path(__file__).parent / "data"


def _rows(store: Store) -> dict[str, OutboxRow]:
    return {r.key: r for r in store.rows()}


# -- MockChannel drives the dispatcher ---------------------------------------------------


def test_the_handlers_answers_decide_each_rows_fate(store: Store) -> None:
    """Delivered, failed and retry answers of the handler make delivered, dead, waiting rows."""
    answers = {"k-ok": Receipt.delivered("accepted", provider_id="p-1"),
               "k-bad": Receipt.failed("no such number 13812345678"),
               "k-busy": Receipt.retry("gateway busy", retry_after=120)}
    seen: list[tuple[str, int]] = []

    def handler(message: Message) -> Receipt:
        seen.append((message.key, message.attempt))
        return answers[message.key]

    store.commit({}, {}, [row(key, due=NOW) for key in answers])
    stats = Dispatcher(store, {"sms": MockChannel(handler, name="sms")},
                       worker="w").run_once(NOW)
    assert (stats.delivered, stats.dead, stats.retried) == (1, 1, 1)
    assert sorted(seen) == [("k-bad", 1), ("k-busy", 1), ("k-ok", 1)]
    rows = _rows(store)
    assert (rows["k-ok"].status, rows["k-ok"].receipt) == \
        ("delivered", {"status": "delivered", "detail": "accepted", "provider_id": "p-1"})
    assert (rows["k-bad"].status, rows["k-bad"].last_error) == \
        ("dead", "no such number 138****5678")
    assert (rows["k-busy"].status, rows["k-busy"].due_at) == ("pending", NOW + 120)


def test_a_handler_that_raises_is_retried_then_delivered(store: Store) -> None:
    """An exception escaping send retries the row; the next attempt (number 2) delivers it."""
    attempts: list[int] = []

    def handler(message: Message) -> Receipt:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise ConnectionResetError("peer reset the connection")
        return Receipt.delivered("second time lucky")

    store.commit({}, {}, [row("k1", due=NOW)])
    dispatcher = Dispatcher(store, {"sms": MockChannel(handler)}, worker="w", base_delay=10)
    first = dispatcher.run_once(NOW)
    waiting = _rows(store)["k1"]
    assert (first.retried, waiting.status) == (1, "pending")
    assert waiting.last_error == "ConnectionResetError: peer reset the connection"
    second = dispatcher.run_once(waiting.due_at)
    assert (second.delivered, _rows(store)["k1"].status, attempts) == (1, "delivered", [1, 2])


def test_a_handler_that_answers_no_receipt_is_retried(store: Store) -> None:
    """A handler returning something other than a Receipt is a channel bug: the row retries."""
    store.commit({}, {}, [row("k1", due=NOW)])
    def wrong(message: Message) -> Any:
        return "ok"  # the channel bug under test: no Receipt

    stats = Dispatcher(store, {"sms": MockChannel(wrong)}, worker="w").run_once(NOW)
    assert stats.retried == 1
    assert _rows(store)["k1"].last_error == "channel 'sms' returned str, not a Receipt"


def test_a_disabling_answer_stops_the_channel_and_keeps_its_rows(store: Store) -> None:
    """A handler answering disable=True stops the channel: its other rows stay pending, unsent."""
    sent: list[str] = []

    def handler(message: Message) -> Receipt:
        sent.append(message.key)
        return Receipt.failed("410 Gone", disable=True)

    store.commit({}, {}, [row("a", due=NOW), row("b", due=NOW), row("c", due=NOW)])
    stats = Dispatcher(store, {"sms": MockChannel(handler)}, worker="w").run_once(NOW)
    assert (sent, stats.dead, stats.released, stats.disabled) == \
        (["a"], 1, 2, {"sms": "410 Gone"})
    assert {k: r.status for k, r in _rows(store).items()} == \
        {"a": "dead", "b": "pending", "c": "pending"}


def test_a_closed_mock_channel_sends_nothing(store: Store) -> None:
    """After close() a MockChannel refuses to send: the dispatcher keeps the row for later."""
    calls: list[str] = []

    def handler(message: Message) -> Receipt:
        calls.append(message.key)
        return Receipt.delivered()

    channel = MockChannel(handler)
    channel.close()
    store.commit({}, {}, [row("k1", due=NOW)])
    stats = Dispatcher(store, {"sms": channel}, worker="w").run_once(NOW)
    assert (channel.closed, calls, stats.retried) == (True, [], 1)
    assert "closed" in _rows(store)["k1"].last_error


class GroupMock(MockChannel):
    """A MockChannel that is also a GroupSender: it records each group it is handed."""

    def __init__(self, handler: Any) -> None:
        super().__init__(handler, name="crm")
        self.groups: list[list[str]] = []

    def send_group(self, messages: list[Message]) -> list[Receipt]:
        self.groups.append([m.key for m in messages])
        return [self.send(m) for m in messages]


def test_a_group_sender_gets_a_firings_rows_in_one_call(store: Store) -> None:
    """The sends of one campaign firing reach a GroupSender together; others one at a time."""
    rows = [row(f"g{i}", due=NOW, customer=f"c{i}", firing="f1") for i in range(3)]
    rows += [row("solo", due=NOW, customer="c9")]
    store.commit({}, {}, rows)
    channel = GroupMock(lambda m: Receipt.delivered(provider_id="task-1"))
    stats = Dispatcher(store, {"sms": channel}, worker="w").run_once(NOW)
    assert channel.groups == [["g0", "g1", "g2"]]
    assert stats.delivered == 4


def test_without_send_group_a_firing_goes_row_by_row(store: Store) -> None:
    """A channel that is no GroupSender gets each row of a firing through its own send."""
    store.commit({}, {}, [row(f"g{i}", due=NOW, customer=f"c{i}", firing="f1")
                          for i in range(3)])
    keys: list[str] = []

    def handler(message: Message) -> Receipt:
        keys.append(message.key)
        return Receipt.delivered()

    channel = MockChannel(handler)
    Dispatcher(store, {"sms": channel}, worker="w").run_once(NOW)
    assert keys == ["g0", "g1", "g2"]


# -- results read back later: SendResults, TransferResults --------------------------------


class ConfirmedSends(MockChannel):
    """Delivers each send as a task of `staff-01`; the far side says which went out."""

    def __init__(self, outcomes: dict[str, SendOutcome]) -> None:
        super().__init__(lambda m: Receipt.delivered(provider_id="task-7", sender="staff-01"))
        self.outcomes = outcomes
        self.asked: list[tuple[str, str, list[str]]] = []

    def send_outcomes(self, provider_id: str, sender: str,
                      messages: Sequence[Message]) -> list[SendOutcome]:
        self.asked.append((provider_id, sender, [m.customer_id for m in messages]))
        return [self.outcomes[m.customer_id] for m in messages]


def test_campaign_results_count_what_the_channel_says_went_out(store: Store) -> None:
    """Sends delivered as tasks count as sent, failed or waiting as their SendResults say."""
    store.commit({}, {}, [row(f"k{c}", due=NOW, customer=c, firing="f1") for c in "abc"])
    channel = ConfirmedSends({"a": "sent", "b": "failed", "c": "waiting"})
    Dispatcher(store, {"sms": channel}, worker="w").run_once(NOW)
    (firing,), sent = results(store, ["winback"], {"sms": channel})
    assert channel.asked == [("task-7", "staff-01", ["a", "b", "c"])]
    assert (firing.tasks, firing.sent, firing.failed, firing.waiting) == (1, 1, 1, 1)
    assert [(s["customer_id"], s["msgid"], s["sender"]) for s in sent] == \
        [("a", "task-7", "staff-01")]


def test_sends_a_channel_gives_no_outcome_for_are_counted_waiting(store: Store) -> None:
    """A SendResults answer shorter than the task counts the messages it left out as waiting."""
    store.commit({}, {}, [row(f"k{c}", due=NOW, customer=c, firing="f1") for c in "abc"])

    class Forgetful(ConfirmedSends):
        def send_outcomes(self, provider_id: str, sender: str,
                          messages: Sequence[Message]) -> list[SendOutcome]:
            return ["sent"]

    channel = Forgetful({})
    Dispatcher(store, {"sms": channel}, worker="w").run_once(NOW)
    (firing,), sent = results(store, ["winback"], {"sms": channel})
    assert (firing.sent, firing.failed, firing.waiting, len(sent)) == (1, 0, 2, 1)


def _reassign(key: str, customer: str, status: str = "delivered") -> OutboxRow:
    moved = row(key, kind="reassign", channel="crm", customer=customer, status=status,
                from_owner="zhang", to="li")
    moved.message["contact"] = {"crm_id": f"crm-{customer}"}
    return moved


class Transfers(MockChannel):
    """A CRM whose hand-overs complete later; `done` names the customers the successor has."""

    def __init__(self, done: set[str], error: Exception | None = None) -> None:
        super().__init__(lambda m: Receipt.delivered())
        self.done = done
        self.error = error

    def transfer_outcomes(self, from_owner: str, to: str,
                          messages: Sequence[Message]) -> list[TransferOutcome]:
        if self.error is not None:
            raise self.error
        return [TransferOutcome(m.contact["crm_id"] in self.done,
                                f"{from_owner}->{to}: "
                                + ("moved" if m.contact["crm_id"] in self.done else "queued"))
                for m in messages]


def test_handover_status_asks_any_channel_with_transfer_results(store: Store) -> None:
    """Any TransferResults channel (not only WeCom) says who is taken over, in its words."""
    store.commit({}, {}, [_reassign("r1", "c1"), _reassign("r2", "c2"),
                          _reassign("r3", "c3", status="pending")])
    lines = handover_status(store, {"crm": Transfers(done={"crm-c1", "crm-c3"})})
    assert [(x.customer_id, x.platform, x.taken_over) for x in lines] == [
        ("c1", "zhang->li: moved", True), ("c2", "zhang->li: queued", False),
        ("c3", "zhang->li: moved", False)]  # c3's row is not delivered yet


def test_handover_status_reports_a_failing_channel_on_every_customer(store: Store) -> None:
    """When the channel cannot say, every customer of the hand-over shows why, none taken over."""
    store.commit({}, {}, [_reassign("r1", "c1"), _reassign("r2", "c2")])
    channel = Transfers(done={"crm-c1"}, error=TimeoutError("no answer in 10 s"))
    lines = handover_status(store, {"crm": channel})
    assert [(x.platform, x.taken_over) for x in lines] == \
        [("transfer result not available: no answer in 10 s", False)] * 2


def test_handover_status_reports_a_channel_answering_too_few_outcomes(store: Store) -> None:
    """A TransferResults answer that does not match the customers asked is shown, not guessed."""
    store.commit({}, {}, [_reassign("r1", "c1"), _reassign("r2", "c2")])

    class Short(Transfers):
        def transfer_outcomes(self, from_owner: str, to: str,
                              messages: Sequence[Message]) -> list[TransferOutcome]:
            return [TransferOutcome(True, "moved")]

    lines = handover_status(store, {"crm": Short(done=set())})
    assert [(x.platform, x.taken_over) for x in lines] == \
        [("the channel answered 1 transfer outcomes for 2 customers", False)] * 2


def test_handover_status_without_transfer_results_trusts_the_outbox(store: Store) -> None:
    """A channel that cannot be asked: a delivered reassign row counts as taken over."""
    store.commit({}, {}, [_reassign("r1", "c1"), _reassign("r2", "c2", status="dead")])
    lines = handover_status(store, {"crm": MockChannel(lambda m: Receipt.delivered())})
    assert [(x.platform, x.taken_over) for x in lines] == [("-", True), ("-", False)]


# -- what the shipped channels declare ---------------------------------------------------


def test_the_shipped_channels_declare_their_capabilities(tmp_path: Path) -> None:
    """WeCom has every capability, the HTTP channels close, the fakes hold nothing to close."""
    wecom = WecomChannel("wecom", {"corp_id": "ww1", "secret_env": "S"}, {"S": "secret"})
    hook = WebhookChannel("hook", {"url": "https://hooks.example/x"}, {})
    sms = SmsChannel("sms", {"url": "https://sms.example/send"}, {})
    try:
        assert all(isinstance(wecom, p) for p in
                   (Closable, GroupSender, SendResults, TransferResults))
        for channel in (hook, sms):
            assert isinstance(channel, Closable)
            assert not isinstance(channel, GroupSender | SendResults | TransferResults)
        memory = MemoryChannel()
        assert not isinstance(memory, Closable | GroupSender | SendResults | TransferResults)
        assert isinstance(MockChannel(lambda m: Receipt.delivered()), Closable)
    finally:
        wecom.close()
        hook.close()
        sms.close()
    for factory in (WecomChannel, WebhookChannel, SmsChannel, SmtpChannel):
        assert isinstance(factory, CheckableFactory), factory
    assert isinstance(WecomChannel, TagMirror) and not isinstance(WebhookChannel, TagMirror)
    assert WecomChannel.mirrored_tags({"tag_ids": {"高价值": "et1", "沉睡": "et2"}}) == \
        {"高价值", "沉睡"}


# -- HTTP channels send through the transport they are given ------------------------------


def _message(kind: str = "send", **contact: Any) -> Message:
    return Message(key="retail:1:winback:c1:1:0", kind=kind, channel="x", customer_id="c1",
                   rule="winback", time="2024-05-01T10:00:00+08:00",
                   body={"message": "您好，好久不见"}, contact=contact, owner="zhangsan")


def test_webhook_channel_posts_through_the_given_transport() -> None:
    """WebhookChannel(transport=MockTransport) sends its signed request there, not to the net."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(503 if len(requests) == 1 else 204, headers={"Retry-After": "30"})

    with WebhookChannel("hook", {"url": "https://hooks.example/sopkit"}, {},
                        transport=httpx.MockTransport(handler)) as channel:
        busy = channel.send(_message())
        done = channel.send(_message())
    assert (busy.status, busy.retry_after, done.status) == ("retry", 30.0, "delivered")
    assert str(requests[0].url) == "https://hooks.example/sopkit"
    assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"]
    assert json.loads(requests[0].content)["data"]["key"] == "retail:1:winback:c1:1:0"


def test_sms_channel_posts_through_the_given_transport() -> None:
    """SmsChannel(transport=MockTransport): the gateway's id becomes the provider id."""
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "sms-9"})

    with SmsChannel("sms", {"url": "https://sms.example/send", "sign": "某店"}, {},
                    transport=httpx.MockTransport(handler)) as channel:
        receipt = channel.send(_message(phone="13812345678"))
    assert (receipt.status, receipt.provider_id) == ("delivered", "sms-9")
    assert bodies == [{"to": "13812345678", "text": "【某店】您好，好久不见",
                       "key": "retail:1:winback:c1:1:0"}]


def test_wecom_channel_calls_through_the_given_transport() -> None:
    """WecomChannel(transport=MockTransport) fetches its token and calls WeCom there."""
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/gettoken"):
            return httpx.Response(200, json={"errcode": 0, "access_token": "tok-1",
                                             "expires_in": 7200})
        assert request.url.params["access_token"] == "tok-1"
        return httpx.Response(200, json={"errcode": 0, "msgid": "msg-42", "fail_list": []})

    with WecomChannel("wecom", {"corp_id": "ww1", "secret_env": "S"}, {"S": "secret"},
                      transport=httpx.MockTransport(handler)) as channel:
        receipt = channel.send(_message(external_userid="wmAAAA"))
    assert (receipt.status, receipt.provider_id) == ("delivered", "msg-42")
    assert paths == ["/cgi-bin/gettoken", "/cgi-bin/externalcontact/add_msg_template"]


def test_a_transport_error_is_a_retry_for_every_http_channel() -> None:
    """A transport that cannot connect makes each HTTP channel answer retry, never raise."""
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    channels: list[WebhookChannel | SmsChannel | WecomChannel] = [
        WebhookChannel("hook", {"url": "https://hooks.example/x"}, {}, transport=transport),
        SmsChannel("sms", {"url": "https://sms.example/send"}, {}, transport=transport),
        WecomChannel("wecom", {"corp_id": "ww1", "secret_env": "S"}, {"S": "secret"},
                     transport=transport)]
    try:
        receipts = [c.send(_message(phone="13812345678", external_userid="wmA"))
                    for c in channels]
    finally:
        for channel in channels:
            channel.close()
    assert [r.status for r in receipts] == ["retry"] * 3
    assert all("refused" in r.detail for r in receipts)


# -- commands close the channels they build -----------------------------------------------


WECOM_TABLE = '''
[channels.wecom]
type = "wecom"
corp_id = "{corp}"
secret_env = "SOPKIT_TEST_WECOM_SECRET"
base_url = "{url}"
'''


def test_handover_status_closes_its_channels(tmp_path: Path, store: Store) -> None:
    """`sopkit handover status` leaves no WeCom connection open behind it (no ResourceWarning)."""
    with WecomFake() as fake:
        fake.add_staff("li", "wang", "zhang")
        fake.resign("zhang")
        fake.add_customer("wmA", owner="zhang")
        with WecomChannel("wecom", {"corp_id": fake.corp_id, "secret_env": "S",
                                    "base_url": fake.url}, {"S": fake.secret}) as channel:
            channel.transfer("zhang", "li", ["wmA"])
        fake.set_transfer_status("wmA", 1)
        moved = row("r1", kind="reassign", channel="wecom", customer="c1",
                    status="delivered", from_owner="zhang", to="li")
        moved.message["contact"] = {"external_userid": "wmA"}
        store.commit({}, {}, [moved])
        text = (DATA / "live" / "handover.toml").read_text(encoding="utf-8").replace(
            'team = ["li", "wang", "zhang"]', 'team = ["li", "wang", "zhang"]\n'
            'channel = "wecom"') + WECOM_TABLE.format(corp=fake.corp_id, url=fake.url)
        playbook = tmp_path / "handover.toml"
        playbook.write_text(text, encoding="utf-8")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            result = CliRunner().invoke(
                app, ["handover", "status", str(playbook), "--store", str(store.url),
                      "--all", "--output", "jsonl"],
                env={"SOPKIT_TEST_WECOM_SECRET": fake.secret})
            code, output = result.exit_code, result.output
            del result  # its traceback holds the command's frame, and so its channels
            gc.collect()  # an unclosed socket says so when it is collected
    assert code == 0, output
    (line,) = [json.loads(x) for x in output.splitlines()]
    assert (line["customer_id"], line["taken_over"]) == ("c1", True)
    assert line["platform"].startswith("1 接替完毕")
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize("answer", [Receipt.delivered(), Receipt.failed("no")])
def test_mock_channel_returns_exactly_what_its_handler_answers(answer: Receipt) -> None:
    """MockChannel.send passes the handler's receipt through untouched."""
    assert MockChannel(lambda m: answer).send(_message()) is answer
