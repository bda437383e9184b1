"""The `webhook` channel: a signed JSON POST per action (Standard Webhooks 1.0).

Each request carries `webhook-id` (derived from the idempotency key, the same on every
retry), `webhook-timestamp` (unix seconds of the attempt) and, when `secret_env` names a
`whsec_` secret, `webhook-signature` = `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
`verify_signature` checks one on the receiving side.

Status handling follows the specification's etiquette: 2xx delivered; 410 Gone failed and
disable the channel; 408, 429 and 5xx retry (honouring Retry-After); 3xx failed (redirects
are never followed); other 4xx failed with a masked excerpt of the answer; timeouts and
connection errors retry. The helpers below (`parse_retry_after`, `HttpOutcome` ...) are
shared with the `sms` channel.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

from sopkit._errors import SopkitError, did_you_mean
from sopkit._mask import mask_text
from sopkit._version import __version__

from ._base import ChannelConfigError, Message, Receipt, check_env_name, env_secret

USER_AGENT = f"sopkit/{__version__}"
SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the specification: "at least 24 bytes"
DEFAULT_TOLERANCE = 300.0  # seconds a receiver accepts between webhook-timestamp and now
EXCERPT_CHARS = 200
_EXCERPT_BYTES = 4096  # read no more of an error answer than this
_SAFE_ID = re.compile(r"[A-Za-z0-9_:\-]{1,200}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_GENERATE = ("python -c \"import base64, secrets; print('whsec_' + "
             "base64.b64encode(secrets.token_bytes(32)).decode())\"")

Clock = Callable[[], float]


class WebhookVerificationError(SopkitError, ValueError):
    """A webhook request failed verification; the message says which check failed."""


# -- signing -------------------------------------------------------------------------------

def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (the prefix is optional).

    ValueError says what is wrong without repeating the secret.
    """
    raw = secret.strip()
    raw = raw.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not 'whsec_' followed by base64") from exc
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"decodes to {len(key)} bytes; Standard Webhooks secrets need at "
                         f"least {MIN_SECRET_BYTES}")
    return key


def generate_secret(nbytes: int = 32) -> str:
    """A fresh random secret in the `whsec_<base64>` form, for a new endpoint."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value (`v1,<base64>`) of one request.

    `secret` is a `whsec_` string or the decoded key bytes.
    """
    key = secret if isinstance(secret, bytes) else decode_secret(secret)
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_signature(secret: str | bytes, headers: Mapping[str, str], body: bytes, *,
                     now: float | None = None,
                     tolerance: float = DEFAULT_TOLERANCE) -> None:
    """Check a received request; raise WebhookVerificationError saying why it fails.

    `headers` may use any letter case; `body` must be the raw bytes as received (parsing
    and re-serialising JSON changes them). The timestamp must be within `tolerance`
    seconds of `now` (default: the current time), which defeats replays. Several
    space-separated signatures (secret rotation) pass when any `v1` one matches.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
               if not lower.get(h)]
    if missing:
        raise WebhookVerificationError("missing header(s): " + ", ".join(missing))
    msg_id, stamp, given = (lower["webhook-id"], lower["webhook-timestamp"],
                            lower["webhook-signature"])
    if not re.fullmatch(r"\d{1,12}", stamp.strip()):
        raise WebhookVerificationError(f"webhook-timestamp {stamp!r} is not unix seconds")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {current - timestamp:+.0f} s from now (tolerance "
            f"{tolerance:.0f} s): a replay or a wrong clock")
    try:
        expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    except ValueError as exc:
        raise WebhookVerificationError(f"the secret {exc}") from exc
    for candidate in given.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
            return
    raise WebhookVerificationError("no v1 signature matches: the body, id or timestamp was "
                                   "changed, or the secret differs")


def webhook_id(key: str) -> str:
    """The `webhook-id` for an idempotency key: the key itself when it is header-safe.

    A key with other characters (Chinese rule names, dots in an e-mail customer id; the
    specification forbids `.` in ids) becomes `sopkit_` + 32 hex digits of its SHA-256:
    still the same on every retry. The body's `data.key` always holds the key itself.
    """
    if _SAFE_ID.fullmatch(key):
        return key
    return "sopkit_" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


# -- HTTP helpers shared with the sms channel ----------------------------------------------

def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value: delta seconds or an HTTP date; else None.

    >>> parse_retry_after("120", 0.0)
    120.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 30.0)
    30.0
    """
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"[0-9]+", text):
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are always GMT
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


def excerpt(data: bytes, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line, masked excerpt of an answer body for receipts."""
    text = mask_text(" ".join(data.decode("utf-8", errors="replace").split()))
    return text[:limit] + "…" if len(text) > limit else text  # masked before it is cut short


def post(client: httpx.Client, url: str, *, content: bytes,
         headers: Mapping[str, str]) -> tuple[httpx.Response, bytes]:
    """POST and read at most a few KiB of the answer (enough for ids and excerpts)."""
    with client.stream("POST", url, content=content, headers=dict(headers)) as response:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= _EXCERPT_BYTES:
                break
        return response, b"".join(chunks)


def transport_receipt(exc: httpx.HTTPError, url: str, timeout: float) -> Receipt:
    """A retry receipt for an error before any answer (timeout, refused, reset)."""
    where = display_url(url)
    if isinstance(exc, httpx.TimeoutException):
        return Receipt.retry(f"no answer from {where} within {timeout:g} s "
                             f"({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return Receipt.retry(f"cannot connect to {where}: {mask_text(str(exc)) or 'refused'}")
    return Receipt.retry(f"request to {where} failed: {type(exc).__name__}: "
                         f"{mask_text(str(exc))}")


def status_receipt(response: httpx.Response, data: bytes, now: float) -> Receipt | None:
    """The receipt for a non-2xx answer (None for 2xx: the caller reads its body)."""
    code = response.status_code
    if 200 <= code < 300:
        return None
    label = f"HTTP {code} {response.reason_phrase}".rstrip()
    body = excerpt(data)
    tail = f": {body}" if body else ""
    if 300 <= code < 400:
        location = response.headers.get("location")
        moved = f" to {mask_text(location.split('?', 1)[0])}" if location else ""
        return Receipt.failed(f"{label}: redirect{moved} not followed; put the final URL in "
                              "the channel's 'url'")
    if code == 410:
        return Receipt.failed(f"{label}: the receiver asks not to be sent anything more; "
                              "the channel should be disabled" + tail, disable=True)
    if code in (408, 429) or code >= 500:
        wait = parse_retry_after(response.headers.get("retry-after"), now)
        return Receipt.retry(label + tail, retry_after=wait)
    return Receipt.failed(label + tail)


# -- config helpers ------------------------------------------------------------------------

def check_keys(channel: str, kind: str, config: Mapping[str, Any],
               known: Iterable[str]) -> None:
    """ChannelConfigError for the first unknown key, with a suggestion."""
    allowed = sorted(known)
    for key in config:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            raise ChannelConfigError(f"channel '{channel}' ({kind}): unknown key '{key}'",
                                     key=str(key), hint=hint)


def check_url_setting(channel: str, config: Mapping[str, Any]) -> str | None:
    """The checks of `url`/`url_env` that need no environment: the URL when `url` gives it,
    None when `url_env` names the variable holding it."""
    if config.get("url") is not None and config.get("url_env") is not None:
        raise ChannelConfigError(f"channel '{channel}': give 'url' or 'url_env', not both",
                                 key="url_env")
    if config.get("url_env") is not None:
        check_env_name(config, "url_env", channel)
        return None
    url = config.get("url")
    if url is None:
        raise ChannelConfigError(f"channel '{channel}': 'url' is required, e.g. "
                                 "url = \"https://example.com/hooks/sopkit\" (or 'url_env' "
                                 "naming an environment variable, when the URL holds a token)")
    return _valid_url(channel, url, f"'url' {url!r}", "url")


def _valid_url(channel: str, url: Any, source: str, key: str) -> str:
    if not isinstance(url, str):
        raise ChannelConfigError(f"channel '{channel}': 'url' must be a string", key=key)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ChannelConfigError(f"channel '{channel}': {source} is not a URL: "
                                 f"{exc}", key=key) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ChannelConfigError(f"channel '{channel}': {source} must be an http:// or "
                                 "https:// URL with a host", key=key)
    if key == "url" and parsed.userinfo:
        raise ChannelConfigError(f"channel '{channel}': 'url' holds a user name or password, "
                                 "and secrets never go in the playbook: use 'token_env', or "
                                 "'url_env' naming an environment variable holding the URL",
                                 key=key)
    return url


def check_url(channel: str, config: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The required http(s) URL of a channel: `url`, or `url_env` when the URL holds a secret."""
    url = check_url_setting(channel, config)
    if url is not None:
        return url
    secret = env_secret(config, env, "url_env", channel)
    return _valid_url(channel, secret, "the URL in environment variable "
                      f"{config['url_env']}", "url_env")


def display_url(url: str) -> str:
    """The URL as receipts show it: no user name, password or query (they may be secret)."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


def check_timeout(channel: str, config: Mapping[str, Any], default: float = 10.0) -> float:
    """The positive `timeout` (seconds) of a channel table."""
    value = config.get("timeout", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ChannelConfigError(f"channel '{channel}': 'timeout' must be a positive number "
                                 f"of seconds, e.g. timeout = 10 (got {value!r})",
                                 key="timeout")
    return float(value)


_RESERVED = {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
             "content-length", "host", "user-agent", "transfer-encoding", "connection"}


def check_headers(channel: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The extra, non-secret `headers` table of a channel."""
    value = config.get("headers", {})
    if not isinstance(value, Mapping):
        raise ChannelConfigError(f"channel '{channel}': 'headers' must be a table of "
                                 "header name = value, e.g. headers = { X-Team = \"crm\" }",
                                 key="headers")
    out: dict[str, str] = {}
    for name, val in value.items():
        where = f"channel '{channel}': header '{name}'"
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ChannelConfigError(f"{where} is not a valid header name", key="headers")
        if name.lower() in ("authorization", "proxy-authorization", "cookie"):
            raise ChannelConfigError(f"{where} carries a secret, and secrets never go in the "
                                     "playbook: set 'token_env' to the name of an environment "
                                     "variable holding the bearer token", key="headers")
        if name.lower() in _RESERVED:
            raise ChannelConfigError(f"{where} is set by sopkit itself; remove it", key="headers")
        if not isinstance(val, str):
            raise ChannelConfigError(f"{where} must be a string", key="headers")
        if "\r" in val or "\n" in val or not val.isascii() or not val.isprintable():
            raise ChannelConfigError(f"{where}: the value must be printable ASCII on one line",
                                     key="headers")
        out[name] = val
    return out


def bearer(channel: str, config: Mapping[str, Any], env: Mapping[str, str],
           key: str = "token_env") -> str | None:
    """The bearer token named by `token_env` (optional; an error when named but unset)."""
    if check_env_name(config, key, channel, required=False) is None:
        return None
    token = env_secret(config, env, key, channel)
    if token is not None and (not token.isascii() or not token.isprintable()):
        raise ChannelConfigError(f"channel '{channel}': the token in environment variable "
                                 f"{config[key]} (named by '{key}') must be printable ASCII")
    return token


# -- the channel ---------------------------------------------------------------------------

class WebhookChannel:
    """POST each action as a Standard Webhooks JSON event to `url`.

    Config: `url` (required; or `url_env`), `secret_env` (optional: signs requests), `token_env`
    (optional bearer token), `timeout` (seconds, default 10), `headers` (extra, non-secret).
    `clock` (unix seconds) and `transport` (an httpx transport, e.g. `httpx.MockTransport`,
    in place of the network) are injectable for tests.
    """

    KEYS = ("url", "url_env", "secret_env", "token_env", "timeout", "headers")

    @classmethod
    def check_config(cls, name: str, config: Mapping[str, Any]) -> None:
        """The settings checks of the constructor, without the environment."""
        check_keys(name, "webhook", config, cls.KEYS)
        check_url_setting(name, config)
        check_timeout(name, config)
        check_headers(name, config)
        for key in ("secret_env", "token_env"):
            check_env_name(config, key, name, required=False)

    def __init__(self, name: str, config: Mapping[str, Any], env: Mapping[str, str], *,
                 clock: Clock = time.time, transport: httpx.BaseTransport | None = None
                 ) -> None:
        self.check_config(name, config)
        self.name = name
        self.url = check_url(name, config, env)
        self.timeout = check_timeout(name, config)
        self.headers = check_headers(name, config)
        self._clock = clock
        self._key: bytes | None = None
        secret = env_secret(config, env, "secret_env", name, required=False)
        if config.get("secret_env") is not None and secret is None:
            raise ChannelConfigError(
                f"channel '{name}': environment variable {config['secret_env']} (named by "
                "'secret_env') is not set; set it to a secret made with " + _GENERATE)
        if secret is not None:
            try:
                self._key = decode_secret(secret)
            except ValueError as exc:
                raise ChannelConfigError(
                    f"channel '{name}': the secret in environment variable "
                    f"{config['secret_env']} (named by 'secret_env') {exc}; make one with "
                    + _GENERATE) from exc
        token = bearer(name, config, env)
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(timeout=self.timeout, follow_redirects=False,
                                    headers={"User-Agent": USER_AGENT}, transport=transport)

    @property
    def signed(self) -> bool:
        """Whether requests carry a webhook-signature."""
        return self._key is not None

    def body(self, message: Message) -> bytes:
        """The request body: `{"type": "sopkit.<kind>", "timestamp", "data"}` as UTF-8 JSON."""
        event = {"type": f"sopkit.{message.kind}", "timestamp": message.time,
                 "data": message.to_json()}
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def request_headers(self, message: Message, body: bytes) -> dict[str, str]:
        """Every header of the request for `message` (signature included when signed)."""
        msg_id = webhook_id(message.key)
        stamp = int(self._clock())
        headers = {**self.headers, "Content-Type": "application/json; charset=utf-8",
                   "webhook-id": msg_id, "webhook-timestamp": str(stamp)}
        if self._key is not None:
            headers["webhook-signature"] = sign(self._key, msg_id, stamp, body)
        return headers

    def send(self, message: Message) -> Receipt:
        body = self.body(message)
        headers = self.request_headers(message, body)
        try:
            response, data = post(self._client, self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return transport_receipt(exc, self.url, self.timeout)
        failure = status_receipt(response, data, self._clock())
        if failure is not None:
            return failure
        return Receipt.delivered(f"HTTP {response.status_code}",
                                 webhook_id=headers["webhook-id"])

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> WebhookChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
