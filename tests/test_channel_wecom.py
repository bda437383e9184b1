"""The wecom channel against a fake WeCom server over real HTTP (tests/wecom_fake.py)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from wecom_fake import (
    ADD_MSG_TEMPLATE,
    GETTOKEN,
    MARK_TAG,
    MESSAGE_SEND,
    TRANSFER_CUSTOMER,
    TRANSFER_RESULT,
    ManualClock,
    WecomFake,
)

from sopkit.channels import ChannelConfigError, Message, Receipt, build
from sopkit.channels._wecom import TRANSFER_STATUS, WecomChannel, WecomError

SECRET_VAR = "SOPKIT_WECOM_SECRET"
TAGS = {"高价值": "etVIP0001", "沉睡客户": "etSLEEP001"}

MakeChannel = Callable[..., WecomChannel]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[WecomFake]:
    with WecomFake(clock=clock) as server:
        server.add_staff("zhangsan", "lisi", "wangwu")
        server.add_customer("wmAAAA", owner="zhangsan")
        server.add_customer("wmBBBB", owner="lisi")
        server.add_tags(*TAGS.values())
        yield server


@pytest.fixture
def make_channel(fake: WecomFake, clock: ManualClock) -> Iterator[MakeChannel]:
    made: list[WecomChannel] = []

    def make(secret: str | None = None, **config: Any) -> WecomChannel:
        table: dict[str, Any] = {"corp_id": fake.corp_id, "secret_env": SECRET_VAR,
                                 "agent_id": fake.agent_id, "base_url": fake.url,
                                 "tag_ids": TAGS}
        table.update(config)
        channel = WecomChannel("wecom", table, {SECRET_VAR: secret or fake.secret},
                               clock=clock)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        channel.close()


def msg(kind: str, body: dict[str, Any] | None = None, *, customer: str = "c-001",
        external: str | None = "wmAAAA", owner: str | None = "zhangsan",
        key: str = "", attempt: int = 1) -> Message:
    contact = {"external_userid": external} if external is not None else {}
    return Message(key=key or f"retail:1:rule_{kind}:{customer}:1:0", kind=kind,
                   channel="wecom", customer_id=customer, rule=f"rule_{kind}",
                   time="2024-06-10T10:00:00", body=body or {}, contact=contact, owner=owner,
                   attempt=attempt)


def send_msg(text: str = "生日快乐!送您一张优惠券", **kw: Any) -> Message:
    return msg("send", {"message": text}, **kw)


def task_msg(note: str = "请电话回访", assignee: str = "lisi", **kw: Any) -> Message:
    return msg("task", {"note": note, "assignee": assignee, "due": "2024-06-12T10:00:00"}, **kw)


def tokens_used(fake: WecomFake, endpoint: str) -> list[str]:
    return [c.query.get("access_token", "") for c in fake.calls if c.endpoint == endpoint]


# -- tokens ------------------------------------------------------------------------------


def test_token_is_fetched_once_and_reused(fake: WecomFake, make_channel: MakeChannel) -> None:
    """Several calls share one access_token: gettoken is called once."""
    channel = make_channel()
    for _ in range(3):
        assert channel.send(send_msg()).status == "delivered"
    assert fake.count(GETTOKEN) == 1
    used = tokens_used(fake, ADD_MSG_TEMPLATE)
    assert len(used) == 3 and len(set(used)) == 1 and used[0] in fake.issued


def test_token_is_refreshed_before_it_expires(fake: WecomFake, make_channel: MakeChannel,
                                              clock: ManualClock) -> None:
    """Shortly before expires_in runs out the channel fetches a token instead of failing."""
    channel = make_channel()
    assert channel.send(send_msg()).status == "delivered"
    clock.advance(7200 - 60)  # inside the safety margin, still valid at WeCom
    assert channel.send(send_msg()).status == "delivered"
    assert fake.count(GETTOKEN) == 2
    assert all(c.answer["errcode"] == 0 for c in fake.calls)


def test_expired_token_42001_is_refreshed_transparently(fake: WecomFake,
                                                        make_channel: MakeChannel) -> None:
    """A token WeCom expired early (42001) is replaced and the call repeated once."""
    channel = make_channel()
    assert channel.send(send_msg()).status == "delivered"
    fake.expire_tokens()
    receipt = channel.send(send_msg())
    assert receipt.status == "delivered"
    answers = [c.answer["errcode"] for c in fake.calls if c.endpoint == ADD_MSG_TEMPLATE]
    assert answers == [0, 42001, 0]
    used = tokens_used(fake, ADD_MSG_TEMPLATE)
    assert used[1] != used[2] and fake.count(GETTOKEN) == 2


def test_invalid_token_40014_is_refreshed_transparently(fake: WecomFake,
                                                        make_channel: MakeChannel) -> None:
    """A token WeCom no longer knows (40014) is replaced and the call repeated once."""
    channel = make_channel()
    assert channel.send(task_msg()).status == "delivered"
    fake.revoke_tokens()
    assert channel.send(task_msg(key="other")).status == "delivered"
    answers = [c.answer["errcode"] for c in fake.calls if c.endpoint == MESSAGE_SEND]
    assert answers == [0, 40014, 0]
    assert len(fake.inbox["lisi"]) == 2


def test_token_refresh_is_tried_only_once(fake: WecomFake, make_channel: MakeChannel) -> None:
    """When a fresh token is refused too, the channel asks for a retry instead of looping."""
    channel = make_channel()
    fake.fail_next(ADD_MSG_TEMPLATE, 42001, times=2)
    receipt = channel.send(send_msg())
    assert receipt.status == "retry"
    assert "42001" in receipt.detail
    assert fake.count(ADD_MSG_TEMPLATE) == 2 and fake.count(GETTOKEN) == 2


# -- passing and permanent errors --------------------------------------------------------


@pytest.mark.parametrize(("errcode", "words"), [(-1, "system busy"), (45009, "frequency"),
                                                (45033, "concurrency")])
def test_busy_and_limits_ask_for_a_retry(fake: WecomFake, make_channel: MakeChannel,
                                         errcode: int, words: str) -> None:
    """-1, 45009 and 45033 are passing: retry with a delay, and the next attempt delivers."""
    channel = make_channel()
    fake.fail_next(ADD_MSG_TEMPLATE, errcode)
    first = channel.send(send_msg())
    assert first.status == "retry"
    assert first.retry_after is not None and first.retry_after > 0
    assert str(errcode) in first.detail and words in first.detail
    assert channel.send(send_msg(attempt=2)).status == "delivered"
    assert len(fake.templates) == 1


def test_frequency_limit_waits_longer_than_concurrency_limit(
        fake: WecomFake, make_channel: MakeChannel) -> None:
    """45009 (calls per period) suggests a longer wait than 45033 (calls at once)."""
    channel = make_channel()
    fake.fail_next(MESSAGE_SEND, 45009)
    fake.fail_next(MESSAGE_SEND, 45033)
    frequency, concurrency = channel.send(task_msg()), channel.send(task_msg())
    assert frequency.retry_after is not None and concurrency.retry_after is not None
    assert frequency.retry_after > concurrency.retry_after


def test_busy_gettoken_asks_for_a_retry(fake: WecomFake, make_channel: MakeChannel) -> None:
    """A busy token endpoint is passing too."""
    fake.fail_next(GETTOKEN, -1)
    receipt = make_channel().send(send_msg())
    assert receipt.status == "retry" and "gettoken" in receipt.detail
    assert fake.count(ADD_MSG_TEMPLATE) == 0


def test_invalid_secret_40001_fails_with_a_hint(fake: WecomFake,
                                                make_channel: MakeChannel) -> None:
    """A wrong secret fails permanently, names errcode 40001 and the variable to fix."""
    receipt = make_channel(secret="not-the-secret").send(send_msg())
    assert receipt.status == "failed"
    assert "40001" in receipt.detail and "invalid credential" in receipt.detail
    assert SECRET_VAR in receipt.detail and "not-the-secret" not in receipt.detail
    assert fake.count(ADD_MSG_TEMPLATE) == 0


def test_wrong_corp_id_40013_fails_with_a_hint(make_channel: MakeChannel) -> None:
    """A wrong corp_id fails permanently and points at the 企业ID."""
    receipt = make_channel(corp_id="ww-someone-else").send(send_msg())
    assert receipt.status == "failed"
    assert "40013" in receipt.detail and "corp_id" in receipt.detail


def test_http_error_asks_for_a_retry(fake: WecomFake, make_channel: MakeChannel) -> None:
    """An HTTP error (a proxy's 502) is passing."""
    channel = make_channel()
    fake.http_error_next(ADD_MSG_TEMPLATE, 502)
    receipt = channel.send(send_msg())
    assert receipt.status == "retry" and "HTTP 502" in receipt.detail


def test_timeout_asks_for_a_retry(fake: WecomFake, make_channel: MakeChannel) -> None:
    """No answer within `timeout` is passing."""
    channel = make_channel(timeout=0.2)
    fake.delay_next(MESSAGE_SEND, 3.0)
    receipt = channel.send(task_msg())
    assert receipt.status == "retry" and "timeout" in receipt.detail


def test_unreachable_server_asks_for_a_retry(make_channel: MakeChannel) -> None:
    """A refused connection is passing."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    receipt = make_channel(base_url=f"http://127.0.0.1:{port}").send(send_msg())
    assert receipt.status == "retry" and "gettoken" in receipt.detail


# -- send: add_msg_template --------------------------------------------------------------


def test_send_creates_a_group_message_task_with_the_documented_body(
        fake: WecomFake, make_channel: MakeChannel) -> None:
    """send posts chat_type single, the customer's external_userid, sender = owner, text."""
    receipt = make_channel().send(send_msg("生日快乐!"))
    assert fake.bodies(ADD_MSG_TEMPLATE) == [{
        "chat_type": "single", "external_userid": ["wmAAAA"], "sender": "zhangsan",
        "text": {"content": "生日快乐!"}}]
    assert receipt.status == "delivered"
    assert receipt.provider_id in fake.templates
    assert receipt.data == {"fail_list": []}


def test_send_puts_the_title_above_the_message(fake: WecomFake,
                                               make_channel: MakeChannel) -> None:
    """A rendered title becomes the first line of the text."""
    make_channel().send(msg("send", {"message": "送您一张券", "title": "生日礼遇"}))
    assert fake.bodies(ADD_MSG_TEMPLATE)[0]["text"]["content"] == "生日礼遇\n送您一张券"


def test_send_to_a_customer_in_fail_list_fails(fake: WecomFake,
                                               make_channel: MakeChannel) -> None:
    """A customer WeCom lists in fail_list (not the sender's customer) is a failure."""
    receipt = make_channel().send(send_msg(external="wmBBBB", owner="zhangsan"))
    assert receipt.status == "failed"
    assert "fail_list" in receipt.detail and "zhangsan" in receipt.detail
    assert next(iter(fake.templates.values()))["fail_list"] == ["wmBBBB"]


def test_send_without_owner_fails_without_calling(fake: WecomFake,
                                                  make_channel: MakeChannel) -> None:
    """No owner, no sender: failed with the reason, nothing sent."""
    receipt = make_channel().send(send_msg(owner=None))
    assert receipt.status == "failed" and "customer has no owner" in receipt.detail
    assert fake.count(ADD_MSG_TEMPLATE) == 0


def test_send_without_external_userid_fails_without_calling(fake: WecomFake,
                                                            make_channel: MakeChannel) -> None:
    """No external_userid in the profile: failed, naming the attribute to set."""
    receipt = make_channel().send(send_msg(external=None))
    assert receipt.status == "failed"
    assert "external_userid" in receipt.detail and "external_userid_attribute" in receipt.detail
    assert fake.count(ADD_MSG_TEMPLATE) == 0


def test_external_userid_attribute_is_configurable(fake: WecomFake,
                                                   make_channel: MakeChannel) -> None:
    """external_userid_attribute names the profile attribute that holds the id."""
    channel = make_channel(external_userid_attribute="wecom_id")
    message = Message(key="k", kind="send", channel="wecom", customer_id="c-9", rule="r",
                      time="t", body={"message": "hi"}, contact={"wecom_id": "wmAAAA"},
                      owner="zhangsan")
    assert channel.send(message).status == "delivered"
    assert fake.bodies(ADD_MSG_TEMPLATE)[0]["external_userid"] == ["wmAAAA"]
    missing = channel.send(send_msg())  # has external_userid, not wecom_id
    assert missing.status == "failed" and "'wecom_id'" in missing.detail


def test_too_long_message_fails_before_calling(fake: WecomFake,
                                               make_channel: MakeChannel) -> None:
    """A text over WeCom's 4000-byte limit fails with its size, nothing sent."""
    receipt = make_channel().send(send_msg("优" * 1400))  # 4200 bytes in UTF-8
    assert receipt.status == "failed" and "4200 bytes" in receipt.detail
    assert fake.count(ADD_MSG_TEMPLATE) == 0


def test_chinese_text_travels_as_utf8_and_arrives_intact(
        fake: WecomFake, make_channel: MakeChannel) -> None:
    """Chinese text is sent as raw UTF-8 (WeCom rejects \\uxxxx escapes) and arrives intact."""
    text = "亲爱的李雷,您的会员卡将于 6 月 30 日到期,续费享 8 折 🎉"
    assert make_channel().send(send_msg(text)).status == "delivered"
    raw = next(c.raw for c in fake.calls if c.endpoint == ADD_MSG_TEMPLATE)
    assert text.encode("utf-8") in raw and b"\\u" not in raw
    assert next(iter(fake.templates.values()))["content"] == text


def test_the_fake_rejects_escaped_unicode_like_wecom(fake: WecomFake) -> None:
    """The fake answers 40033 to \\uxxxx escapes, as WeCom documents (so the test above bites)."""
    token = httpx.get(f"{fake.url}/cgi-bin/gettoken",
                      params={"corpid": fake.corp_id, "corpsecret": fake.secret}).json()
    body = json.dumps({"sender": "zhangsan", "external_userid": ["wmAAAA"],
                       "text": {"content": "你好"}})  # ensure_ascii: \u4f60\u597d
    answer = httpx.post(f"{fake.url}/cgi-bin/{ADD_MSG_TEMPLATE}",
                        params={"access_token": token["access_token"]}, content=body).json()
    assert answer["errcode"] == 40033


def test_send_result_reports_what_the_sender_did(fake: WecomFake,
                                                 make_channel: MakeChannel) -> None:
    """send_result reads get_groupmsg_send_result: 0 until the sender confirms, then 1."""
    channel = make_channel()
    receipt = channel.send(send_msg())
    assert receipt.provider_id is not None
    assert channel.send_result(receipt.provider_id, "zhangsan") == {"wmAAAA": 0}
    fake.confirm_template(receipt.provider_id)
    assert channel.send_result(receipt.provider_id, "zhangsan") == {"wmAAAA": 1}


def test_send_outcomes_read_each_customers_send_result(fake: WecomFake,
                                                      make_channel: MakeChannel) -> None:
    """send_outcomes (SendResults): 1 sent, 2 or 3 failed, 0 or no record still waiting."""
    for eu in ("wmCCCC", "wmDDDD"):
        fake.add_customer(eu, owner="zhangsan")
    channel = make_channel()
    messages = [send_msg(external=eu, customer=f"c-{eu}", key=f"k-{eu}")
                for eu in ("wmAAAA", "wmCCCC", "wmDDDD")]
    receipts = channel.send_group(messages)
    msgid = receipts[0].provider_id
    assert msgid is not None and {r.provider_id for r in receipts} == {msgid}
    with fake._lock:  # the sender confirms; WeCom reports one customer as over the limit
        fake.templates[msgid]["results"]["wmAAAA"] = {"status": 1, "send_time": 1}
        fake.templates[msgid]["results"]["wmCCCC"] = {"status": 3, "send_time": 0}
    unknown = send_msg(external=None, customer="c-none")
    assert channel.send_outcomes(msgid, "zhangsan", [*messages, unknown]) == \
        ["sent", "failed", "waiting", "waiting"]


# -- task: message/send ------------------------------------------------------------------


def test_task_sends_an_app_message_with_duplicate_check(fake: WecomFake,
                                                        make_channel: MakeChannel) -> None:
    """task posts text to the assignee with agentid and enable_duplicate_check."""
    receipt = make_channel().send(task_msg("请电话回访王女士", assignee="lisi"))
    body = fake.bodies(MESSAGE_SEND)[0]
    assert body["touser"] == "lisi" and body["msgtype"] == "text"
    assert body["agentid"] == fake.agent_id
    assert body["enable_duplicate_check"] == 1 and body["duplicate_check_interval"] == 1800
    assert receipt.status == "delivered" and receipt.provider_id
    (alert,) = fake.inbox["lisi"]
    assert "请电话回访王女士" in alert["content"] and "c-001" in alert["content"]
    assert "2024-06-12" in alert["content"]


def test_task_defaults_to_the_owner(fake: WecomFake, make_channel: MakeChannel) -> None:
    """Without an assignee the alert goes to the customer's owner."""
    make_channel().send(msg("task", {"note": "回访"}, owner="wangwu"))
    assert len(fake.inbox["wangwu"]) == 1


def test_retried_task_alert_is_shown_once(fake: WecomFake, make_channel: MakeChannel,
                                          clock: ManualClock) -> None:
    """A retried alert within the interval is accepted but WeCom does not show it twice."""
    channel = make_channel()
    first = channel.send(task_msg())
    again = channel.send(task_msg(attempt=2))  # e.g. the first answer was lost
    assert first.status == again.status == "delivered"
    assert len(fake.inbox["lisi"]) == 1 and len(fake.suppressed) == 1
    assert fake.bodies(MESSAGE_SEND)[0] == fake.bodies(MESSAGE_SEND)[1]
    clock.advance(1801)  # outside the interval WeCom shows it again
    channel.send(task_msg(attempt=3))
    assert len(fake.inbox["lisi"]) == 2


def test_different_tasks_with_the_same_note_are_not_merged(
        fake: WecomFake, make_channel: MakeChannel) -> None:
    """Two tasks (different keys) with equal notes both reach the assignee."""
    channel = make_channel()
    channel.send(task_msg(key="retail:1:call:c-001:1:0"))
    channel.send(task_msg(key="retail:1:call:c-001:2:0"))
    assert len(fake.inbox["lisi"]) == 2 and fake.suppressed == []


def test_duplicate_check_interval_is_configurable_up_to_four_hours(
        fake: WecomFake, make_channel: MakeChannel) -> None:
    """duplicate_check_interval goes into the request; more than 4 hours is a config error."""
    make_channel(duplicate_check_interval=600).send(task_msg())
    assert fake.bodies(MESSAGE_SEND)[0]["duplicate_check_interval"] == 600
    with pytest.raises(ChannelConfigError, match="4 hours"):
        make_channel(duplicate_check_interval=5 * 3600)


def test_task_to_an_unknown_assignee_fails(make_channel: MakeChannel) -> None:
    """An assignee WeCom does not know (81013) fails with the code's meaning."""
    receipt = make_channel().send(task_msg(assignee="nobody"))
    assert receipt.status == "failed"
    assert "81013" in receipt.detail and "no valid recipient" in receipt.detail


def test_task_without_agent_id_fails(fake: WecomFake, make_channel: MakeChannel) -> None:
    """Staff alerts need the app's agent_id; without it the task fails, naming the key."""
    receipt = make_channel(agent_id=None).send(task_msg())
    assert receipt.status == "failed" and "agent_id" in receipt.detail
    assert fake.count(MESSAGE_SEND) == 0


# -- tag / untag: mark_tag ---------------------------------------------------------------


def test_tag_and_untag_mark_the_mapped_tag_id(fake: WecomFake,
                                              make_channel: MakeChannel) -> None:
    """tag adds and untag removes the WeCom tag id mapped from the tag name."""
    channel = make_channel()
    assert channel.send(msg("tag", {"tag": "高价值"})).status == "delivered"
    assert fake.tags[("zhangsan", "wmAAAA")] == {"etVIP0001"}
    assert channel.send(msg("untag", {"tag": "高价值"})).status == "delivered"
    assert fake.tags[("zhangsan", "wmAAAA")] == set()
    assert fake.bodies(MARK_TAG) == [
        {"userid": "zhangsan", "external_userid": "wmAAAA", "add_tag": ["etVIP0001"]},
        {"userid": "zhangsan", "external_userid": "wmAAAA", "remove_tag": ["etVIP0001"]}]


def test_unmapped_tag_fails_naming_tag_and_table(fake: WecomFake,
                                                 make_channel: MakeChannel) -> None:
    """A tag with no tag_ids entry fails, naming the tag and the key to add it to."""
    receipt = make_channel().send(msg("tag", {"tag": "高价值客户"}))
    assert receipt.status == "failed"
    assert "'高价值客户'" in receipt.detail and "tag_ids" in receipt.detail
    assert "did you mean '高价值'" in receipt.detail
    assert fake.count(MARK_TAG) == 0


def test_tag_with_a_wrong_tag_id_fails_with_a_hint(make_channel: MakeChannel) -> None:
    """A mapped id WeCom does not know (40068) fails and points at tag_ids."""
    receipt = make_channel(tag_ids={"高价值": "etTYPO"}).send(msg("tag", {"tag": "高价值"}))
    assert receipt.status == "failed"
    assert "40068" in receipt.detail and "tag_ids" in receipt.detail


def test_tag_for_a_customer_of_someone_else_fails(make_channel: MakeChannel) -> None:
    """Tagging through a member who did not add the customer fails (84061)."""
    receipt = make_channel().send(msg("tag", {"tag": "高价值"}, external="wmBBBB"))
    assert receipt.status == "failed" and "84061" in receipt.detail


def test_tag_without_owner_fails(fake: WecomFake, make_channel: MakeChannel) -> None:
    """Tags are set on behalf of the owner; none means failed, nothing sent."""
    receipt = make_channel().send(msg("tag", {"tag": "高价值"}, owner=None))
    assert receipt.status == "failed" and "no owner" in receipt.detail
    assert fake.count(MARK_TAG) == 0


# -- reassign: resigned/transfer_customer ------------------------------------------------


def reassign_msg(external: str = "wmAAAA", from_owner: str | None = "zhangsan",
                 to: str = "lisi") -> Message:
    return msg("reassign", {"from_owner": from_owner, "to": to}, external=external, owner=to)


def test_reassign_starts_a_transfer(fake: WecomFake, make_channel: MakeChannel) -> None:
    """reassign hands a resigned member's customer over; delivered as a pending transfer."""
    fake.resign("zhangsan")
    receipt = make_channel().send(reassign_msg())
    assert fake.bodies(TRANSFER_CUSTOMER) == [{
        "handover_userid": "zhangsan", "takeover_userid": "lisi",
        "external_userid": ["wmAAAA"]}]
    assert receipt.status == "delivered"
    assert receipt.data["transfer"] == "pending" and "24 h" in receipt.detail
    assert [(t.handover, t.takeover, t.status) for t in fake.transfers] == [
        ("zhangsan", "lisi", 2)]


def test_reassign_of_an_unknown_customer_fails_with_the_meaning(
        fake: WecomFake, make_channel: MakeChannel) -> None:
    """A per-customer errcode (40096) fails that customer with the code's meaning."""
    fake.resign("zhangsan")
    receipt = make_channel().send(reassign_msg(external="wmNOBODY"))
    assert receipt.status == "failed"
    assert "40096" in receipt.detail and "invalid external_userid" in receipt.detail


def test_reassign_from_a_member_who_has_not_left_fails(make_channel: MakeChannel) -> None:
    """Only a resigned member's customers can be transferred this way (40097)."""
    receipt = make_channel().send(reassign_msg())
    assert receipt.status == "failed"
    assert "40097" in receipt.detail and "离职" in receipt.detail


def test_reassign_without_previous_owner_fails(fake: WecomFake,
                                               make_channel: MakeChannel) -> None:
    """No from_owner: nothing to hand over, failed without a call."""
    receipt = make_channel().send(reassign_msg(from_owner=None))
    assert receipt.status == "failed" and "from_owner" in receipt.detail
    assert fake.count(TRANSFER_CUSTOMER) == 0


def test_phone_number_userids_are_masked_in_receipts(fake: WecomFake,
                                                     make_channel: MakeChannel) -> None:
    """Userids that are mobile numbers appear masked in receipt details."""
    fake.add_customer("wmPHONE", owner="13812345678")
    fake.resign("13812345678")
    receipt = make_channel().send(reassign_msg(external="wmPHONE", from_owner="13812345678"))
    assert receipt.status == "delivered"
    assert fake.transfers[0].handover == "13812345678"
    assert "13812345678" not in receipt.detail and "138****5678" in receipt.detail


def test_transfer_of_250_customers_takes_three_calls(fake: WecomFake,
                                                     make_channel: MakeChannel) -> None:
    """transfer() splits 250 customers into calls of 100, 100 and 50; one result each."""
    ids = [f"wm{i:04d}" for i in range(250)]
    for eu in ids:
        fake.add_customer(eu, owner="zhangsan")
    fake.resign("zhangsan")
    results = make_channel().transfer("zhangsan", "lisi", [*ids, "wmNOBODY", ids[0]])
    assert [len(b["external_userid"]) for b in fake.bodies(TRANSFER_CUSTOMER)] == [100, 100, 51]
    assert list(results) == [*ids, "wmNOBODY"]
    assert all(results[eu].status == "delivered" for eu in ids)
    assert results["wmNOBODY"].status == "failed"


def test_a_failed_transfer_call_marks_only_its_customers(fake: WecomFake,
                                                         make_channel: MakeChannel) -> None:
    """A batch answered 45033 is retry for its 100 customers; the other batches go through."""
    ids = [f"wm{i:04d}" for i in range(150)]
    for eu in ids:
        fake.add_customer(eu, owner="zhangsan")
    fake.resign("zhangsan")
    fake.fail_next(TRANSFER_CUSTOMER, 45033)
    results = make_channel().transfer("zhangsan", "lisi", ids)
    assert {results[eu].status for eu in ids[:100]} == {"retry"}
    assert {results[eu].status for eu in ids[100:]} == {"delivered"}


def test_transfer_result_pages_through_every_customer(fake: WecomFake,
                                                      make_channel: MakeChannel,
                                                      clock: ManualClock) -> None:
    """transfer_result follows next_cursor and reports each customer's status."""
    ids = [f"wm{i:04d}" for i in range(250)]
    for eu in ids:
        fake.add_customer(eu, owner="zhangsan")
    fake.resign("zhangsan")
    fake.page_size = 100
    channel = make_channel()
    channel.transfer("zhangsan", "lisi", ids)
    assert channel.transfer_result("zhangsan", "lisi") == {eu: 2 for eu in ids}
    cursors = [b.get("cursor") for b in fake.bodies(TRANSFER_RESULT)]
    assert len(cursors) == 3 and cursors[0] is None and None not in cursors[1:]
    fake.set_transfer_status(ids[7], 3)  # the customer refused
    clock.advance(24 * 3600)
    statuses = channel.transfer_result("zhangsan", "lisi")
    assert statuses[ids[7]] == 3 and statuses[ids[8]] == 1
    assert TRANSFER_STATUS[3].startswith("客户拒绝")


def test_transfer_outcomes_say_who_is_taken_over(fake: WecomFake,
                                                 make_channel: MakeChannel) -> None:
    """transfer_outcomes (TransferResults): done only at 1 接替完毕, each status in words."""
    fake.add_customer("wmEEEE", owner="zhangsan")
    fake.resign("zhangsan")
    channel = make_channel()
    channel.transfer("zhangsan", "lisi", ["wmAAAA", "wmEEEE"])
    fake.set_transfer_status("wmAAAA", 1)
    outcomes = channel.transfer_outcomes("zhangsan", "lisi", [
        msg("reassign", external=eu, customer=f"c-{eu}") for eu in ("wmAAAA", "wmEEEE", "wmZZZZ")])
    assert [(o.done, o.detail.split(" (")[0]) for o in outcomes] == [
        (True, "1 接替完毕"), (False, "2 等待接替"), (False, "no transfer record yet")]


def test_transfer_result_raises_a_clean_error(fake: WecomFake, make_channel: MakeChannel,
                                              clock: ManualClock) -> None:
    """A failing transfer_result raises WecomError saying whether a retry can help."""
    fake.fail_next(TRANSFER_RESULT, -1)
    with pytest.raises(WecomError) as info:
        make_channel().transfer_result("zhangsan", "lisi")
    assert info.value.retryable and info.value.errcode == -1


# -- secrets never leak ------------------------------------------------------------------


def test_secret_and_token_never_appear_in_receipts_errors_or_logs(
        fake: WecomFake, make_channel: MakeChannel, clock: ManualClock,
        caplog: pytest.LogCaptureFixture) -> None:
    """Across successes and every kind of failure, no receipt, error or log holds them."""
    caplog.set_level(logging.DEBUG)
    channel = make_channel(timeout=0.2)
    fake.resign("wangwu")
    fake.add_customer("wmCCCC", owner="wangwu")
    receipts: list[Receipt] = [channel.send(send_msg()), channel.send(task_msg()),
                               channel.send(msg("tag", {"tag": "高价值"}))]
    for code in (-1, 42001, 45009, 45033, 40014, 48002, 60020):
        fake.fail_next(ADD_MSG_TEMPLATE, code)
        receipts.append(channel.send(send_msg()))
    fake.expire_tokens()
    receipts.append(channel.send(send_msg()))
    fake.http_error_next(MARK_TAG, 503)
    receipts.append(channel.send(msg("tag", {"tag": "高价值"})))
    fake.delay_next(MESSAGE_SEND, 2.0)
    receipts.append(channel.send(task_msg()))
    receipts.append(channel.send(reassign_msg(external="wmCCCC", from_owner="wangwu")))
    errors = []
    fake.fail_next(TRANSFER_RESULT, 45009)
    try:
        channel.transfer_result("wangwu", "lisi")
    except WecomError as exc:
        errors.append(str(exc))
    receipts.append(make_channel(secret="wrong-secret-XYZ").send(send_msg()))
    secrets_ = [fake.secret, "wrong-secret-XYZ", *fake.issued]
    assert len(fake.issued) >= 2 and errors
    texts = [json.dumps(r.to_json(), ensure_ascii=False) for r in receipts] + errors
    texts += [record.getMessage() for record in caplog.records]
    logged = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("corpsecret=***" in t for t in logged)  # httpx logged the URLs, redacted
    assert any("access_token=***" in t for t in logged)
    for text in texts:
        for value in secrets_:
            assert value not in text


# -- configuration -----------------------------------------------------------------------


def test_unknown_config_key_is_named_with_a_suggestion(fake: WecomFake) -> None:
    """A misspelt key is rejected, named, with the nearest valid key."""
    with pytest.raises(ChannelConfigError, match=r"unknown key 'agentid'.*did you mean "
                                                 r"'agent_id'"):
        WecomChannel("wecom", {"corp_id": "ww1", "secret_env": SECRET_VAR, "agentid": 1},
                     {SECRET_VAR: "s"})


def test_missing_corp_id_and_secret_are_config_errors() -> None:
    """corp_id and the secret's variable are required; the errors say what to set."""
    with pytest.raises(ChannelConfigError, match="corp_id"):
        WecomChannel("wecom", {"secret_env": SECRET_VAR}, {SECRET_VAR: "s"})
    with pytest.raises(ChannelConfigError, match=SECRET_VAR):
        WecomChannel("wecom", {"corp_id": "ww1", "secret_env": SECRET_VAR}, {})
    with pytest.raises(ChannelConfigError, match="secret_env"):
        WecomChannel("wecom", {"corp_id": "ww1"}, {})


def test_bad_config_values_are_rejected() -> None:
    """Wrongly typed values are named: agent_id, tag_ids, timeout, base_url."""
    base = {"corp_id": "ww1", "secret_env": SECRET_VAR}
    for key, value in [("agent_id", "abc"), ("tag_ids", {"vip": 3}), ("timeout", 0),
                       ("base_url", "qyapi.weixin.qq.com")]:
        with pytest.raises(ChannelConfigError, match=key):
            WecomChannel("wecom", {**base, key: value}, {SECRET_VAR: "s"})


def test_the_plugin_is_built_from_a_playbook_table(fake: WecomFake) -> None:
    """The `wecom` entry point builds the channel from a [channels.NAME] table."""
    channel = build("wx", {"type": "wecom", "description": "企业微信", "corp_id": fake.corp_id,
                           "secret_env": SECRET_VAR, "base_url": fake.url},
                    {SECRET_VAR: fake.secret})
    assert isinstance(channel, WecomChannel)
    try:
        assert channel.send(send_msg()).status == "delivered"
    finally:
        channel.close()


def test_other_kinds_are_refused(make_channel: MakeChannel) -> None:
    """Kinds the channel cannot deliver fail, listing the ones it can."""
    receipt = make_channel().send(msg("webhook", {"payload": {}}))
    assert receipt.status == "failed" and "reassign" in receipt.detail


# -- the fake as a standalone server -----------------------------------------------------


def test_fake_runs_standalone_and_writes_its_port(tmp_path: Path) -> None:
    """`python tests/wecom_fake.py --port-file F` serves the API and reports what it got."""
    port_file = tmp_path / "port"
    script = Path(__file__).with_name("wecom_fake.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port-file", str(port_file), "--secret", "s3",
         "--customer", "wmAAAA=zhangsan"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "listening" in proc.stderr.readline()
        port = int(port_file.read_text().strip())
        channel = WecomChannel("wecom", {"corp_id": "ww-fake-corp", "secret_env": SECRET_VAR,
                                         "base_url": f"http://127.0.0.1:{port}"},
                               {SECRET_VAR: "s3"})
        with channel:
            assert channel.send(send_msg("你好")).status == "delivered"
        state = httpx.get(f"http://127.0.0.1:{port}/_fake/state").json()
        (task,) = state["templates"].values()
        assert task["content"] == "你好" and state["calls"][GETTOKEN] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
