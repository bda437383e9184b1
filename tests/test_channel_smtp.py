"""The `smtp` channel against a real local SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from sopkit.channels import ChannelConfigError, Message, Receipt, build
from sopkit.channels._smtp import SmtpChannel, key_from_message_id, message_id

KEY = "shop:3:renew_reminder:c-001:1:0"
FROM = "某品牌会员中心 <vip@example.com>"
BODY = "王小明您好，您的会员还有 7 天到期。\n本周续费享 9 折，回复 TD 退订。"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    mail: EmailMessage
    peer: Any
    smtp_utf8: bool


@dataclass
class Handler:
    """Stores each message; answers chosen recipients, DATA and NOOP with chosen replies."""

    messages: list[Received] = field(default_factory=list)
    rcpt: dict[str, str] = field(default_factory=dict)
    data: str | None = None
    noop: str | None = None

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.rcpt:
            return self.rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_NOOP(self, server: SMTP, session: Session, envelope: Envelope,
                          arg: str) -> str:
        return self.noop or "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data:
            return self.data
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        mail = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), mail,
                                      session.peer, envelope.smtp_utf8))
        return f"250 2.0.0 Ok: queued as Q{len(self.messages)}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server() -> Iterator[tuple[Handler, int]]:
    """A plain SMTP server on 127.0.0.1 that stores what it accepts."""
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


def _channel(port: int, **config: Any) -> SmtpChannel:
    return SmtpChannel("mail", {"host": "127.0.0.1", "port": port, "from": FROM,
                                "timeout": 5, **config}, {})


def _message(key: str = KEY, email: str | None = "li.lei@example.com", kind: str = "send",
             **body: Any) -> Message:
    contact = {"name": "王小明"} | ({"email": email} if email is not None else {})
    return Message(key=key, kind=kind, channel="mail", customer_id="c-001",
                   rule="renew_reminder", time="2025-03-01T10:00:00+08:00",
                   body=body or {"message": BODY, "title": "会员续费提醒"}, contact=contact)


def _text(mail: EmailMessage) -> str:
    part = mail.get_body()
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")  # the canonical form of text lines is CRLF


def test_message_arrives_with_headers_and_chinese_body(server: tuple[Handler, int]) -> None:
    """A send arrives with From (Chinese name), To, Subject from the title and the body intact."""
    handler, port = server
    receipt = _channel(port).send(_message())
    assert receipt.status == "delivered", receipt
    assert receipt.provider_id == "Q1"
    (got,) = handler.messages
    assert got.mail_from == "vip@example.com" and got.rcpt_tos == ["li.lei@example.com"]
    assert str(got.mail["From"]) == FROM
    assert str(got.mail["To"]) == "li.lei@example.com"
    assert str(got.mail["Subject"]) == "会员续费提醒"
    assert _text(got.mail) == BODY + "\n"
    assert "li.lei@example.com" not in receipt.detail


def test_message_id_carries_the_key_and_is_stable(server: tuple[Handler, int]) -> None:
    """The Message-ID holds the idempotency key (recoverable) and repeats for the same key."""
    handler, port = server
    channel = _channel(port)
    chinese = "门店:1:生日祝福:客户 7:1:0"
    for key in (KEY, KEY, chinese):
        assert channel.send(_message(key=key)).status == "delivered"
    ids = [str(m.mail["Message-ID"]) for m in handler.messages]
    assert ids[0] == ids[1] != ids[2]
    assert [key_from_message_id(i) for i in ids] == [KEY, KEY, chinese]
    assert ids[0] == "<shop%3A3%3Arenew_reminder%3Ac-001%3A1%3A0@example.com>"
    assert ids[2].isascii() and " " not in ids[2]


def test_very_long_key_gets_a_hashed_message_id() -> None:
    """A key too long for one header line becomes a stable sha256 Message-ID."""
    long_key = "店" * 200
    first, second = message_id(long_key, "example.com"), message_id(long_key, "example.com")
    assert first == second and first.startswith("<sha256-") and len(first) < 100


def test_subject_falls_back_to_config_then_to_first_line(server: tuple[Handler, int]) -> None:
    """Without a title the subject is the channel's `subject`, else the message's first line."""
    handler, port = server
    assert _channel(port, subject="会员中心通知").send(_message(message=BODY)).status \
        == "delivered"
    assert _channel(port).send(_message(message=BODY)).status == "delivered"
    subjects = [str(m.mail["Subject"]) for m in handler.messages]
    assert subjects == ["会员中心通知", "王小明您好，您的会员还有 7 天到期。"]


def test_recipient_550_fails_with_code_and_masked_text(server: tuple[Handler, int]) -> None:
    """A 550 for the recipient is a permanent failure naming the code, with the address masked."""
    handler, port = server
    handler.rcpt["gone@example.com"] = "550 5.1.1 <gone@example.com>: user unknown"
    receipt = _channel(port).send(_message(email="gone@example.com"))
    assert receipt.status == "failed"
    assert "550 5.1.1" in receipt.detail and "user unknown" in receipt.detail
    assert "g***@example.com" in receipt.detail and "gone@" not in receipt.detail
    assert handler.messages == []


def test_chinese_mailbox_is_masked_in_the_detail(server: tuple[Handler, int]) -> None:
    """A refused mailbox with a Chinese name is masked like any other in the detail."""
    handler, port = server
    handler.rcpt["王小明@example.com"] = "550 5.1.1 user unknown"
    receipt = _channel(port).send(_message(email="王小明@example.com"))
    assert receipt.status == "failed" and "王***@example.com" in receipt.detail
    assert "王小明" not in receipt.detail


def test_recipient_451_is_retried(server: tuple[Handler, int]) -> None:
    """A 451 (greylisting, local error) for the recipient means retry later."""
    handler, port = server
    handler.rcpt["busy@example.com"] = "451 4.7.1 greylisted, try again later"
    receipt = _channel(port).send(_message(email="busy@example.com"))
    assert receipt.status == "retry" and "451" in receipt.detail


@pytest.mark.parametrize(("reply", "status"), [("552 5.3.4 message too big", "failed"),
                                              ("452 4.3.1 insufficient storage", "retry")])
def test_reply_to_the_message_data_decides(server: tuple[Handler, int], reply: str,
                                           status: str) -> None:
    """The reply after the message data: 5xx fails, 4xx retries; the code is in the detail."""
    handler, port = server
    handler.data = reply
    receipt = _channel(port).send(_message())
    assert (receipt.status, reply[:3] in receipt.detail) == (status, True)


def test_connection_survives_a_refusal_and_is_reused(server: tuple[Handler, int]) -> None:
    """After a refused recipient the same connection delivers the next message."""
    handler, port = server
    handler.rcpt["gone@example.com"] = "550 5.1.1 user unknown"
    channel = _channel(port)
    assert channel.send(_message()).status == "delivered"
    assert channel.send(_message(email="gone@example.com")).status == "failed"
    assert channel.send(_message(key=KEY + "x")).status == "delivered"
    assert handler.messages[0].peer == handler.messages[1].peer  # one connection
    channel.close()


def test_stale_connection_is_replaced(server: tuple[Handler, int]) -> None:
    """When the open connection no longer answers NOOP with 250, a new one delivers."""
    handler, port = server
    channel = _channel(port)
    assert channel.send(_message()).status == "delivered"
    handler.noop = "421 4.4.2 idle too long, closing"
    assert channel.send(_message(key=KEY + "x")).status == "delivered"
    assert handler.messages[0].peer != handler.messages[1].peer
    channel.close()


def test_server_down_is_retried() -> None:
    """Nobody listening on the port: retry, saying the connection was refused."""
    receipt = _channel(_free_port()).send(_message())
    assert receipt.status == "retry" and "connection refused" in receipt.detail


def test_silent_server_times_out_into_retry() -> None:
    """A server that accepts the connection but never greets: retry after `timeout`."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        receipt = _channel(listener.getsockname()[1], timeout=0.3).send(_message())
    assert receipt.status == "retry" and "timeout" in receipt.detail


def test_greeting_refusal_fails() -> None:
    """A 554 greeting (the server refuses service) fails; the reply text is in the detail."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(5)

        def greet() -> None:
            peer, _ = listener.accept()
            with peer:
                peer.sendall(b"554 5.7.1 no service for you\r\n")
                peer.recv(1024)  # until the client hangs up

        thread = threading.Thread(target=greet)
        thread.start()
        receipt = _channel(listener.getsockname()[1]).send(_message())
        thread.join()
    assert receipt.status == "failed" and "554 5.7.1 no service for you" in receipt.detail


def test_missing_or_bad_address_fails_clearly(server: tuple[Handler, int]) -> None:
    """No e-mail in the profile, or one that is no address: failed, saying which attribute."""
    handler, port = server
    channel = _channel(port)
    missing = channel.send(_message(email=None))
    assert missing.status == "failed"
    assert "c-001" in missing.detail and "'email'" in missing.detail
    bad = channel.send(_message(email="li.lei at example"))
    assert bad.status == "failed" and "not an e-mail address" in bad.detail
    phone = channel.send(_message(email="13812345678"))
    assert phone.status == "failed" and "'138****5678' is not an e-mail address" in phone.detail
    other = _channel(port, email_attribute="work_mail").send(_message())
    assert other.status == "failed" and "'work_mail'" in other.detail
    assert handler.messages == []


def test_email_attribute_names_the_profile_key(server: tuple[Handler, int]) -> None:
    """`email_attribute` picks which profile attribute holds the address."""
    handler, port = server
    message = Message(key=KEY, kind="send", channel="mail", customer_id="c-001", rule="r",
                      time="t", body={"message": "hi"}, contact={"work_mail": "wl@example.org"})
    assert _channel(port, email_attribute="work_mail").send(message).status == "delivered"
    assert handler.messages[0].rcpt_tos == ["wl@example.org"]


def test_other_kinds_are_refused_by_name(server: tuple[Handler, int]) -> None:
    """A webhook action through smtp fails permanently, naming the kind."""
    _, port = server
    receipt = _channel(port).send(_message(kind="webhook", payload={"a": 1}))
    assert receipt == Receipt.failed("smtp cannot deliver a webhook action")


def test_task_goes_to_the_staff_mailbox_never_the_customer(server: tuple[Handler, int]) -> None:
    """A task is mailed to `task_to` (or an e-mail assignee); without either it fails."""
    handler, port = server
    task = _message(kind="task", note="请电话回访王小明", due="2025-03-03T10:00:00+08:00",
                    assignee="staff-07")
    assert _channel(port, task_to="crm@example.com").send(task).status == "delivered"
    by_assignee = _message(kind="task", note="回访", due="d", assignee="zhang@example.com")
    assert _channel(port).send(by_assignee).status == "delivered"
    refused = _channel(port).send(task)
    assert refused.status == "failed" and "task_to" in refused.detail
    assert [m.rcpt_tos for m in handler.messages] == [["crm@example.com"],
                                                       ["zhang@example.com"]]
    assert "请电话回访王小明" in _text(handler.messages[0].mail)
    assert "staff-07" in _text(handler.messages[0].mail)


def test_non_ascii_mailbox_uses_smtputf8(server: tuple[Handler, int]) -> None:
    """A Chinese mailbox name is sent with SMTPUTF8 and arrives as written."""
    handler, port = server
    assert _channel(port).send(_message(email="王小明@example.com")).status == "delivered"
    (got,) = handler.messages
    assert got.smtp_utf8 and got.rcpt_tos == ["王小明@example.com"]
    assert _text(got.mail) == BODY + "\n"


def test_non_ascii_mailbox_without_smtputf8_fails() -> None:
    """A server without SMTPUTF8 cannot take a Chinese mailbox: failed, saying why."""
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(),
                            enable_SMTPUTF8=False)
    controller.start()
    try:
        receipt = _channel(controller.port).send(_message(email="王小明@example.com"))
    finally:
        controller.stop()
    assert receipt.status == "failed" and "needs SMTPUTF8" in receipt.detail
    assert "王小明" not in receipt.detail and handler.messages == []


# -- TLS and AUTH servers ------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Handler, int]]:
    """A server that requires STARTTLS before MAIL."""
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(),
                            tls_context=_server_context(certificate), require_starttls=True)
    controller.start()
    yield handler, controller.port
    controller.stop()


# -- authentication --------------------------------------------------------------------------

@pytest.fixture
def auth_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Handler, int]]:
    """A server requiring AUTH (offered only after STARTTLS) for `shop` with password `秘密pw`."""

    def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
              auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and \
            (auth_data.login, auth_data.password) == (b"shop", "秘密pw".encode())
        return AuthResult(success=ok, handled=False)  # let the server answer 535

    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(),
                            tls_context=_server_context(certificate), authenticator=check,
                            auth_required=True)
    controller.start()
    yield handler, controller.port
    controller.stop()


AUTH = {"username_env": "SHOP_SMTP_USER", "password_env": "SHOP_SMTP_PASSWORD"}


def _auth_channel(port: int, certificate: tuple[Path, Path], password: str,
                  user: str = "shop") -> SmtpChannel:
    return SmtpChannel("mail", {"host": "127.0.0.1", "port": port, "from": FROM, "tls":
                                "starttls", "ca_file": str(certificate[0]), **AUTH},
                       {"SHOP_SMTP_USER": user, "SHOP_SMTP_PASSWORD": password})


def test_login_with_credentials_from_the_environment(auth_server: tuple[Handler, int],
                                                     certificate: tuple[Path, Path]) -> None:
    """User name and (UTF-8) password come from the variables the `*_env` keys name."""
    handler, port = auth_server
    config = {"type": "smtp", "host": "127.0.0.1", "port": port, "from": FROM,
              "tls": "starttls", "ca_file": str(certificate[0]), **AUTH}
    env = {"SHOP_SMTP_USER": "shop", "SHOP_SMTP_PASSWORD": "秘密pw"}
    assert build("mail", config, env).send(_message()).status == "delivered"
    assert len(handler.messages) == 1


@pytest.mark.parametrize("password", ["wrong", "错误"])
def test_wrong_password_fails_and_disables(auth_server: tuple[Handler, int],
                                           certificate: tuple[Path, Path],
                                           password: str) -> None:
    """A 535 login refusal fails and asks the dispatcher to stop using the channel."""
    handler, port = auth_server
    receipt = _auth_channel(port, certificate, password).send(_message())
    assert receipt.status == "failed" and receipt.disable and "535" in receipt.detail
    assert password not in receipt.detail and handler.messages == []


def test_auth_not_offered_without_tls_fails_with_a_hint(auth_server: tuple[Handler, int]
                                                        ) -> None:
    """Credentials but tls = "none" where AUTH needs TLS: failed, disabled, hinting starttls."""
    _, port = auth_server
    channel = SmtpChannel("mail", {"host": "127.0.0.1", "port": port, "from": FROM, **AUTH},
                          {"SHOP_SMTP_USER": "shop", "SHOP_SMTP_PASSWORD": "秘密pw"})
    receipt = channel.send(_message())
    assert receipt.status == "failed" and receipt.disable
    assert "does not offer AUTH" in receipt.detail and 'tls = "starttls"' in receipt.detail


def test_unauthenticated_send_is_refused(auth_server: tuple[Handler, int],
                                         certificate: tuple[Path, Path]) -> None:
    """Without credentials a server requiring AUTH refuses MAIL (530): failed, code named."""
    _, port = auth_server
    receipt = _channel(port, tls="starttls", ca_file=str(certificate[0])).send(_message())
    assert receipt.status == "failed" and "530" in receipt.detail


def test_missing_secret_variable_is_a_config_error() -> None:
    """A `*_env` variable that is not set is a ChannelConfigError naming the variable."""
    with pytest.raises(ChannelConfigError, match="SHOP_SMTP_PASSWORD"):
        SmtpChannel("mail", {"host": "h", "from": FROM, **AUTH}, {"SHOP_SMTP_USER": "shop"})
    with pytest.raises(ChannelConfigError, match="add 'password_env'"):
        SmtpChannel("mail", {"host": "h", "from": FROM, "username_env": "U"}, {"U": "u"})


# -- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "message"), [
    ({"hots": "x"}, "unknown key 'hots'.*did you mean 'host'"),
    ({"password": "x"}, "unknown key 'password'.*did you mean 'password_env'"),
    ({"host": None}, "'host' is required"),
    ({"from": "vip"}, "'from' must be an e-mail address"),
    ({"from": "a@example.com, b@example.com"}, "'from' must be an e-mail address"),
    ({"port": "25"}, "'port' must be a whole number"),
    ({"port": True}, "'port' must be a whole number"),
    ({"tls": "startls"}, "'tls' must be one of.*did you mean 'starttls'"),
    ({"timeout": 0}, "'timeout' must be a positive number"),
    ({"task_to": "staff-07"}, "'task_to' must be an e-mail address"),
    ({"ca_file": "/no/such.pem", "tls": "ssl"}, "'ca_file' /no/such.pem is not a file"),
    ({"ca_file": "/no/such.pem"}, "'ca_file' needs tls"),
])
def test_bad_config_is_rejected_with_a_fix(config: dict[str, Any], message: str) -> None:
    """Each bad key or value raises ChannelConfigError naming the key and what to write."""
    table = {"host": "smtp.example.com", "from": FROM} | config
    table = {k: v for k, v in table.items() if v is not None}
    with pytest.raises(ChannelConfigError, match=message):
        SmtpChannel("mail", table, {})


@pytest.mark.parametrize(("port", "tls", "expected"), [
    (25, None, "none"), (465, None, "ssl"), (587, None, "starttls"), (2525, None, "none"),
    (465, "starttls", "starttls"), (587, "none", "none"),
])
def test_tls_default_follows_the_port(port: int, tls: str | None, expected: str) -> None:
    """Port 465 means implicit TLS and 587 STARTTLS unless `tls` says otherwise."""
    config: dict[str, Any] = {"host": "h", "from": FROM, "port": port}
    if tls:
        config["tls"] = tls
    assert SmtpChannel("mail", config, {}).tls == expected


# -- TLS -------------------------------------------------------------------------------------

def test_starttls_with_a_private_ca_delivers(starttls_server: tuple[Handler, int],
                                             certificate: tuple[Path, Path]) -> None:
    """tls = "starttls" with `ca_file` trusting the server's certificate delivers."""
    handler, port = starttls_server
    channel = _channel(port, tls="starttls", ca_file=str(certificate[0]))
    assert channel.send(_message()).status == "delivered"
    assert _text(handler.messages[0].mail) == BODY + "\n"


def test_untrusted_certificate_is_retried_and_nothing_sent(
        starttls_server: tuple[Handler, int]) -> None:
    """A certificate the system does not trust: retry with a TLS reason; no clear-text send."""
    handler, port = starttls_server
    receipt = _channel(port, tls="starttls").send(_message())
    assert receipt.status == "retry" and "TLS" in receipt.detail
    assert handler.messages == []


def test_starttls_not_offered_is_retried_not_sent_in_clear(server: tuple[Handler, int]) -> None:
    """A server that does not offer STARTTLS gets nothing when the channel asks for it."""
    handler, port = server
    receipt = _channel(port, tls="starttls").send(_message())
    assert receipt.status == "retry" and "STARTTLS" in receipt.detail
    assert handler.messages == []


def test_without_tls_a_server_requiring_it_refuses(starttls_server: tuple[Handler, int]) -> None:
    """tls = "none" against a server requiring STARTTLS: its 530 refusal is failed, named."""
    _, port = starttls_server
    receipt = _channel(port).send(_message())
    assert receipt.status == "failed" and "530" in receipt.detail


def test_implicit_tls_delivers(certificate: tuple[Path, Path]) -> None:
    """tls = "ssl" (implicit TLS, as on port 465) delivers to a TLS-only server."""
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(),
                            ssl_context=_server_context(certificate))
    controller.start()
    try:
        channel = _channel(controller.port, tls="ssl", ca_file=str(certificate[0]))
        assert channel.send(_message()).status == "delivered"
        channel.close()
    finally:
        controller.stop()
    assert str(handler.messages[0].mail["Subject"]) == "会员续费提醒"
