"""A local fake of the WeCom (企业微信) server API that follows the documented behaviour.

We cannot run WeCom, so tests talk over real HTTP to this stand-in. It implements, as the
developer documentation describes them (developer.work.weixin.qq.com), errors included
(HTTP 200 with `errcode`/`errmsg`):

- GET  cgi-bin/gettoken                                  (获取access_token, doc 91039)
- POST cgi-bin/externalcontact/add_msg_template          (创建企业群发, doc 92135)
- POST cgi-bin/externalcontact/get_groupmsg_send_result  (获取企业群发成员执行结果)
- POST cgi-bin/message/send                              (发送应用消息, doc 90236; text only)
- POST cgi-bin/externalcontact/mark_tag                  (编辑客户企业标签, doc 92118)
- POST cgi-bin/externalcontact/resigned/transfer_customer (分配离职成员的客户, doc 94081)
- POST cgi-bin/externalcontact/resigned/transfer_result   (查询客户接替状态, doc 94082)

Documented behaviour it honours: a token is reused while valid ("有效期内重复获取返回相同结果"),
an expired one answers 42001 and an unknown one 40014; request bodies with \\uxxxx escapes
answer 40033; message/send with `enable_duplicate_check` accepts a request whose JSON equals
one delivered within `duplicate_check_interval` (default 1800 s, at most 4 h) but does not
deliver it again; transfer_customer takes at most 100 customers and answers per customer;
transfer_result pages with a cursor. Where the documentation is silent the fake picks a
plausible global error code and says so in a comment.

Everything is recorded in memory for assertions (`calls`, `inbox`, `templates`, `tags`,
`transfers`) and scriptable: `fail_next(endpoint, errcode, times)`, `http_error_next`,
`delay_next`, `expire_tokens`, `revoke_tokens`.

In tests::

    with WecomFake() as fake:
        fake.add_staff("zhangsan")
        fake.add_customer("wmAAAA", owner="zhangsan")
        channel = WecomChannel("wecom", {"corp_id": fake.corp_id, "secret_env": "S",
                                         "base_url": fake.url}, {"S": fake.secret})

Standalone (for end-to-end runs of the CLI)::

    python tests/wecom_fake.py --port-file /tmp/port --staff zhangsan --customer wmAAAA=zhangsan

writes the port number to the file once it listens. GET /_fake/state shows what it recorded;
POST /_fake/script {"endpoint": ..., "errcode": ..., "times": ...} scripts failures and
POST /_fake/expire_tokens expires every token.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GETTOKEN = "gettoken"
ADD_MSG_TEMPLATE = "externalcontact/add_msg_template"
GROUPMSG_SEND_RESULT = "externalcontact/get_groupmsg_send_result"
MESSAGE_SEND = "message/send"
MARK_TAG = "externalcontact/mark_tag"
TRANSFER_CUSTOMER = "externalcontact/resigned/transfer_customer"
TRANSFER_RESULT = "externalcontact/resigned/transfer_result"
ENDPOINTS = (GETTOKEN, ADD_MSG_TEMPLATE, GROUPMSG_SEND_RESULT, MESSAGE_SEND, MARK_TAG,
             TRANSFER_CUSTOMER, TRANSFER_RESULT)

# errmsg texts in the style WeCom answers with (English, then hint and a link).
ERRMSG = {
    -1: "system busy",
    40001: "invalid credential",
    40003: "invalid userid",
    40008: "invalid message type",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40033: "invalid charset. please check your request, if include \\uxxxx will create fail!",
    40035: "invalid parameter",
    40056: "invalid agentid",
    40068: "invalid tagid",
    40096: "invalid external userid",
    40097: "invalid handover userid, the user has not resigned",
    40100: "the external contact is already in transfer",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "corpsecret missing",
    41009: "missing userid",
    41011: "missing agentid",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    44004: "empty content",
    45002: "content size out of limit",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    47001: "data format error",
    60111: "userid not found",
    81013: "user & party & tag all invalid",
    84061: "not external contact",
}

TEMPLATE_CONTENT_MAX_BYTES = 4000
APP_MESSAGE_MAX_BYTES = 2048
MAX_DUPLICATE_CHECK_INTERVAL = 4 * 3600
MAX_TRANSFER = 100
TAKEOVER_DELAY = 24 * 3600
_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u[0-9a-fA-F]{4}")



# a [channels.wecom] table pointed at a fake (format with url=WecomFake.url), for playbooks
# the live tests build; its secret comes from SOPKIT_TEST_WECOM_SECRET
WECOM_TABLE = '''
[channels.wecom]
type = "wecom"
corp_id = "ww-fake-corp"
secret_env = "SOPKIT_TEST_WECOM_SECRET"
agent_id = 1000002
base_url = "{url}"
'''

class ManualClock:
    """A clock that moves only when told to: pass it to the fake and to the channel."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Call:
    """One request the fake received, and what it answered."""

    endpoint: str
    method: str
    query: dict[str, str]
    body: Any
    raw: bytes
    answer: dict[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass
class _Script:
    errcode: int | None = None
    http_status: int | None = None
    delay: float = 0.0
    times: int = 1


@dataclass
class Transfer:
    """A resigned member's customer handed to another member (resigned/transfer_customer)."""

    handover: str
    takeover: str
    external_userid: str
    status: int = 2  # 等待接替
    takeover_time: int = 0


class WecomApiError(Exception):
    """Raised inside the fake to answer with an errcode."""

    def __init__(self, errcode: int, detail: str = "") -> None:
        super().__init__(errcode)
        self.errcode = errcode
        self.detail = detail


class WecomFake:
    """The fake WeCom server: a threaded http.server on 127.0.0.1, port 0 by default."""

    def __init__(self, corp_id: str = "ww-fake-corp", secret: str = "fake-corpsecret-0123",
                 agent_id: int = 1000002, *, token_ttl: int = 7200,
                 clock: Callable[[], float] = time.monotonic, page_size: int = 1000,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.corp_id = corp_id
        self.secret = secret
        self.agent_id = agent_id
        self.token_ttl = token_ttl
        self.clock = clock
        self.page_size = page_size  # transfer_result: "每个分页返回的数据不会超过1000条"
        self._epoch0 = time.time() - clock()
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        # the corp
        self.staff: dict[str, bool] = {}  # userid -> resigned
        self.customers: dict[str, set[str]] = {}  # external_userid -> members who added it
        self.corp_tags: set[str] = set()
        # what happened
        self.calls: list[Call] = []
        self.tokens: dict[str, float] = {}  # token -> expiry (clock seconds)
        self.issued: list[str] = []
        self.inbox: dict[str, list[dict[str, Any]]] = {}  # staff userid -> app messages
        self.suppressed: list[dict[str, Any]] = []  # duplicates accepted but not delivered
        self._recent: dict[str, tuple[float, str]] = {}  # request JSON -> (until, msgid)
        self.templates: dict[str, dict[str, Any]] = {}  # msgid -> group-message task
        self.tags: dict[tuple[str, str], set[str]] = {}  # (userid, external_userid) -> ids
        self.transfers: list[Transfer] = []
        self._scripts: dict[str, list[_Script]] = {}

    # -- set-up -----------------------------------------------------------------------------

    def add_staff(self, *userids: str, resigned: bool = False) -> None:
        with self._lock:
            for userid in userids:
                self.staff[userid] = resigned

    def resign(self, userid: str) -> None:
        """Mark a member as having left the company (离职)."""
        with self._lock:
            self.staff[userid] = True

    def add_customer(self, external_userid: str, owner: str) -> None:
        """A customer (external contact) that staff member `owner` added."""
        with self._lock:
            self.staff.setdefault(owner, False)
            self.customers.setdefault(external_userid, set()).add(owner)

    def add_tags(self, *tag_ids: str) -> None:
        """Corp tags (企业客户标签) that exist."""
        with self._lock:
            self.corp_tags.update(tag_ids)

    # -- scripting --------------------------------------------------------------------------

    def fail_next(self, endpoint: str, errcode: int, times: int = 1) -> None:
        """The next `times` calls of `endpoint` answer `errcode` (HTTP 200)."""
        self._script(endpoint, _Script(errcode=errcode, times=times))

    def http_error_next(self, endpoint: str, status: int = 502, times: int = 1) -> None:
        """The next `times` calls of `endpoint` answer with HTTP `status`."""
        self._script(endpoint, _Script(http_status=status, times=times))

    def delay_next(self, endpoint: str, seconds: float, times: int = 1) -> None:
        """The next `times` calls of `endpoint` answer only after `seconds` (real time)."""
        self._script(endpoint, _Script(delay=seconds, times=times))

    def _script(self, endpoint: str, script: _Script) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {', '.join(ENDPOINTS)}")
        with self._lock:
            self._scripts.setdefault(endpoint, []).append(script)

    def expire_tokens(self) -> None:
        """Every issued token expires now (calls answer 42001; gettoken issues a new one)."""
        with self._lock:
            now = self.clock()
            for token in self.tokens:
                self.tokens[token] = min(self.tokens[token], now)

    def revoke_tokens(self) -> None:
        """Every issued token becomes unknown (calls answer 40014), as WeCom may do early."""
        with self._lock:
            self.tokens.clear()

    def set_transfer_status(self, external_userid: str, status: int) -> None:
        """Script the outcome of a pending transfer (1 接替完毕, 3 客户拒绝, 4 达到上限 ...)."""
        with self._lock:
            for t in self.transfers:
                if t.external_userid == external_userid:
                    t.status = status

    def confirm_template(self, msgid: str) -> None:
        """The sender confirms a group-message task in the app: it goes out (status 1)."""
        with self._lock:
            task = self.templates[msgid]
            for eu, result in task["results"].items():
                if result["status"] == 0:
                    task["results"][eu] = {"status": 1, "send_time": self._epoch()}

    # -- inspection -------------------------------------------------------------------------

    def count(self, endpoint: str) -> int:
        """How many requests reached `endpoint` (failed ones included)."""
        with self._lock:
            return sum(1 for c in self.calls if c.endpoint == endpoint)

    def bodies(self, endpoint: str) -> list[Any]:
        """The parsed JSON bodies `endpoint` received, in order."""
        with self._lock:
            return [c.body for c in self.calls if c.endpoint == endpoint]

    def state(self) -> dict[str, Any]:
        """A JSON-able snapshot of what the fake holds (GET /_fake/state)."""
        with self._lock:
            return {
                "calls": {e: self.count(e) for e in ENDPOINTS},
                "inbox": self.inbox,
                "suppressed": self.suppressed,
                "templates": self.templates,
                "tags": [{"userid": u, "external_userid": e, "tag_ids": sorted(ids)}
                         for (u, e), ids in sorted(self.tags.items())],
                "transfers": [t.__dict__ for t in self.transfers],
            }

    # -- server -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    def start(self) -> WecomFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, payload, ctype = fake.handle(method, self.path, raw)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                try:
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (its timeout): a real server shrugs too

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the calls are recorded instead

        self._release.clear()
        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="wecom-fake")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # wake delayed answers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> WecomFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling -------------------------------------------------------------------

    def handle(self, method: str, target: str, raw: bytes) -> tuple[int, bytes, str]:
        """Answer one HTTP request: (status, body, content type)."""
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if parts.path.startswith("/_fake/"):
            return self._admin(method, parts.path, raw)
        if not parts.path.startswith("/cgi-bin/"):
            return 404, b"not found", "text/plain"
        endpoint = parts.path[len("/cgi-bin/"):]
        if endpoint not in ENDPOINTS:
            return 404, b"not found", "text/plain"
        body: Any = None
        with self._lock:
            call = Call(endpoint, method, query, None, raw)
            self.calls.append(call)
            script = self._take_script(endpoint)
        if script is not None and script.delay:
            self._release.wait(script.delay)
        if script is not None and script.http_status is not None:
            call.status = script.http_status
            return script.http_status, b"fake HTTP error", "text/plain"
        try:
            if raw:
                try:
                    body = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    raise WecomApiError(47001) from None
                call.body = body
                if _ESCAPE.search(raw):  # 40033: "不能包含\uxxxx格式的字符"
                    raise WecomApiError(40033)
            if script is not None and script.errcode is not None:
                raise WecomApiError(script.errcode)
            with self._lock:
                answer = self._dispatch(endpoint, method, query, body)
        except WecomApiError as exc:
            answer = self._error(exc.errcode, exc.detail)
        call.answer = answer
        return 200, json.dumps(answer, ensure_ascii=False).encode("utf-8"), \
            "application/json; charset=UTF-8"

    def _take_script(self, endpoint: str) -> _Script | None:
        queue = self._scripts.get(endpoint)
        if not queue:
            return None
        script = queue[0]
        script.times -= 1
        if script.times <= 0:
            queue.pop(0)
        return script

    def _error(self, code: int, detail: str = "") -> dict[str, Any]:
        text = ERRMSG.get(code, "error")
        if detail:
            text += f", {detail}"
        hint = f"{int(self._epoch())}{secrets.randbelow(10**9):09d}"
        return {"errcode": code,
                "errmsg": f"{text}, hint: [{hint}], from ip: 127.0.0.1, more info at "
                          f"https://open.work.weixin.qq.com/devtool/query?e={code}"}

    def _epoch(self) -> int:
        return int(self._epoch0 + self.clock())

    def _dispatch(self, endpoint: str, method: str, query: dict[str, str],
                  body: Any) -> dict[str, Any]:
        if endpoint == GETTOKEN:
            if method != "GET":
                raise WecomApiError(43001)
            return self._gettoken(query)
        if method != "POST":
            raise WecomApiError(43002)
        self._check_token(query)
        if not isinstance(body, dict):
            raise WecomApiError(47001)
        handler = {
            ADD_MSG_TEMPLATE: self._add_msg_template,
            GROUPMSG_SEND_RESULT: self._groupmsg_send_result,
            MESSAGE_SEND: self._message_send,
            MARK_TAG: self._mark_tag,
            TRANSFER_CUSTOMER: self._transfer_customer,
            TRANSFER_RESULT: self._transfer_result,
        }[endpoint]
        return {"errcode": 0, "errmsg": "ok", **handler(body)}

    def _gettoken(self, query: dict[str, str]) -> dict[str, Any]:
        corpid, secret = query.get("corpid"), query.get("corpsecret")
        if not corpid:
            raise WecomApiError(41002)
        if corpid != self.corp_id:
            raise WecomApiError(40013)
        if not secret:
            raise WecomApiError(41004)
        if secret != self.secret:
            raise WecomApiError(40001)
        now = self.clock()
        for token, expiry in self.tokens.items():  # reused while valid (documented)
            if now < expiry:
                return {"errcode": 0, "errmsg": "ok", "access_token": token,
                        "expires_in": int(expiry - now)}
        token = f"fake-token-{next(self._ids)}-{secrets.token_hex(12)}"
        self.tokens[token] = now + self.token_ttl
        self.issued.append(token)
        return {"errcode": 0, "errmsg": "ok", "access_token": token,
                "expires_in": self.token_ttl}

    def _check_token(self, query: dict[str, str]) -> None:
        token = query.get("access_token")
        if not token:
            raise WecomApiError(41001)
        if token not in self.tokens:
            raise WecomApiError(40014)
        if self.clock() >= self.tokens[token]:
            raise WecomApiError(42001)

    def _member(self, userid: Any, missing: int = 41009) -> str:
        if not isinstance(userid, str) or not userid:
            raise WecomApiError(missing)
        if userid not in self.staff:
            raise WecomApiError(60111, f"userid: {userid}")
        return userid

    def _add_msg_template(self, body: dict[str, Any]) -> dict[str, Any]:
        chat_type = body.get("chat_type", "single")
        if chat_type not in ("single", "group"):
            raise WecomApiError(40035, "chat_type")
        sender = body.get("sender")
        if sender is not None:
            self._member(sender)
            if self.staff[sender]:  # a member who left cannot send (fake's choice: 60111)
                raise WecomApiError(60111, f"userid: {sender}")
        elif chat_type == "group":  # "当类型为发送给客户群时必填"
            raise WecomApiError(41009)
        externals = body.get("external_userid", [])
        if not isinstance(externals, list) or not all(isinstance(e, str) for e in externals):
            raise WecomApiError(40035, "external_userid")
        if len(externals) > 10000:  # "最多可一次指定1万个客户"
            raise WecomApiError(40035, "external_userid exceeds 10000")
        text = body.get("text") or {}
        content = text.get("content", "") if isinstance(text, dict) else ""
        attachments = body.get("attachments") or []
        if not isinstance(content, str) or (not content and not attachments):
            raise WecomApiError(44004)  # text and attachments may not both be empty
        if len(content.encode("utf-8")) > TEMPLATE_CONTENT_MAX_BYTES:
            raise WecomApiError(45002)
        if not isinstance(attachments, list) or len(attachments) > 9:
            raise WecomApiError(40035, "attachments")
        unknown = [e for e in externals if e not in self.customers]
        if externals and len(unknown) == len(externals):
            raise WecomApiError(40096)  # as WeCom answers when no id is valid
        fail_list = [e for e in externals if e in unknown
                     or (sender is not None and sender not in self.customers[e])]
        msgid = f"msg{next(self._ids):06d}"
        self.templates[msgid] = {
            "msgid": msgid, "sender": sender, "chat_type": chat_type, "content": content,
            "external_userid": externals, "fail_list": fail_list,
            "results": {e: {"status": 0, "send_time": 0} for e in externals
                        if e not in fail_list},
        }
        return {"fail_list": fail_list, "msgid": msgid}

    def _groupmsg_send_result(self, body: dict[str, Any]) -> dict[str, Any]:
        msgid = body.get("msgid")
        if not isinstance(msgid, str) or msgid not in self.templates:
            raise WecomApiError(40035, "msgid")
        userid = self._member(body.get("userid"))
        limit = body.get("limit", 500)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise WecomApiError(40035, "limit")
        task = self.templates[msgid]
        rows = [{"external_userid": eu, "userid": userid, **result}
                for eu, result in task["results"].items() if task["sender"] == userid]
        return self._page(rows, body.get("cursor"), limit, "send_list")

    def _page(self, rows: list[dict[str, Any]], cursor: Any, size: int,
              field_name: str) -> dict[str, Any]:
        start = 0
        if cursor:
            if not isinstance(cursor, str) or not cursor.startswith("CUR"):
                raise WecomApiError(40035, "cursor")
            try:
                start = int(cursor[3:], 16)
            except ValueError:
                raise WecomApiError(40035, "cursor") from None
        end = start + size
        return {field_name: rows[start:end],
                "next_cursor": f"CUR{end:08X}" if end < len(rows) else ""}

    def _message_send(self, body: dict[str, Any]) -> dict[str, Any]:
        agentid = body.get("agentid")
        if agentid is None or agentid == "":
            raise WecomApiError(41011)
        if str(agentid) != str(self.agent_id):
            raise WecomApiError(40056)
        if body.get("msgtype") != "text":  # the fake implements text messages only
            raise WecomApiError(40008)
        text = body.get("text")
        content = text.get("content") if isinstance(text, dict) else None
        if not isinstance(content, str) or not content:
            raise WecomApiError(44004)
        data = content.encode("utf-8")
        if len(data) > APP_MESSAGE_MAX_BYTES:  # "超过将截断"
            content = data[:APP_MESSAGE_MAX_BYTES].decode("utf-8", "ignore")
        touser = body.get("touser") or ""
        if not isinstance(touser, str) or not (touser or body.get("toparty")
                                               or body.get("totag")):
            raise WecomApiError(40035, "touser, toparty and totag are all empty")
        users = [u for u in touser.split("|") if u]
        valid = [u for u in users if u in self.staff and not self.staff[u]]
        invalid = [u.lower() for u in users if u not in valid]
        if not valid:
            raise WecomApiError(81013)
        result = {"invaliduser": "|".join(invalid), "invalidparty": "", "invalidtag": "",
                  "unlicenseduser": ""}
        now = self.clock()
        key = json.dumps(body, ensure_ascii=False, sort_keys=True)
        if body.get("enable_duplicate_check") == 1:
            interval = body.get("duplicate_check_interval", 1800)
            if not isinstance(interval, int) or interval <= 0:
                raise WecomApiError(40035, "duplicate_check_interval")
            # Documented maximum 4 h; the fake caps longer intervals (its own choice).
            interval = min(interval, MAX_DUPLICATE_CHECK_INTERVAL)
            seen = self._recent.get(key)
            if seen is not None and now < seen[0]:
                self.suppressed.append({"touser": touser, "content": content, "msgid": seen[1]})
                return {**result, "msgid": seen[1]}  # accepted, not delivered twice
            msgid = f"app{next(self._ids):06d}"
            self._recent[key] = (now + interval, msgid)
        else:
            msgid = f"app{next(self._ids):06d}"
        for user in valid:
            self.inbox.setdefault(user, []).append(
                {"msgid": msgid, "agentid": self.agent_id, "content": content})
        return {**result, "msgid": msgid}

    def _mark_tag(self, body: dict[str, Any]) -> dict[str, Any]:
        userid = self._member(body.get("userid"))
        eu = body.get("external_userid")
        if not isinstance(eu, str) or eu not in self.customers:
            raise WecomApiError(40096)
        if userid not in self.customers[eu]:  # "请确保external_userid是userid的外部联系人"
            raise WecomApiError(84061)
        add, remove = body.get("add_tag") or [], body.get("remove_tag") or []
        if not isinstance(add, list) or not isinstance(remove, list):
            raise WecomApiError(40035, "add_tag/remove_tag")
        if not add and not remove:  # "add_tag和remove_tag不可同时为空"
            raise WecomApiError(40035, "add_tag and remove_tag are both empty")
        for tag_id in (*add, *remove):
            if tag_id not in self.corp_tags:
                raise WecomApiError(40068, f"tagid: {tag_id}")
        tags = self.tags.setdefault((userid, eu), set())
        tags.update(add)
        tags.difference_update(remove)
        return {}

    def _transfer_customer(self, body: dict[str, Any]) -> dict[str, Any]:
        handover = self._member(body.get("handover_userid"))
        takeover = self._member(body.get("takeover_userid"))
        if not self.staff[handover]:  # "handover_userid必须是已离职用户"
            raise WecomApiError(40097)
        if self.staff[takeover]:
            raise WecomApiError(60111, f"userid: {takeover}")
        externals = body.get("external_userid")
        if (not isinstance(externals, list) or not externals
                or not all(isinstance(e, str) for e in externals)):
            raise WecomApiError(40035, "external_userid")
        if len(externals) > MAX_TRANSFER:  # "最多一次转移100个客户"
            raise WecomApiError(40035, "external_userid exceeds 100")
        out = []
        for eu in externals:
            if eu not in self.customers:
                code = 40096
            elif handover not in self.customers[eu]:
                code = 84061
            elif any(t.external_userid == eu and t.status == 2 for t in self.transfers):
                code = 40100
            else:
                code = 0
                self.transfers.append(Transfer(handover, takeover, eu, 2,
                                               self._epoch() + TAKEOVER_DELAY))
            out.append({"external_userid": eu, "errcode": code})
        return {"customer": out}

    def _transfer_result(self, body: dict[str, Any]) -> dict[str, Any]:
        handover = self._member(body.get("handover_userid"))
        takeover = self._member(body.get("takeover_userid"))
        now = self._epoch()
        rows = []
        for t in self.transfers:
            if t.handover != handover or t.takeover != takeover:
                continue
            if t.status == 2 and now >= t.takeover_time:  # WeCom takes over after 24 h
                t.status = 1
                owners = self.customers[t.external_userid]
                owners.discard(t.handover)
                owners.add(t.takeover)
            rows.append({"external_userid": t.external_userid, "status": t.status,
                         "takeover_time": t.takeover_time if t.status in (1, 2) else 0})
        return self._page(rows, body.get("cursor"), self.page_size, "customer")

    # -- admin (standalone use) -------------------------------------------------------------

    def _admin(self, method: str, path: str, raw: bytes) -> tuple[int, bytes, str]:
        if method == "GET" and path == "/_fake/state":
            payload = json.dumps(self.state(), ensure_ascii=False, default=sorted)
            return 200, payload.encode("utf-8"), "application/json; charset=UTF-8"
        if method == "POST" and path == "/_fake/expire_tokens":
            self.expire_tokens()
            return 200, b"{}", "application/json"
        if method == "POST" and path == "/_fake/script":
            try:
                spec = json.loads(raw or b"{}")
                self.fail_next(spec["endpoint"], int(spec["errcode"]), int(spec.get("times", 1)))
            except (ValueError, KeyError, TypeError) as exc:
                return 400, str(exc).encode("utf-8"), "text/plain"
            return 200, b"{}", "application/json"
        return 404, b"not found", "text/plain"


def iter_pairs(values: list[str]) -> Iterator[tuple[str, str]]:
    for value in values:
        key, sep, owner = value.partition("=")
        if not sep or not key or not owner:
            raise SystemExit(f"--customer takes EXTERNAL_USERID=OWNER, not {value!r}")
        yield key, owner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local fake of the WeCom server API.")
    parser.add_argument("--port-file", required=True, help="write the port here once listening")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--corp-id", default="ww-fake-corp")
    parser.add_argument("--secret", default="fake-corpsecret-0123",
                        help="the corpsecret gettoken accepts")
    parser.add_argument("--agent-id", type=int, default=1000002)
    parser.add_argument("--token-ttl", type=int, default=7200)
    parser.add_argument("--staff", action="append", default=[], help="a member's userid")
    parser.add_argument("--resigned", action="append", default=[],
                        help="a member who has left (离职)")
    parser.add_argument("--customer", action="append", default=[],
                        help="EXTERNAL_USERID=OWNER: a customer the member added")
    parser.add_argument("--tag", action="append", default=[], help="a corp tag id")
    args = parser.parse_args(argv)
    fake = WecomFake(args.corp_id, args.secret, args.agent_id, token_ttl=args.token_ttl,
                     host=args.host, port=args.port)
    fake.add_staff(*args.staff)
    for eu, owner in iter_pairs(args.customer):
        fake.add_customer(eu, owner)
    for userid in args.resigned:
        fake.resign(userid)
    fake.add_tags(*args.tag)
    fake.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    tmp = f"{args.port_file}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"{fake.port}\n")
    os.replace(tmp, args.port_file)
    print(f"wecom fake listening on {fake.url}", file=sys.stderr, flush=True)
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
