"""The sms channel against a real HTTP gateway on 127.0.0.1 (tests/http_receiver.py)."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator

import pytest
from http_receiver import Receiver, Reply

from sopkit.channels import ChannelConfigError, Message, build
from sopkit.channels._sms import SmsChannel, normalise_mobile, segments

NOW = 1_717_000_000.0
PHONE = "13812345678"
SIGN = "【某品牌】"  # 5 characters


@pytest.fixture
def rx() -> Iterator[Receiver]:
    """A fresh gateway per test, answering 200 {"id": "sms-1"} unless scripted."""
    with Receiver(default=Reply(200, body={"id": "sms-1"})) as receiver:
        yield receiver


def message(text: str | None = "王小明您好，本周到店享 9 折。", phone: object = PHONE,
            kind: str = "send", attribute: str = "phone") -> Message:
    body = {"message": text} if text is not None else {"note": "回访"}
    contact = {attribute: phone} if phone is not None else {}
    return Message(key="retail:1:winback:c42:1:0", kind=kind, channel="sms", customer_id="c42",
                   rule="winback", time="2024-05-29T09:00:00+08:00", body=body,
                   contact=contact)


def channel(url: str, **config: object) -> SmsChannel:
    table: dict[str, object] = {"url": url, "token_env": "SMS_TOKEN", "sign": SIGN, **config}
    return SmsChannel("sms", table, {"SMS_TOKEN": "s3cret"}, clock=lambda: NOW)


def test_delivers_with_the_provider_id(rx: Receiver) -> None:
    """A 2xx answer with an id is delivered; the gateway gets to, signed text, key and token."""
    with channel(rx.url + "/sms") as ch:
        receipt = ch.send(message())
    assert receipt.status == "delivered" and receipt.provider_id == "sms-1"
    assert receipt.data["segments"] == 1
    assert "138****5678" in receipt.detail and PHONE not in receipt.detail
    (req,) = rx.requests
    assert req.path == "/sms" and req.headers["authorization"] == "Bearer s3cret"
    assert req.json() == {"to": PHONE, "text": "【某品牌】王小明您好，本周到店享 9 折。",
                          "key": "retail:1:winback:c42:1:0"}
    assert "王小明" in req.text  # UTF-8, not escapes


def test_sign_without_brackets_is_wrapped_and_not_doubled(rx: Receiver) -> None:
    """sign = "某品牌" becomes 【某品牌】, and a message already signed is not signed twice."""
    with channel(rx.url, sign="某品牌") as ch:
        ch.send(message())
        ch.send(message("【某品牌】已签名的消息"))
    texts = [r.json()["text"] for r in rx.requests]
    assert texts == ["【某品牌】王小明您好，本周到店享 9 折。", "【某品牌】已签名的消息"]


@pytest.mark.parametrize("raw", ["+86 138 1234 5678", "86-138-1234-5678", "008613812345678",
                                 13812345678])
def test_mainland_formats_are_normalised(rx: Receiver, raw: object) -> None:
    """+86, spaces, dashes and numbers stored as integers all send to the 11-digit number."""
    with channel(rx.url) as ch:
        assert ch.send(message(phone=raw)).status == "delivered"
    assert rx.requests[0].json()["to"] == PHONE


def test_no_phone_number_fails(rx: Receiver) -> None:
    """A customer without the phone attribute fails, naming the attribute; nothing is sent."""
    with channel(rx.url) as ch:
        receipt = ch.send(message(phone=None))
    assert (receipt.status, receipt.detail) == (
        "failed", "no phone number in profile attribute 'phone'")
    with channel(rx.url, phone_attribute="mobile") as ch:
        assert ch.send(message(phone=PHONE)).detail == (
            "no phone number in profile attribute 'mobile'")
        assert ch.send(message(attribute="mobile")).status == "delivered"
    assert len(rx.requests) == 1


@pytest.mark.parametrize("raw", ["+1 415 555 0100", "1381234567", "23812345678", "138123456789",
                                 "12012345678"])
def test_invalid_numbers_fail_masked(rx: Receiver, raw: str) -> None:
    """A number that is not a mainland mobile fails with a reason that hides the number."""
    with channel(rx.url) as ch:
        receipt = ch.send(message(phone=raw))
    assert receipt.status == "failed" and "not a mainland mobile number" in receipt.detail
    digits = "".join(ch for ch in raw if ch.isdigit())
    assert digits not in receipt.detail.replace(" ", "")
    assert rx.requests == []


def test_segment_counting() -> None:
    """70 characters are one segment; beyond that, 67 per segment; an emoji counts twice."""
    assert [segments("好" * n) for n in (1, 70, 71, 134, 135, 201, 202)] == [1, 1, 2, 2, 3, 3, 4]
    assert segments("😀" * 35) == 1 and segments("😀" * 36) == 2


def test_segment_limit_counts_the_signature(rx: Receiver) -> None:
    """The signature counts: 65 + 5 characters go in one segment, 66 + 5 need two."""
    with channel(rx.url, max_segments=1) as ch:
        assert ch.send(message("好" * 65)).status == "delivered"
        refused = ch.send(message("好" * 66))
    assert refused.status == "failed"
    assert "71 characters" in refused.detail and "max_segments = 1" in refused.detail
    assert len(rx.requests) == 1


def test_default_limit_is_three_segments(rx: Receiver) -> None:
    """By default 201 characters (3 × 67) are sent and 202 are refused before any request."""
    with channel(rx.url) as ch:
        ok = ch.send(message("好" * (201 - len(SIGN))))
        refused = ch.send(message("好" * (202 - len(SIGN))))
    assert (ok.status, ok.data["segments"]) == ("delivered", 3)
    assert refused.status == "failed" and "4 segments" in refused.detail
    assert len(rx.requests) == 1


def test_action_without_a_message_fails(rx: Receiver) -> None:
    """A task routed to SMS fails saying there is no message; nothing is sent."""
    with channel(rx.url) as ch:
        receipt = ch.send(message(text=None, kind="task"))
    assert receipt.status == "failed" and "task action has no 'message'" in receipt.detail
    assert rx.requests == []


def test_429_with_retry_after_retries(rx: Receiver) -> None:
    """429 retries after Retry-After, in seconds or as an HTTP date."""
    rx.script(Reply(429, headers={"Retry-After": "60"}),
              Reply(429, headers={"Retry-After": email.utils.formatdate(NOW + 5, usegmt=True)}))
    with channel(rx.url) as ch:
        first, second = ch.send(message()), ch.send(message())
    assert (first.status, first.retry_after) == ("retry", 60.0)
    assert (second.status, second.retry_after) == ("retry", 5.0)


def test_5xx_retries(rx: Receiver) -> None:
    """A 5xx from the gateway is passing: retry."""
    rx.script(Reply(502, body="upstream down"))
    with channel(rx.url) as ch:
        receipt = ch.send(message())
    assert receipt.status == "retry" and "502" in receipt.detail


def test_4xx_fails_with_a_masked_excerpt(rx: Receiver) -> None:
    """A 4xx is permanent; the quoted answer hides the number."""
    rx.script(Reply(400, body={"error": f"{PHONE} is on the blacklist"}))
    with channel(rx.url) as ch:
        receipt = ch.send(message())
    assert receipt.status == "failed" and "HTTP 400" in receipt.detail
    assert "138****5678 is on the blacklist" in receipt.detail and PHONE not in receipt.detail


def test_2xx_without_an_id_is_still_delivered(rx: Receiver) -> None:
    """A gateway that accepted the SMS but gave no id still counts as delivered (no resend)."""
    rx.script(Reply(202, body="queued"))
    with channel(rx.url) as ch:
        receipt = ch.send(message())
    assert receipt.status == "delivered" and receipt.provider_id is None
    assert "no id" in receipt.detail


def test_timeout_retries(rx: Receiver) -> None:
    """A gateway slower than `timeout` makes a retry."""
    rx.script(Reply(200, delay=30))
    with channel(rx.url, timeout=0.2) as ch:
        receipt = ch.send(message())
    assert receipt.status == "retry" and "no answer" in receipt.detail


def config_error(table: dict[str, object], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ChannelConfigError) as info:
        SmsChannel("sms", table, env or {})
    return str(info.value)


def test_config_errors_name_the_key() -> None:
    """Unknown keys, a missing url, bad max_segments and an unset token variable are named."""
    url = "https://sms.example.com/send"
    assert "did you mean 'max_segments'?" in config_error({"url": url, "max_segment": 2})
    assert "'url' is required" in config_error({})
    assert "'max_segments'" in config_error({"url": url, "max_segments": 0})
    assert "'sign'" in config_error({"url": url, "sign": "【】"})
    assert "'phone_attribute'" in config_error({"url": url, "phone_attribute": ""})
    text = config_error({"url": url, "token_env": "SMS_TOKEN"})
    assert "SMS_TOKEN" in text and "'token_env'" in text


def test_normalise_mobile_rejects_non_numbers() -> None:
    """Only strings and integers can be phone numbers."""
    assert normalise_mobile(["13812345678"]) is None and normalise_mobile(True) is None


def test_built_through_the_plugin_registry(rx: Receiver) -> None:
    """`type = "sms"` builds this channel through its entry point."""
    ch = build("sms", {"type": "sms", "url": rx.url}, {})
    assert isinstance(ch, SmsChannel) and ch.send(message()).status == "delivered"
    ch.close()
