"""The `smtp` channel: e-mail through an SMTP relay, with the standard library only.

One connection is opened on the first `send` and reused while the server keeps it (a NOOP
checks it first); `close()` ends it. Every reply code is mapped to a Receipt: 2xx delivered,
4xx retry, 5xx failed; a server that cannot be reached, times out or fails TLS means retry.
The Message-ID carries the idempotency key, percent-encoded (`key_from_message_id` reverses
it), so duplicates can be found by whoever receives the mail. See docs/channels.md#smtp.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import smtplib
import ssl
import threading
from collections.abc import Mapping
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from sopkit._errors import did_you_mean
from sopkit._mask import mask_text

from ._base import ChannelConfigError, Message, Receipt, check_env_name, env_secret

KEYS = ("host", "port", "tls", "username_env", "password_env", "from", "email_attribute",
        "subject", "timeout", "ca_file", "task_to")
TLS_MODES = ("none", "starttls", "ssl")
_DEFAULT_TLS = {465: "ssl", 587: "starttls"}
_MAX_ID_LEFT = 900  # a header line may not exceed 998 characters (RFC 5322)
# Build with 7bit so non-ASCII bodies get base64 or quoted-printable: no 8BITMIME needed.
_BUILD = policy.SMTP.clone(cte_type="7bit")
_QUEUE_ID = re.compile(r"queued as\s+([^\s;,]+)|\bid=([^\s;,]+)", re.IGNORECASE)


def message_id(key: str, domain: str) -> str:
    """The Message-ID for idempotency key `key`: `<percent-encoded key@domain>`.

    Every character but A-Z a-z 0-9 `-` `_` `~` is percent-encoded as UTF-8, which makes a
    valid RFC 5322 msg-id. An encoded key longer than 900 characters becomes `sha256-<hex>`.

    >>> message_id("school:1:renew:s1:1:0", "example.com")
    '<school%3A1%3Arenew%3As1%3A1%3A0@example.com>'
    """
    left = quote(key, safe="-_~")
    if len(left) > _MAX_ID_LEFT:
        left = "sha256-" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"<{left}@{domain}>"


def key_from_message_id(value: str) -> str:
    """The idempotency key inside a Message-ID written by `message_id`.

    >>> key_from_message_id("<school%3A1%3Arenew%3As1%3A1%3A0@example.com>")
    'school:1:renew:s1:1:0'
    """
    return unquote(value.strip().strip("<>").rpartition("@")[0])


def _ascii_domain(domain: str) -> str:
    try:
        domain.encode("ascii")
        return domain
    except UnicodeEncodeError:
        return domain.encode("idna").decode("ascii")


def _address(text: str) -> Address | None:
    """An Address with an ASCII (IDNA) domain, or None when `text` is not an address."""
    found = getaddresses([text.strip()])
    if len(found) != 1:  # a list of addresses, or none
        return None
    name, spec = found[0]
    local, at, domain = spec.rpartition("@")
    if not at or not local or "." not in domain or "@" in local or \
            any(ch.isspace() for ch in spec):
        return None
    try:
        return Address(display_name=name, username=local, domain=_ascii_domain(domain))
    except (ValueError, UnicodeError):  # bad characters, or a label IDNA cannot encode
        return None


def _needs_utf8(address: Address) -> bool:
    return not address.username.isascii()


class SmtpChannel:
    """Sends `send` actions (and `task` actions to a staff mailbox) as plain-text e-mail."""

    @classmethod
    def check_config(cls, name: str, config: Mapping[str, Any]) -> None:
        """The settings checks of the constructor, without the environment."""
        probe = cls.__new__(cls)
        probe.name = name
        probe._settings(config)

    def __init__(self, name: str, config: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.name = name
        self._settings(config)
        self.username: str | None = None
        self.password: str | None = None
        if "username_env" in config:
            self.username = env_secret(config, env, "username_env", name)
            self.password = env_secret(config, env, "password_env", name)
        self._smtp: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    def _settings(self, config: Mapping[str, Any]) -> None:
        name = self.name
        for key in config:
            if key not in KEYS:
                hint = did_you_mean(key, KEYS)
                raise ChannelConfigError(f"channel '{name}': unknown key '{key}' for an smtp "
                                         "channel", key=key, hint=hint)
        self.host = self._text(config, "host", required=True)
        port = config.get("port", 25)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ChannelConfigError(f"channel '{name}': 'port' must be a whole number from 1 "
                                     f"to 65535, not {port!r}", key="port")
        self.port = port
        tls = config.get("tls", _DEFAULT_TLS.get(port, "none"))
        if tls not in TLS_MODES:
            hint = did_you_mean(str(tls), TLS_MODES)
            raise ChannelConfigError(f"channel '{name}': 'tls' must be one of "
                                     f"{', '.join(TLS_MODES)}, not {tls!r}", key="tls",
                                     hint=hint)
        self.tls: str = tls
        sender = _address(self._text(config, "from", required=True))
        if sender is None:
            raise ChannelConfigError(f"channel '{name}': 'from' must be an e-mail address, "
                                     "optionally with a name: from = \"某品牌会员中心 "
                                     "<vip@example.com>\"", key="from")
        self.sender = sender
        self.email_attribute = self._text(config, "email_attribute") or "email"
        self.subject = self._text(config, "subject")
        task_to = self._text(config, "task_to")
        self.task_to = _address(task_to) if task_to else None
        if task_to and self.task_to is None:
            raise ChannelConfigError(f"channel '{name}': 'task_to' must be an e-mail address, "
                                     f"not {mask_text(task_to)!r}", key="task_to")
        timeout = config.get("timeout", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ChannelConfigError(f"channel '{name}': 'timeout' must be a positive number "
                                     f"of seconds, not {timeout!r}", key="timeout")
        self.timeout = float(timeout)
        if "username_env" in config or "password_env" in config:
            for key in ("username_env", "password_env"):
                if key not in config:
                    raise ChannelConfigError(f"channel '{name}': 'username_env' and "
                                             f"'password_env' go together; add '{key}'",
                                             key=next(k for k in config if k.endswith("_env")))
                check_env_name(config, key, name)
        ca_file = self._text(config, "ca_file")
        self.context: ssl.SSLContext | None = None
        if self.tls != "none":
            if ca_file and not Path(ca_file).is_file():
                raise ChannelConfigError(f"channel '{name}': 'ca_file' {ca_file} is not a file",
                                         key="ca_file")
            try:
                self.context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ChannelConfigError(f"channel '{name}': 'ca_file' {ca_file} holds no "
                                         f"usable certificate: {exc}", key="ca_file") from exc
        elif ca_file:
            raise ChannelConfigError(f"channel '{name}': 'ca_file' needs tls = \"starttls\" "
                                     "or \"ssl\"", key="ca_file")

    def _text(self, config: Mapping[str, Any], key: str, required: bool = False) -> str:
        value = config.get(key)
        if value is None:
            if required:
                raise ChannelConfigError(f"channel '{self.name}': '{key}' is required for an "
                                         "smtp channel", key=key)
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            raise ChannelConfigError(f"channel '{self.name}': '{key}' must be a non-empty "
                                     "string", key=key)
        return value

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # -- the message ------------------------------------------------------------------------

    def compose(self, message: Message) -> tuple[EmailMessage, Address] | Receipt:
        """The e-mail for `message` and its recipient, or a failed Receipt saying why not."""
        body = message.body
        if message.kind == "send":
            raw = message.contact.get(self.email_attribute)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                return Receipt.failed(f"customer {message.customer_id} has no "
                                      f"'{self.email_attribute}' in the profile; nothing sent")
            recipient = _address(str(raw))
            if recipient is None:
                return Receipt.failed(f"customer {message.customer_id}: "
                                      f"'{self.email_attribute}' {str(raw)!r} is not an "
                                      "e-mail address")
            text = str(body.get("message", ""))
            subject = str(body.get("title") or self.subject or _first_line(text))
        elif message.kind == "task":
            assignee = str(body.get("assignee") or message.owner or "")
            recipient = self.task_to or (_address(assignee) if "@" in assignee else None)
            if recipient is None:
                return Receipt.failed(f"smtp cannot deliver this task: assignee "
                                      f"{assignee or '(none)'!r} is not an e-mail "
                                      f"address and channel '{self.name}' has no 'task_to'")
            subject = f"sopkit task: {message.rule} for customer {message.customer_id}"
            text = (f"{body.get('note', '')}\n\ncustomer: {message.customer_id}\n"
                    f"assignee: {assignee or '(none)'}\ndue: {body.get('due', '')}\n"
                    f"rule: {message.rule}\n")
        else:
            return Receipt.failed(f"smtp cannot deliver a {message.kind} action")
        mail = EmailMessage(policy=_BUILD)
        mail["From"] = self.sender
        mail["To"] = Address(username=recipient.username, domain=recipient.domain)
        mail["Subject"] = " ".join(subject.split())  # no line breaks in a header
        mail["Date"] = formatdate(localtime=True)
        mail["Message-ID"] = message_id(message.key, self.sender.domain)
        mail.set_content(text)
        return mail, recipient

    # -- delivery ---------------------------------------------------------------------------

    def send(self, message: Message) -> Receipt:
        """Deliver `message` by e-mail; the Receipt says delivered, retry or failed and why.

        Every detail is masked: e-mail addresses and phone numbers never reach a log whole.
        """
        receipt = self._send(message)
        return dataclasses.replace(receipt, detail=mask_text(receipt.detail))

    def _send(self, message: Message) -> Receipt:
        composed = self.compose(message)
        if isinstance(composed, Receipt):
            return composed
        mail, recipient = composed
        with self._lock:
            try:
                return self._transaction(mail, recipient)
            except smtplib.SMTPResponseException as exc:  # greeting, EHLO or STARTTLS refused
                self._drop()
                return self._reply("the connection", exc.smtp_code, exc.smtp_error)
            except (OSError, smtplib.SMTPException) as exc:  # refused, timeout, TLS, hang-up
                self._drop()
                return Receipt.retry(f"{self.where}: {_describe(exc)}")

    def _transaction(self, mail: EmailMessage, recipient: Address) -> Receipt:
        smtp = self._connection()
        if isinstance(smtp, Receipt):
            return smtp
        options: list[str] = []
        utf8 = _needs_utf8(recipient) or _needs_utf8(self.sender)
        if utf8:
            if not smtp.has_extn("smtputf8"):
                return Receipt.failed("a mailbox name that is not ASCII needs SMTPUTF8, "
                                      f"which {self.where} does not offer")
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        data = mail.as_bytes(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
        code, reply = smtp.mail(self.sender.addr_spec, options)
        if code != 250:
            return self._abort(smtp, "sender", code, reply)
        code, reply = smtp.rcpt(recipient.addr_spec)
        if code not in (250, 251):
            masked = f"{recipient.username[:1]}***@{recipient.domain}"  # any script
            return self._abort(smtp, f"recipient {masked}", code, reply)
        try:
            code, reply = smtp.data(data)
        except smtplib.SMTPDataError as exc:  # DATA itself was refused
            return self._abort(smtp, "data", exc.smtp_code, exc.smtp_error)
        if code != 250:
            return self._abort(smtp, "message", code, reply)
        text = _decode(reply)
        found = _QUEUE_ID.search(text)
        provider_id = next(g for g in found.groups() if g) if found else None
        return Receipt.delivered(f"accepted by {self.where}: {code} {text}",
                                 provider_id=provider_id)

    def _abort(self, smtp: smtplib.SMTP, stage: str, code: int,
               reply: bytes | str) -> Receipt:
        """End a refused transaction (RSET keeps the connection usable) and classify."""
        try:
            smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()
        return self._reply(stage, code, reply)

    def _reply(self, stage: str, code: int, reply: bytes | str) -> Receipt:
        text = _decode(reply)
        detail = f"{self.where} refused {stage}: {code} {text}".rstrip()
        if 500 <= code < 600:
            return Receipt.failed(detail)
        return Receipt.retry(detail)  # 4xx, and anything unexpected, may pass

    def _connection(self) -> smtplib.SMTP | Receipt:
        """The open connection if the server still answers NOOP, else a new one."""
        if self._smtp is not None:
            try:
                if self._smtp.noop()[0] == 250:
                    return self._smtp
            except (OSError, smtplib.SMTPException):
                pass
            self._drop()
        smtp: smtplib.SMTP
        if self.tls == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=self.context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        self._smtp = smtp
        smtp.ehlo_or_helo_if_needed()
        if self.tls == "starttls":
            if not smtp.has_extn("starttls"):
                self._drop()
                return Receipt.retry(f"{self.where} did not offer STARTTLS; nothing was sent "
                                     "in clear text")
            smtp.starttls(context=self.context)
            smtp.ehlo()
        if self.username is not None and self.password is not None:
            refused = self._login(smtp, self.username, self.password)
            if refused is not None:
                self._drop()
                return refused
        return smtp

    def _login(self, smtp: smtplib.SMTP, username: str, password: str) -> Receipt | None:
        try:
            if (username + password).isascii():
                smtp.login(username, password)
            else:
                _login_utf8(smtp, username, password)
        except smtplib.SMTPAuthenticationError as exc:
            text = _decode(exc.smtp_error)
            detail = f"{self.where} refused the login: {exc.smtp_code} {text}"
            if 400 <= exc.smtp_code < 500:
                return Receipt.retry(detail)
            return Receipt.failed(detail + "; check the user name and password in the "
                                  "environment", disable=True)
        except smtplib.SMTPNotSupportedError:
            hint = " (many servers offer AUTH only after tls = \"starttls\")" \
                if self.tls == "none" else ""
            return Receipt.failed(f"{self.where} does not offer AUTH{hint}", disable=True)
        except smtplib.SMTPException as exc:
            if type(exc) is not smtplib.SMTPException:  # a reply or a hang-up: send() decides
                raise
            return Receipt.failed(f"{self.where}: {exc}", disable=True)  # no method in common
        return None

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        with self._lock:
            self._drop()


def _login_utf8(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH PLAIN with UTF-8 credentials (RFC 4616); smtplib's login encodes them as ASCII."""
    smtp.ehlo_or_helo_if_needed()
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("AUTH extension not supported by server.")
    if "PLAIN" not in smtp.esmtp_features["auth"].upper().split():
        raise smtplib.SMTPException("a user name or password that is not ASCII needs AUTH "
                                    "PLAIN, which the server does not offer")
    token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
    code, reply = smtp.docmd("AUTH", "PLAIN " + token)
    if code not in (235, 503):  # 503: already authenticated
        raise smtplib.SMTPAuthenticationError(code, reply)


def _decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _first_line(text: str, limit: int = 60) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return f"TLS failed: {exc}"
    if isinstance(exc, TimeoutError):
        return f"no answer within the timeout ({exc or 'timed out'})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        if isinstance(exc.__context__, TimeoutError):  # smtplib reports a timeout as a hang-up
            return f"no answer within the timeout ({exc.__context__ or 'timed out'})"
        return f"the server hung up: {exc}"
    return f"{type(exc).__name__}: {exc}"
