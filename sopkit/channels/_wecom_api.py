"""The WeCom (企业微信) server API under the `wecom` channel: tokens, calls, errors.

`WecomApi` POSTs to cgi-bin/... with an access token from GET cgi-bin/gettoken, cached until
`expires_in` (less a safety margin); 40014/42001 refresh it once and repeat the call. Errors
come as HTTP 200 with `errcode`/`errmsg` and become a `WecomError` that says whether trying
again can help, with the errcode's documented meaning and a hint. The secret and the token
are never logged and never reach an error text (the token travels in URLs).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from sopkit._errors import SopkitError
from sopkit._mask import mask_text

from ._base import Receipt

log = logging.getLogger("sopkit.channels.wecom")

DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com"
DEFAULT_TIMEOUT = 10.0
TOKEN_SAFETY_MARGIN = 300.0  # refresh this long before expires_in (at most a tenth of it)

# Meanings of the global error codes this channel can meet (企业微信 全局错误码).
ERRCODES: dict[int, str] = {
    -1: "系统繁忙 (system busy)",
    6000: "数据版本冲突 (data version conflict)",
    40001: "不合法的secret参数 (invalid secret)",
    40003: "无效的UserID (invalid userid)",
    40008: "不合法的msgtype参数 (invalid msgtype)",
    40013: "不合法的CorpID (invalid corp_id)",
    40014: "不合法的access_token (invalid access_token)",
    40031: "不合法的UserID列表 (invalid userid list)",
    40033: "不合法的请求字符 (\\uxxxx escapes are not allowed)",
    40035: "不合法的参数 (invalid parameter)",
    40056: "不合法的agentid (invalid agent_id)",
    40068: "不合法的标签ID (invalid tag id)",
    40091: "secret不合法 (the secret belongs to another corp)",
    40096: "不合法的外部联系人userid (invalid external_userid)",
    40097: "该成员尚未离职 (the handover member has not resigned)",
    40098: "成员尚未实名认证 (the member has no verified identity)",
    40099: "外部联系人的数量已达上限 (the member's customer limit is reached)",
    40100: "此用户的外部联系人已经在转移流程中 (the customer is already being transferred)",
    41001: "缺少access_token参数 (access_token missing)",
    41002: "缺少corpid参数 (corp_id missing)",
    41004: "缺少secret参数 (secret missing)",
    41009: "缺少userid参数 (userid missing)",
    41011: "缺少agentid参数 (agent_id missing)",
    42001: "access_token已过期 (access_token expired)",
    44004: "文本消息content参数为空 (empty text content)",
    45002: "消息内容大小超过限制 (content too long)",
    45009: "接口调用超过限制 (API frequency limit)",
    45033: "接口并发调用超过限制 (API concurrency limit)",
    47001: "数据格式错误 (malformed request body)",
    48002: "API接口无权限调用 (the app may not call this API)",
    50002: "成员不在权限范围 (the member is outside the app's visible range)",
    60011: "指定的成员/部门/标签参数无权限 (no privilege for this member, department or tag)",
    60020: "访问ip不在白名单之中 (this server's IP is not a trusted IP of the app)",
    60111: "UserID不存在 (userid not found)",
    81013: "UserID、部门ID、标签ID全部非法或无权限 (no valid recipient)",
    84061: "不存在外部联系人的关系 (not an external contact of this member)",
    84074: "没有外部联系人权限 (no external contact permission)",
}

# Passing failures and how long to wait before the next attempt (seconds).
TRANSIENT: dict[int, float] = {-1: 10.0, 6000: 2.0, 45009: 60.0, 45033: 5.0}
TOKEN_ERRORS = frozenset({40014, 42001})

_SECRET_IN_URL = re.compile(r"(access_token|corpsecret)=[^&\s\"']+")


def errcode_meaning(code: int) -> str:
    """The documented meaning of a WeCom errcode ("errcode N" when this table lacks it)."""
    meaning = ERRCODES.get(code)
    return f"errcode {code} {meaning}" if meaning else f"errcode {code}"


class WecomError(SopkitError):
    """A WeCom call that did not succeed; the text is masked and free of secrets.

    `retryable` says whether trying again later can help; `retry_after` (seconds) is a
    suggested wait. `errcode` is WeCom's code, or None when no answer came (network, HTTP).
    """

    def __init__(self, detail: str, *, errcode: int | None = None, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errcode = errcode
        self.retryable = retryable
        self.retry_after = retry_after

    def receipt(self) -> Receipt:
        if self.retryable:
            return Receipt.retry(self.detail, retry_after=self.retry_after)
        return Receipt.failed(self.detail)


class _RedactQuery(logging.Filter):
    """Hides access_token and corpsecret in httpx's request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _SECRET_IN_URL.sub(r"\1=***", record.msg)
        return True


def _redact(value: object) -> object:
    if isinstance(value, str | httpx.URL):
        return _SECRET_IN_URL.sub(r"\1=***", str(value))
    return value


_httpx_log = logging.getLogger("httpx")
if not any(isinstance(f, _RedactQuery) for f in _httpx_log.filters):
    _httpx_log.addFilter(_RedactQuery())



class WecomApi:
    """The HTTP side of one `wecom` channel: one connection pool, one cached access token.

    `name`, `corp_id`, `secret_env` and `external_userid_attribute` are the channel's
    settings, named in error hints; `clock` (seconds, monotonic) times the token cache;
    `transport` (an httpx transport, e.g. `httpx.MockTransport`) replaces the network.
    """

    def __init__(self, *, name: str, corp_id: str, secret: str, secret_env: str,
                 base_url: str, timeout: float, external_userid_attribute: str,
                 clock: Callable[[], float], transport: httpx.BaseTransport | None = None
                 ) -> None:
        self.name = name
        self.corp_id = corp_id
        self.secret_env = secret_env
        self.timeout = timeout
        self.external_userid_attribute = external_userid_attribute
        self._secret = secret
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0
        self._issued: list[str] = []  # every token seen, scrubbed from texts
        self._client = httpx.Client(base_url=base_url, timeout=timeout, transport=transport,
                                    headers={"User-Agent": "sopkit-wecom"})

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def pages(self, path: str, body: dict[str, Any], field: str) -> list[Mapping[str, Any]]:
        """The items under `field` of every page of `path`, following `next_cursor`."""
        items: list[Mapping[str, Any]] = []
        seen: set[str] = set()
        while True:
            data = self.call(path, body)
            items.extend(i for i in data.get(field) or [] if isinstance(i, Mapping))
            cursor = data.get("next_cursor")
            if not isinstance(cursor, str) or not cursor:
                return items
            if cursor in seen:
                raise WecomError(f"WeCom {path}: the same next_cursor came twice; stopped paging",
                                 retryable=True)
            seen.add(cursor)
            body = {**body, "cursor": cursor}

    def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST cgi-bin/`path` with the access token; the answer when errcode is 0.

        40014/42001 refresh the token once and repeat the call; anything else non-zero
        raises WecomError.
        """
        for attempt in (1, 2):
            token = self._access_token()
            data = self._http("POST", f"/cgi-bin/{path}", path, {"access_token": token}, body)
            code = int_of(data.get("errcode"), 0)
            if code == 0:
                return data
            if code in TOKEN_ERRORS and attempt == 1:
                log.info("wecom %s: %s; fetching a new access_token", path, errcode_meaning(code))
                self._forget(token)
                continue
            raise self.code_error(code, str(data.get("errmsg") or ""), path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _access_token(self) -> str:
        with self._lock:
            now = self._clock()
            if self._token is not None and now < self._token_expires:
                return self._token
            data = self._http("GET", "/cgi-bin/gettoken", "gettoken",
                              {"corpid": self.corp_id, "corpsecret": self._secret}, None)
            code = int_of(data.get("errcode"), 0)
            token = data.get("access_token")
            if code != 0:
                raise self.code_error(code, str(data.get("errmsg") or ""), "gettoken")
            if not isinstance(token, str) or not token:
                raise WecomError("WeCom gettoken: the answer holds no access_token",
                                 retryable=True)
            expires_in = float(int_of(data.get("expires_in"), 7200))
            self._issued.append(token)
            del self._issued[:-16]
            self._token = token
            self._token_expires = now + expires_in - min(TOKEN_SAFETY_MARGIN, expires_in / 10)
            log.debug("wecom: new access_token, valid for %d s", int(expires_in))
            return token

    def _forget(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def _http(self, method: str, url: str, what: str, params: Mapping[str, Any],
              body: Mapping[str, Any] | None) -> dict[str, Any]:
        content = None
        headers = {}
        if body is not None:
            # Raw UTF-8: WeCom rejects \uxxxx escapes (errcode 40033).
            content = json.dumps(body, ensure_ascii=False, sort_keys=True,
                                 separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=utf-8"
        try:
            response = self._client.request(method, url, params=dict(params), content=content,
                                            headers=headers)
        except httpx.TimeoutException:
            raise WecomError(f"WeCom {what}: no answer within {self.timeout:g} s (timeout)",
                             retryable=True) from None
        except Exception as exc:  # any transport failure is passing; its text may hold the URL
            raise WecomError(self.clean(f"WeCom {what}: {type(exc).__name__}: {exc}"),
                             retryable=True) from None
        if response.status_code != 200:
            raise WecomError(f"WeCom {what}: HTTP {response.status_code}", retryable=True,
                             retry_after=retry_after_of(response.headers.get("Retry-After")))
        try:
            data = json.loads(response.content)
        except ValueError:
            raise WecomError(f"WeCom {what}: the answer is not JSON", retryable=True) from None
        if not isinstance(data, dict):
            raise WecomError(f"WeCom {what}: the answer is not a JSON object", retryable=True)
        return data

    def code_error(self, code: int, errmsg: str, what: str, *,
                   subject: str = "") -> WecomError:
        """The WecomError for a non-zero errcode: retryable or not, its meaning, a hint."""
        about = f" for customer {subject}" if subject else ""
        detail = f"WeCom {what}{about}: {errcode_meaning(code)}"
        if errmsg:
            detail += f"; errmsg: {errmsg}"
        if code in TRANSIENT:
            return WecomError(self.clean(detail + "; will retry"), errcode=code, retryable=True,
                              retry_after=TRANSIENT[code])
        if code in TOKEN_ERRORS:
            return WecomError(self.clean(detail + "; a fresh access_token was refused too, "
                                         "will retry"), errcode=code, retryable=True)
        hint = self._hint(code)
        return WecomError(self.clean(detail + (f". Hint: {hint}" if hint else "")),
                          errcode=code)

    def _hint(self, code: int) -> str:
        if code in (40001, 40091, 41004):
            return (f"check that the environment variable {self.secret_env} (secret_env) holds "
                    f"the Secret of the app in corp '{self.corp_id}' (应用管理 → the app → "
                    "Secret); for customer contact APIs the app must be listed under 客户联系 → "
                    "可调用接口的应用")
        if code in (40013, 41002):
            return "check corp_id: the 企业ID under 我的企业 → 企业信息"
        if code in (40056, 41011):
            return "check agent_id: the AgentId of the app that sends the alerts"
        if code in (48002, 60011, 84074, 50002):
            return ("give the app the permission: list it under 客户联系 → 可调用接口的应用 and "
                    "put the staff members in its visible range")
        if code == 60020:
            return "add this server's public IP to the app's 企业可信IP"
        if code == 40068:
            return f"check the tag ids in tag_ids of [channels.{self.name}] (get_corp_tag_list)"
        if code in (40096, 84061):
            return (f"check the customer's '{self.external_userid_attribute}' attribute and "
                    "that the owner is the staff member who added the customer")
        if code in (40003, 60111, 40031):
            return "check the staff userid (owner, assignee or reassign target)"
        if code == 40097:
            return "only customers of members who have left (离职) can be transferred this way"
        return ""

    def clean(self, text: str) -> str:
        """`text` without the secret or any token, with phone numbers and e-mails masked."""
        for value in (self._secret, *self._issued):
            if value:
                text = text.replace(value, "***")
        return mask_text(_SECRET_IN_URL.sub(r"\1=***", text))



def int_of(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return default
    return default


def retry_after_of(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
