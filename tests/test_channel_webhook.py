"""The webhook channel against a real HTTP server on 127.0.0.1 (tests/http_receiver.py)."""

from __future__ import annotations

import email.utils
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_receiver import Receiver, Reply

from sopkit.channels import ChannelConfigError, Message, build
from sopkit.channels._webhook import (
    WebhookChannel,
    WebhookVerificationError,
    generate_secret,
    parse_retry_after,
    sign,
    verify_signature,
    webhook_id,
)

NOW = 1_717_000_000.0  # the injected clock: webhook-timestamp and Retry-After dates use it
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, from the specification's examples
PHONE = "13812345678"


@pytest.fixture
def rx() -> Iterator[Receiver]:
    """A fresh receiver per test."""
    with Receiver() as receiver:
        yield receiver


def message(key: str = "retail:1:winback:c42:1:0", text: str = "王小明您好，本周到店享 9 折。",
            **kw: object) -> Message:
    fields: dict[str, object] = {
        "key": key, "kind": "send", "channel": "hook", "customer_id": "c42",
        "rule": "winback", "time": "2024-05-29T09:00:00+08:00",
        "body": {"message": text, "template": "winback"},
        "contact": {"phone": PHONE, "email": "li.lei@example.com"}, "owner": "staff-07",
    }
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def channel(url: str, secret: str | None = SECRET, **config: object) -> WebhookChannel:
    table: dict[str, object] = {"url": url, **config}
    env = {}
    if secret is not None:
        table["secret_env"] = "HOOK_SECRET"
        env["HOOK_SECRET"] = secret
    return WebhookChannel("hook", table, env, clock=lambda: NOW)


# -- signing -----------------------------------------------------------------------------

def test_signed_request_verifies(rx: Receiver) -> None:
    """A signed request carries the key as webhook-id and a signature a receiver verifies."""
    with channel(rx.url + "/hook") as ch:
        receipt = ch.send(message())
    assert receipt.status == "delivered"
    (req,) = rx.requests
    assert req.method == "POST" and req.path == "/hook"
    assert req.headers["webhook-id"] == "retail:1:winback:c42:1:0"
    assert req.headers["webhook-timestamp"] == str(int(NOW))
    assert req.headers["webhook-signature"].startswith("v1,")
    verify_signature(SECRET, req.headers, req.body, now=NOW)  # raises if it does not verify


def test_tampered_body_fails_verification(rx: Receiver) -> None:
    """Changing one byte of the body, the id or the secret makes verification fail."""
    with channel(rx.url) as ch:
        ch.send(message())
    (req,) = rx.requests
    tampered = req.body.replace("9 折".encode(), "1 折".encode())
    assert tampered != req.body
    with pytest.raises(WebhookVerificationError, match="no v1 signature matches"):
        verify_signature(SECRET, req.headers, tampered, now=NOW)
    with pytest.raises(WebhookVerificationError, match="no v1 signature matches"):
        verify_signature(SECRET, {**req.headers, "webhook-id": "other"}, req.body, now=NOW)
    with pytest.raises(WebhookVerificationError, match="no v1 signature matches"):
        verify_signature(generate_secret(), req.headers, req.body, now=NOW)


def test_stale_or_missing_headers_fail_verification(rx: Receiver) -> None:
    """A replay ten minutes later and a request without signature headers are refused."""
    with channel(rx.url) as ch:
        ch.send(message())
    (req,) = rx.requests
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify_signature(SECRET, req.headers, req.body, now=NOW + 600)
    unsigned = {k: v for k, v in req.headers.items() if k != "webhook-signature"}
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify_signature(SECRET, unsigned, req.body, now=NOW)


def test_signature_matches_the_specification_vector() -> None:
    """`sign` reproduces the published Standard Webhooks test vector byte for byte."""
    assert sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_rotated_secrets_verify_with_any_signature() -> None:
    """A signature list (old and new secret, space-separated) passes with either secret."""
    old, new = generate_secret(), generate_secret()
    body = b'{"a":1}'
    both = f"{sign(old, 'm1', int(NOW), body)} {sign(new, 'm1', int(NOW), body)}"
    headers = {"Webhook-Id": "m1", "Webhook-Timestamp": str(int(NOW)),
               "Webhook-Signature": both}
    verify_signature(old, headers, body, now=NOW)
    verify_signature(new, headers, body, now=NOW)


def test_unsigned_without_secret(rx: Receiver) -> None:
    """Without secret_env the request is delivered unsigned (still with id and timestamp)."""
    with channel(rx.url, secret=None) as ch:
        assert not ch.signed
        assert ch.send(message()).status == "delivered"
    (req,) = rx.requests
    assert "webhook-signature" not in req.headers
    assert req.headers["webhook-id"] == "retail:1:winback:c42:1:0"


# -- body ----------------------------------------------------------------------------------

def test_chinese_text_arrives_intact(rx: Receiver) -> None:
    """The body is UTF-8 JSON with Chinese as characters, wrapping the whole message."""
    msg = message(rule="挽回", key="retail:1:挽回:c42:1:0")
    with channel(rx.url) as ch:
        ch.send(msg)
    (req,) = rx.requests
    assert "王小明您好，本周到店享 9 折。" in req.text  # not \u escapes
    assert req.headers["content-type"] == "application/json; charset=utf-8"
    event = req.json()
    assert event == {"type": "sopkit.send", "timestamp": "2024-05-29T09:00:00+08:00",
                     "data": msg.to_json()}
    assert event["data"]["contact"]["phone"] == PHONE  # the delivery carries real contact data


def test_unsafe_key_gets_a_stable_header_safe_id(rx: Receiver) -> None:
    """A key with Chinese or dots maps to the same ASCII webhook-id on every retry."""
    key = "retail:1:挽回:li.lei@example.com:1:0"
    with channel(rx.url) as ch:
        ch.send(message(key=key))
        ch.send(message(key=key, attempt=2))
        ch.send(message())
    wid = webhook_id(key)
    assert wid.isascii() and "." not in wid and wid != key
    assert rx.counts() == {wid: 2, "retail:1:winback:c42:1:0": 1}
    assert rx.requests[0].json()["data"]["key"] == key
    verify_signature(SECRET, rx.requests[1].headers, rx.requests[1].body, now=NOW)


def test_extra_headers_and_bearer_token_are_sent(rx: Receiver) -> None:
    """`headers` and the token named by `token_env` reach the receiver."""
    ch = WebhookChannel("hook", {"url": rx.url, "headers": {"X-Team": "crm"},
                                 "token_env": "HOOK_TOKEN"}, {"HOOK_TOKEN": "t0k3n"})
    with ch:
        ch.send(message())
    (req,) = rx.requests
    assert req.headers["x-team"] == "crm"
    assert req.headers["authorization"] == "Bearer t0k3n"


# -- status handling -----------------------------------------------------------------------

@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_delivered(rx: Receiver, status: int) -> None:
    """Every 2xx answer counts as delivered."""
    rx.script(Reply(status))
    with channel(rx.url) as ch:
        receipt = ch.send(message())
    assert receipt.status == "delivered"
    assert receipt.detail == f"HTTP {status}"


def test_410_gone_fails_and_disables(rx: Receiver) -> None:
    """410 Gone is permanent and asks the dispatcher to disable the channel."""
    rx.script(Reply(410, body="endpoint removed"))
    with channel(rx.url) as ch:
        receipt = ch.send(message())
    assert receipt.status == "failed" and receipt.disable
    assert "410" in receipt.detail and "endpoint removed" in receipt.detail


def test_429_with_retry_after_seconds(rx: Receiver) -> None:
    """429 retries after the Retry-After delta seconds."""
    rx.script(Reply(429, headers={"Retry-After": "120"}))
    with channel(rx.url) as ch:
        receipt = ch.send(message())
    assert (receipt.status, receipt.retry_after) == ("retry", 120.0)
    assert "429" in receipt.detail


def test_503_with_retry_after_http_date(rx: Receiver) -> None:
    """503 retries after a Retry-After HTTP date, measured from the injected clock."""
    rx.script(Reply(503, headers={"Retry-After": email.utils.formatdate(NOW + 90,
                                                                        usegmt=True)}))
    with channel(rx.url) as ch:
        receipt = ch.send(message())
    assert (receipt.status, receipt.retry_after) == ("retry", 90.0)


@pytest.mark.parametrize("status", [408, 500, 502, 504])
def test_408_and_5xx_retry_without_a_delay(rx: Receiver, status: int) -> None:
    """408 and 5xx without Retry-After retry and leave the back-off to the dispatcher."""
    rx.script(Reply(status, body="busy"))
    with channel(rx.url) as ch:
        receipt = ch.send(message())
    assert receipt.status == "retry" and receipt.retry_after is None
    assert str(status) in receipt.detail


def test_404_fails_with_a_masked_excerpt(rx: Receiver) -> None:
    """Another 4xx fails permanently, quoting the answer with phone and e-mail masked."""
    rx.script(Reply(404, body={"error": f"no customer {PHONE} / li.lei@example.com"}))
    with channel(rx.url) as ch:
        receipt = ch.send(message())
    assert receipt.status == "failed" and not receipt.disable
    assert "HTTP 404 Not Found" in receipt.detail
    assert "138****5678" in receipt.detail and "l***@example.com" in receipt.detail
    assert PHONE not in receipt.detail and "li.lei" not in receipt.detail


def test_long_error_body_is_cut_short(rx: Receiver) -> None:
    """A large error page is quoted in at most about 200 characters, on one line."""
    rx.script(Reply(400, body="错误\n" * 5000))
    with channel(rx.url) as ch:
        receipt = ch.send(message())
    assert receipt.status == "failed"
    assert len(receipt.detail) < 260 and "\n" not in receipt.detail


def test_redirect_is_not_followed(rx: Receiver) -> None:
    """A 3xx fails and says so; the redirect target is never requested."""
    rx.script(Reply(301, headers={"Location": rx.url + "/moved"}))
    with channel(rx.url + "/old") as ch:
        receipt = ch.send(message())
    assert receipt.status == "failed"
    assert "not followed" in receipt.detail and "/moved" in receipt.detail
    assert [r.path for r in rx.requests] == ["/old"]


def test_timeout_retries(rx: Receiver) -> None:
    """A receiver slower than `timeout` makes a retry naming the timeout."""
    rx.script(Reply(200, delay=30))  # cut short when the receiver stops
    with channel(rx.url, timeout=0.2) as ch:
        receipt = ch.send(message())
    assert receipt.status == "retry"
    assert "no answer" in receipt.detail and "0.2 s" in receipt.detail
    assert len(rx.requests) == 1


def test_connection_refused_retries() -> None:
    """Nothing listening on the port makes a retry saying the connection failed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with channel(f"http://127.0.0.1:{port}/hook") as ch:
        receipt = ch.send(message())
    assert receipt.status == "retry" and "cannot connect" in receipt.detail


def test_parse_retry_after_forms() -> None:
    """Retry-After: delta seconds, an HTTP date (past dates mean now), garbage is ignored."""
    assert parse_retry_after(" 30 ", NOW) == 30.0
    assert parse_retry_after(email.utils.formatdate(NOW + 3600, usegmt=True), NOW) == 3600.0
    assert parse_retry_after(email.utils.formatdate(NOW - 60, usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after(None, NOW) is None


# -- configuration -------------------------------------------------------------------------

def config_error(table: dict[str, object], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ChannelConfigError) as info:
        WebhookChannel("hook", table, env or {})
    return str(info.value)


def test_unknown_key_is_named_with_a_suggestion() -> None:
    """A misspelt key is named, with the key it probably meant."""
    text = config_error({"url": "https://example.com", "secert_env": "X"})
    assert "channel 'hook'" in text and "'secert_env'" in text
    assert "did you mean 'secret_env'?" in text


def test_url_is_required_and_must_be_http() -> None:
    """A missing or non-http(s) url is refused, naming the key."""
    assert "'url' is required" in config_error({})
    assert "http:// or https://" in config_error({"url": "ftp://example.com/x"})
    assert "http:// or https://" in config_error({"url": "example.com/hook"})


def test_missing_secret_variable_is_named() -> None:
    """secret_env naming an unset variable says which variable, and how to make a secret."""
    text = config_error({"url": "https://example.com", "secret_env": "HOOK_SECRET"})
    assert "HOOK_SECRET" in text and "'secret_env'" in text and "whsec_" in text


def test_bad_secret_is_refused_without_echoing_it() -> None:
    """A secret that is not whsec_<base64> of 24+ bytes is refused; its value is not shown."""
    for bad in ("not base64 at all!", "whsec_c2hvcnQ="):
        text = config_error({"url": "https://example.com", "secret_env": "S"}, {"S": bad})
        assert "environment variable S" in text and bad not in text


def test_token_in_headers_is_refused() -> None:
    """An Authorization header in the playbook is refused in favour of token_env."""
    text = config_error({"url": "https://example.com",
                         "headers": {"Authorization": "Bearer abc"}})
    assert "token_env" in text and "Authorization" in text


def test_missing_token_variable_is_named() -> None:
    """token_env naming an unset variable names it."""
    text = config_error({"url": "https://example.com", "token_env": "HOOK_TOKEN"})
    assert "HOOK_TOKEN" in text and "'token_env'" in text


@pytest.mark.parametrize("timeout", [0, -1, "10", True])
def test_timeout_must_be_positive_seconds(timeout: object) -> None:
    """timeout must be a positive number."""
    assert "'timeout'" in config_error({"url": "https://example.com", "timeout": timeout})


def test_url_env_keeps_a_tokened_url_out_of_the_playbook(rx: Receiver) -> None:
    """url_env reads the URL from the environment; receipts never show its query."""
    ch = WebhookChannel("hook", {"url_env": "HOOK_URL"},
                        {"HOOK_URL": rx.url + "/bot?key=s3cret"})
    with ch:
        assert ch.send(message()).status == "delivered"
    assert rx.requests[0].path == "/bot?key=s3cret"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with WebhookChannel("hook", {"url_env": "U"},
                        {"U": f"http://127.0.0.1:{port}/bot?key=s3cret"}) as dead:
        receipt = dead.send(message())
    assert receipt.status == "retry" and f"127.0.0.1:{port}/bot" in receipt.detail
    assert "s3cret" not in receipt.detail


def test_url_config_errors() -> None:
    """url and url_env together, an unset url_env and a password in url are refused."""
    assert "not both" in config_error({"url": "https://a.example", "url_env": "U"})
    assert "HOOK_URL" in config_error({"url_env": "HOOK_URL"})
    text = config_error({"url": "https://user:pw@example.com/hook"})
    assert "password" in text and "pw@" not in text


def test_built_through_the_plugin_registry(rx: Receiver) -> None:
    """`type = "webhook"` in a playbook table builds this channel through its entry point."""
    ch = build("hook", {"type": "webhook", "description": "CRM", "url": rx.url,
                        "secret_env": "S"}, {"S": SECRET})
    assert isinstance(ch, WebhookChannel)
    assert ch.send(message()).status == "delivered"
    ch.close()


# -- the receiver as a separate process ----------------------------------------------------

def test_standalone_receiver_logs_requests(tmp_path: Path) -> None:
    """`python tests/http_receiver.py --port-file F --log L` serves and logs each request."""
    port_file, log = tmp_path / "port", tmp_path / "requests.jsonl"
    script = json.dumps([{"status": 503, "headers": {"Retry-After": "7"}}])
    with subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("http_receiver.py")),
             "--port-file", str(port_file), "--log", str(log), "--script", script],
            stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            assert "listening on" in proc.stderr.readline()  # printed after the port file
            port = int(port_file.read_text())
            with channel(f"http://127.0.0.1:{port}/hook") as ch:
                first, second = ch.send(message()), ch.send(message(attempt=2))
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
    assert (first.status, first.retry_after, second.status) == ("retry", 7.0, "delivered")
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [entry["status"] for entry in lines] == [503, 200]
    assert {entry["headers"]["webhook-id"] for entry in lines} == {"retail:1:winback:c42:1:0"}
    assert "王小明" in lines[0]["body"]
