"""The `sms` channel: one provider-neutral HTTP SMS gateway.

sopkit POSTs `{"to", "text", "key"}` as JSON to the gateway's `url` (bearer token from
`token_env`); a small adapter in front of any provider (Aliyun, Tencent Cloud, an operator's
CMPP bridge ...) turns that into the provider's own API. Why not apprise: its SMS plugins are
each tied to one (mostly non-Chinese) provider, `notify()` answers only true or false (no
retry-versus-permanent, no Retry-After, no provider message id) and carries no idempotency
key, so neither the outbox nor an offline test could rely on it.

Length is counted as Chinese providers bill it: the signature and the text together, every
character one unit (UTF-16 code units, so an emoji is two); up to 70 units is one segment,
a longer message is split into segments of 67. Longer than `max_segments` fails.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx

from sopkit._mask import mask_text

from ._base import ChannelConfigError, Message, Receipt, check_env_name
from ._webhook import (
    USER_AGENT,
    Clock,
    bearer,
    check_keys,
    check_timeout,
    check_url,
    check_url_setting,
    post,
    status_receipt,
    transport_receipt,
    webhook_id,
)

SINGLE_SEGMENT = 70
CONCAT_SEGMENT = 67
_MOBILE = re.compile(r"(?:\+86|0086|86)?(1[3-9]\d{9})")
_SEPARATORS = re.compile(r"[\s\-().]")


def segments(text: str) -> int:
    """How many SMS segments `text` takes (70 units alone, 67 each when concatenated).

    >>> segments("您好"), segments("好" * 70), segments("好" * 71), segments("好" * 134)
    (1, 1, 2, 2)
    """
    units = len(text.encode("utf-16-le")) // 2
    if units <= SINGLE_SEGMENT:
        return 1
    return math.ceil(units / CONCAT_SEGMENT)


def normalise_mobile(value: Any) -> str | None:
    """The 11-digit mainland mobile number in `value` (spaces, dashes, +86 allowed), or None.

    >>> normalise_mobile("+86 138-1234-5678"), normalise_mobile("12345")
    ('13812345678', None)
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    match = _MOBILE.fullmatch(_SEPARATORS.sub("", str(value)))
    return match.group(1) if match else None


def _hide(value: str) -> str:
    """Mask a number that mask_text may not recognise (it is not a valid mobile number)."""
    if len(value) < 6:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 5) + value[-2:]


class SmsChannel:
    """Send each `send` action's message as an SMS through a generic HTTP gateway.

    Config: `url` (required; or `url_env`), `token_env` (optional bearer token), `phone_attribute`
    (default "phone"), `sign` (短信签名, prepended as 【...】), `max_segments` (default 3),
    `timeout` (seconds, default 10). `clock` (unix seconds) and `transport` (an httpx
    transport, e.g. `httpx.MockTransport`, in place of the network) are injectable for tests.
    """

    KEYS = ("url", "url_env", "token_env", "phone_attribute", "sign", "max_segments", "timeout")

    @classmethod
    def check_config(cls, name: str, config: Mapping[str, Any]) -> None:
        """The settings checks of the constructor, without the environment."""
        check_keys(name, "sms", config, cls.KEYS)
        check_url_setting(name, config)
        check_timeout(name, config)
        phone = config.get("phone_attribute", "phone")
        if not isinstance(phone, str) or not phone:
            raise ChannelConfigError(f"channel '{name}': 'phone_attribute' must name a profile "
                                     "attribute, e.g. phone_attribute = \"mobile\"",
                                     key="phone_attribute")
        cls._sign(name, config.get("sign"))
        segments = config.get("max_segments", 3)
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
            raise ChannelConfigError(f"channel '{name}': 'max_segments' must be a whole number "
                                     f"of at least 1, e.g. max_segments = 3 "
                                     f"(got {segments!r})", key="max_segments")
        check_env_name(config, "token_env", name, required=False)

    def __init__(self, name: str, config: Mapping[str, Any], env: Mapping[str, str], *,
                 clock: Clock = time.time, transport: httpx.BaseTransport | None = None
                 ) -> None:
        self.check_config(name, config)
        self.name = name
        self.url = check_url(name, config, env)
        self.timeout = check_timeout(name, config)
        self.phone_attribute: str = config.get("phone_attribute", "phone")
        self.sign = self._sign(name, config.get("sign"))
        self.max_segments: int = config.get("max_segments", 3)
        self.headers = {"Content-Type": "application/json; charset=utf-8",
                        "User-Agent": USER_AGENT}
        token = bearer(name, config, env)
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self._clock = clock
        self._client = httpx.Client(timeout=self.timeout, follow_redirects=False,
                                    transport=transport)

    @staticmethod
    def _sign(name: str, value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str) or not value.strip("【】 "):
            raise ChannelConfigError(f"channel '{name}': 'sign' must be the SMS signature "
                                     "text, e.g. sign = \"【某品牌】\"", key="sign")
        inner = value.strip().removeprefix("【").removesuffix("】")
        return f"【{inner}】"

    def text(self, message: Message) -> str | None:
        """The SMS text for `message`: the signature, then the rendered message."""
        body = message.body.get("message")
        if not isinstance(body, str) or not body.strip():
            return None
        if self.sign and not body.startswith(self.sign):
            return self.sign + body
        return body

    def send(self, message: Message) -> Receipt:
        raw = message.contact.get(self.phone_attribute)
        if raw is None or raw == "":
            return Receipt.failed(f"no phone number in profile attribute "
                                  f"'{self.phone_attribute}'")
        to = normalise_mobile(raw)
        if to is None:
            return Receipt.failed(f"'{_hide(str(raw))}' in profile attribute "
                                  f"'{self.phone_attribute}' is not a mainland mobile number "
                                  "(11 digits starting 13-19, optionally +86)")
        text = self.text(message)
        if text is None:
            return Receipt.failed(f"the {message.kind} action has no 'message' to send by SMS; "
                                  "route only `send` actions to an sms channel")
        count = segments(text)
        if count > self.max_segments:
            units = len(text.encode("utf-16-le")) // 2
            return Receipt.failed(
                f"the SMS is {units} characters with its signature: {count} segments of "
                f"{CONCAT_SEGMENT}, more than max_segments = {self.max_segments} allows; "
                "shorten the template or raise max_segments")
        payload = {"to": to, "text": text, "key": message.key}
        content = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {**self.headers, "Idempotency-Key": webhook_id(message.key)}
        try:
            response, data = post(self._client, self.url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            return transport_receipt(exc, self.url, self.timeout)
        failure = status_receipt(response, data, self._clock())
        if failure is not None:
            return failure
        provider_id = None
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("id") not in (None, ""):
            provider_id = str(answer["id"])
        detail = f"sent to {mask_text(to)}, {count} segment{'s' if count > 1 else ''}"
        if provider_id is None:
            detail += f" (HTTP {response.status_code}, no id in the answer)"
        return Receipt.delivered(detail, provider_id=provider_id, segments=count)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> SmsChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
