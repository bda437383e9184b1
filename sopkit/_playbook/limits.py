"""Platform limits the linter checks against: WeCom's group messages a customer may receive, and
how many segments an SMS text takes; with the policy caps that bound a channel."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sopkit._lang.templates import _parse as parse_template
from sopkit._playbook import models as m

# WeCom 客户联系 企业群发 (externalcontact/add_msg_template): "每位客户/每个客户群每月最多可
# 接收条数为当月天数" (as many a month as the month has days), and an enterprise may lower it
# to 7 a week or 1 a day. Source: https://developer.work.weixin.qq.com/document/path/92135
# (updated 2025-11-17). Older documents said 4 a month.
WECOM_SOURCE = "developer.work.weixin.qq.com/document/path/92135"
WECOM_MONTH_DAYS = (28, 29, 30, 31)
DAY = 86400
# SMS: 70 characters fit one message of UCS-2 text (any Chinese); a longer text is sent in
# parts of 67. GSM 7-bit text (plain ASCII, roughly) fits 160, or parts of 153.
SMS_MAX_SEGMENTS = 3
_GSM = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMN"
           "OPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
PLACEHOLDER_CHARS = 10  # a placeholder without a default is counted as this many characters


def at_most(rule: m.Rule, period: int) -> int | None:
    """The most times a rule can fire for one customer within `period` seconds (None: any)."""
    most: int | None = None
    if rule.cooldown is not None:
        most = math.ceil(period / m.parse_duration(rule.cooldown))
    if rule.max_times is not None:
        most = rule.max_times if most is None else min(most, rule.max_times)
    return most


def within_wecom(cap: tuple[int, int]) -> bool:
    """A cap (count, seconds) that keeps a customer within WeCom's monthly limit."""
    count, seconds = cap
    return math.ceil(28 * DAY / seconds) * count <= 28


def policy_caps(pb: m.Playbook) -> dict[str | None, list[tuple[int, int]]]:
    """Channel (None: every channel) -> its `[[policy.caps]]` as (max, window in seconds)."""
    out: dict[str | None, list[tuple[int, int]]] = {}
    for cap in pb.policy.caps:
        out.setdefault(cap.channel, []).append((cap.max, m.parse_duration(cap.per)))
    return out


def rough_render(text: str, params: Mapping[str, Any]) -> str:
    """A template with params filled in, other placeholders at their default or 10 chars."""
    for raw, name, default in parse_template(text):
        if name.startswith("params.") and name[7:] in params:
            value = params[name[7:]]
            shown = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            shown = default if default is not None else "X" * PLACEHOLDER_CHARS
        text = text.replace(raw, shown, 1)
    return text


def sms_segments(text: str) -> tuple[int, int, int]:
    """(characters, segments, characters per segment) of an SMS text."""
    gsm = all(ch in _GSM for ch in text)
    single, part = (160, 153) if gsm else (70, 67)
    length = len(text)
    if length <= single:
        return length, 1, single
    return length, math.ceil(length / part), part
