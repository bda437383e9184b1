"""The `wecom` channel: WeCom (企业微信) customer contact and app messages.

What each action kind becomes (documented WeCom server API, errors come as HTTP 200 with
`errcode`/`errmsg`):

- `send`     -> POST cgi-bin/externalcontact/add_msg_template (创建企业群发), one customer,
               sender = the customer's owner. WeCom creates a task that the owner confirms in
               the app; `get_groupmsg_send_result` (see `send_result`) tells whether it went out.
- `task`     -> POST cgi-bin/message/send (发送应用消息), a text message to the assignee, with
               `enable_duplicate_check` so a retried alert is not shown twice.
- `tag`, `untag` -> POST cgi-bin/externalcontact/mark_tag (编辑客户企业标签).
- `reassign` -> POST cgi-bin/externalcontact/resigned/transfer_customer (分配离职成员的客户);
               the takeover completes in WeCom 24 h later, `transfer_result` tells the outcome.

The HTTP side (access tokens, errcodes, secrets kept out of every text) is `WecomApi` in
`_wecom_api`. Pass `transport=` (an httpx transport, e.g. `httpx.MockTransport`) to replace
the network, as the tests do.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import httpx

from sopkit._errors import did_you_mean
from sopkit._mask import mask_text

from ._base import ChannelConfigError, Message, Receipt, check_env_name, env_secret
from ._capabilities import SendOutcome, TransferOutcome
from ._wecom_api import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    ERRCODES,
    WecomApi,
    WecomError,
    errcode_meaning,
    int_of,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "ERRCODES",
    "MAX_GROUP_BATCH",
    "MAX_TRANSFER_BATCH",
    "TRANSFER_STATUS",
    "WecomChannel",
    "WecomError",
    "errcode_meaning",
]

DEFAULT_DUPLICATE_CHECK_INTERVAL = 1800  # seconds; the WeCom default
MAX_DUPLICATE_CHECK_INTERVAL = 4 * 3600  # "最大不超过4小时"
MAX_TRANSFER_BATCH = 100  # resigned/transfer_customer: "最多一次转移100个客户"
# add_msg_template external_userid: "最多可一次指定1万个客户" (developer.work.weixin.qq.com,
# document/path/92135)
MAX_GROUP_BATCH = 10_000
TEMPLATE_CONTENT_MAX_BYTES = 4000  # add_msg_template text.content
APP_MESSAGE_MAX_BYTES = 2048  # message/send text.content ("超过将截断")
SEND_RESULT_PAGE = 1000  # get_groupmsg_send_result: limit, at most 1000

# resigned/transfer_result: customer.status (接替状态).
TRANSFER_STATUS: dict[int, str] = {
    1: "接替完毕 (taken over)",
    2: "等待接替 (waiting: WeCom hands the customer over 24 h after the transfer)",
    3: "客户拒绝 (the customer refused)",
    4: "接替成员客户达到上限 (the takeover member's customer limit is reached)",
    5: "无接替记录 (no transfer record)",
}
# send_result status (get_groupmsg_send_result): 1 sent, 2 and 3 never will be.
SEND_STATUS: dict[int, SendOutcome] = {1: "sent", 2: "failed", 3: "failed"}

_CONFIG_KEYS = ("corp_id", "secret_env", "agent_id", "base_url", "external_userid_attribute",
                "tag_ids", "timeout", "duplicate_check_interval", "group_batch")


def _config_error(name: str, text: str, key: str | None = None,
                  hint: str = "") -> ChannelConfigError:
    return ChannelConfigError(f"channel '{name}' (wecom): {text}", key=key, hint=hint)


class WecomChannel:
    """Delivers send, task, tag, untag and reassign actions through the WeCom server API.

    `config` is the playbook's `[channels.NAME]` table (see docs/channels.md, "wecom");
    `env` holds the secret named by `secret_env`. `clock` (seconds, monotonic) times the
    token cache; `transport` (an httpx transport) replaces the network; tests inject both.
    Besides `send` it is Closable, a GroupSender, SendResults and TransferResults, and its
    class is a CheckableFactory and a TagMirror (of the tags `tag_ids` names).
    """

    @classmethod
    def check_config(cls, name: str, config: Mapping[str, Any]) -> None:
        """The settings checks of the constructor, without the environment or a connection."""
        probe = cls.__new__(cls)
        probe.name = name
        probe._settings(config)

    @classmethod
    def mirrored_tags(cls, config: Mapping[str, Any]) -> Collection[str]:
        """The tags `tag_ids` names: a live run mirrors them to WeCom (`tag`/`untag` rows)."""
        tag_ids = config.get("tag_ids")
        return frozenset(tag_ids) if isinstance(tag_ids, Mapping) else frozenset()

    def __init__(self, name: str, config: Mapping[str, Any], env: Mapping[str, str], *,
                 clock: Callable[[], float] = time.monotonic,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.name = name
        self._settings(config)
        secret = env_secret(config, env, "secret_env", name)
        assert secret is not None  # required=True raises instead of returning None
        self._api = WecomApi(name=name, corp_id=self.corp_id, secret=secret,
                             secret_env=self.secret_env, base_url=self.base_url,
                             timeout=self.timeout,
                             external_userid_attribute=self.external_userid_attribute,
                             clock=clock, transport=transport)

    def _settings(self, config: Mapping[str, Any]) -> None:
        name = self.name
        for key in config:
            if key not in _CONFIG_KEYS:
                hint = did_you_mean(key, _CONFIG_KEYS)
                raise _config_error(name, f"unknown key '{key}'", key, hint)
        corp_id = config.get("corp_id")
        if not isinstance(corp_id, str) or not corp_id.strip():
            raise _config_error(name, "'corp_id' is required: the 企业ID from the admin console "
                                "(我的企业 → 企业信息), e.g. corp_id = \"ww0123456789abcdef\"",
                                "corp_id")
        self.corp_id = corp_id.strip()
        self.secret_env = str(check_env_name(config, "secret_env", name))
        self.agent_id = self._agent_id(config.get("agent_id"))
        base_url = config.get("base_url", DEFAULT_BASE_URL)
        if not isinstance(base_url, str) or not base_url.startswith(("https://", "http://")):
            raise _config_error(name, f"'base_url' must be an http(s) URL, not {base_url!r}",
                                "base_url")
        self.base_url = base_url.rstrip("/")
        attr = config.get("external_userid_attribute", "external_userid")
        if not isinstance(attr, str) or not attr:
            raise _config_error(name, "'external_userid_attribute' must name a profile "
                                "attribute, e.g. \"external_userid\"",
                                "external_userid_attribute")
        self.external_userid_attribute = attr
        tag_ids = config.get("tag_ids", {})
        if not isinstance(tag_ids, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in tag_ids.items()):
            raise _config_error(name, "'tag_ids' must be a table of tag name = \"WeCom tag id\", "
                                "e.g. tag_ids = { \"高价值\" = \"etAbCdEf\" }", "tag_ids")
        self.tag_ids: dict[str, str] = dict(tag_ids)
        timeout = config.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise _config_error(name, f"'timeout' must be a positive number of seconds, "
                                f"not {timeout!r}", "timeout")
        self.timeout = float(timeout)
        interval = config.get("duplicate_check_interval", DEFAULT_DUPLICATE_CHECK_INTERVAL)
        if (isinstance(interval, bool) or not isinstance(interval, int)
                or not 0 < interval <= MAX_DUPLICATE_CHECK_INTERVAL):
            raise _config_error(name, "'duplicate_check_interval' must be a whole number of "
                                f"seconds from 1 to {MAX_DUPLICATE_CHECK_INTERVAL} (4 hours, the "
                                f"WeCom maximum), not {interval!r}", "duplicate_check_interval")
        self.duplicate_check_interval = interval
        group = config.get("group_batch", MAX_GROUP_BATCH)
        if isinstance(group, bool) or not isinstance(group, int) or \
                not 0 < group <= MAX_GROUP_BATCH:
            raise _config_error(name, "'group_batch' must be a whole number of customers from "
                                f"1 to {MAX_GROUP_BATCH} (the most one add_msg_template call "
                                f"takes), not {group!r}", "group_batch")
        self.group_batch = group

    def _agent_id(self, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        raise _config_error(self.name, f"'agent_id' must be the app's AgentId (a number), "
                            f"not {value!r}", "agent_id")

    # -- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connections."""
        self._api.close()

    def __enter__(self) -> WecomChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the channel seam -------------------------------------------------------------------

    def send(self, message: Message) -> Receipt:
        """Deliver one action; never raises for a failure it understands."""
        handlers = {"send": self._send_template, "task": self._send_task,
                    "tag": self._mark_tag, "untag": self._mark_tag, "reassign": self._reassign}
        handler = handlers.get(message.kind)
        if handler is None:
            return Receipt.failed(f"channel '{self.name}' (wecom) cannot deliver "
                                  f"'{message.kind}' actions; it delivers "
                                  + ", ".join(sorted(handlers)))
        try:
            return handler(message)
        except WecomError as exc:
            return exc.receipt()

    def _customer(self, message: Message) -> str:
        return mask_text(message.customer_id)

    def _external_userid(self, message: Message) -> str | Receipt:
        value = message.contact.get(self.external_userid_attribute)
        if isinstance(value, str) and value:
            return value
        return Receipt.failed(
            f"customer {self._customer(message)} has no WeCom external_userid: set the profile "
            f"attribute '{self.external_userid_attribute}' (the channel's "
            "external_userid_attribute) to the customer's external_userid")

    def _send_template(self, message: Message) -> Receipt:
        external = self._external_userid(message)
        if isinstance(external, Receipt):
            return external
        content = self._template_content(message)
        if isinstance(content, Receipt):
            return content
        data = self._api.call("externalcontact/add_msg_template", {
            "chat_type": "single", "external_userid": [external], "sender": message.owner,
            "text": {"content": content}})
        fail_list = [str(x) for x in data.get("fail_list") or []]
        if external in fail_list:
            return Receipt.failed(self._api.clean(
                f"WeCom cannot send to customer {message.customer_id}: its external_userid is "
                f"in fail_list (not a customer of sender '{message.owner}', or it reached the "
                "monthly group-message limit)"))
        msgid = str(data.get("msgid") or "")
        return Receipt.delivered(self._api.clean(
            f"group-message task {msgid} created for sender '{message.owner}' (sent when the "
            "sender confirms it in WeCom)"), provider_id=msgid or None, fail_list=fail_list)

    def send_group(self, messages: list[Message]) -> list[Receipt]:
        """Deliver the sends of one campaign firing as WeCom group sends (企业群发).

        One add_msg_template task per sender (the customers' owner) and message text, with
        up to `group_batch` customers each (WeCom takes at most 10,000), so a staff member
        confirms one task per firing instead of one per customer. Returns one Receipt per
        message, in order: delivered with the task's msgid (`provider_id`) and the sender
        in `data`, failed for a customer in fail_list or without an external_userid or
        owner, or the call's error for every customer of a task that failed. Other kinds
        go through `send` one by one.
        """
        receipts: list[Receipt | None] = [None] * len(messages)
        tasks: dict[tuple[str, str], dict[str, list[int]]] = {}
        for i, message in enumerate(messages):
            if message.kind != "send":
                receipts[i] = self.send(message)
                continue
            external = self._external_userid(message)
            content = self._template_content(message)
            if isinstance(external, Receipt):
                receipts[i] = external
                continue
            if isinstance(content, Receipt):
                receipts[i] = content
                continue
            # the same customer twice with the same text (two send actions) is one send
            task = tasks.setdefault((str(message.owner), content), {})
            task.setdefault(external, []).append(i)
        for (sender, content), customers in tasks.items():
            ids = list(customers)
            for start in range(0, len(ids), self.group_batch):
                batch = ids[start:start + self.group_batch]
                for eu, receipt in self._group_task(sender, content, batch).items():
                    for i in customers[eu]:
                        receipts[i] = receipt
        return [r if r is not None else Receipt.failed("not sent") for r in receipts]

    def _group_task(self, sender: str, content: str, batch: list[str]) -> dict[str, Receipt]:
        try:
            data = self._api.call("externalcontact/add_msg_template", {
                "chat_type": "single", "external_userid": batch, "sender": sender,
                "text": {"content": content}})
        except WecomError as exc:
            return dict.fromkeys(batch, exc.receipt())
        fail_list = {str(x) for x in data.get("fail_list") or []}
        msgid = str(data.get("msgid") or "")
        sent = len(batch) - len(fail_list & set(batch))
        done = Receipt.delivered(self._api.clean(
            f"group-message task {msgid} created for sender '{sender}' with {sent} customers "
            "(sent when the sender confirms it in WeCom)"), provider_id=msgid or None,
            sender=sender, customers=sent)
        failed = Receipt.failed(self._api.clean(
            f"WeCom left this customer out of group-message task {msgid} (fail_list: not a "
            f"customer of sender '{sender}', or it reached the monthly group-message limit)"))
        return {eu: failed if eu in fail_list else done for eu in batch}

    def _template_content(self, message: Message) -> str | Receipt:
        """The add_msg_template text of a send (title, then the message), or why not."""
        if not message.owner:
            return Receipt.failed(f"customer has no owner (customer {self._customer(message)})"
                                  ": WeCom sends customer messages through the staff member "
                                  "who owns the customer (sender)")
        text = message.body.get("message")
        if not isinstance(text, str) or not text.strip():
            return Receipt.failed("the send action has no rendered 'message' text")
        title = message.body.get("title")
        content = f"{title}\n{text}" if isinstance(title, str) and title else text
        size = len(content.encode("utf-8"))
        if size > TEMPLATE_CONTENT_MAX_BYTES:
            return Receipt.failed(f"the message is {size} bytes in UTF-8; WeCom takes at most "
                                  f"{TEMPLATE_CONTENT_MAX_BYTES} (shorten the template)")
        return content

    def _send_task(self, message: Message) -> Receipt:
        assignee = message.body.get("assignee") or message.owner
        if not isinstance(assignee, str) or not assignee:
            return Receipt.failed(f"the task for customer {self._customer(message)} has no "
                                  "assignee and the customer has no owner")
        if self.agent_id is None:
            return Receipt.failed(f"channel '{self.name}' (wecom) needs 'agent_id' (the app's "
                                  "AgentId) to send staff alerts with message/send")
        content = self._task_text(message)
        data = self._api.call("message/send", {
            "touser": assignee, "msgtype": "text", "agentid": self.agent_id,
            "text": {"content": content}, "safe": 0,
            "enable_duplicate_check": 1,
            "duplicate_check_interval": self.duplicate_check_interval})
        invalid = {u.lower() for u in str(data.get("invaliduser") or "").split("|") if u}
        unlicensed = {u.lower() for u in str(data.get("unlicenseduser") or "").split("|") if u}
        if assignee.lower() in invalid:
            return Receipt.failed(self._api.clean(
                f"WeCom reports assignee '{assignee}' as invalid (invaliduser): not a member, "
                "or outside the app's visible range"))
        if assignee.lower() in unlicensed:
            return Receipt.failed(self._api.clean(
                f"WeCom reports assignee '{assignee}' as unlicensed (unlicenseduser)"))
        msgid = str(data.get("msgid") or "")
        return Receipt.delivered(self._api.clean(f"alert sent to '{assignee}'"),
                                 provider_id=msgid or None)

    def _task_text(self, message: Message) -> str:
        """The alert text; identical on every attempt so WeCom's duplicate check applies.

        It names the customer and a reference derived from the idempotency key, so two
        different tasks with the same note are never taken for duplicates of each other.
        """
        note = str(message.body.get("note") or "").strip() or "请跟进客户"
        lines = [f"【跟进任务】{note}", f"客户: {message.customer_id}"]
        if message.body.get("due"):
            lines.append(f"截止: {message.body['due']}")
        ref = hashlib.sha256(message.key.encode("utf-8")).hexdigest()[:10]
        lines.append(f"规则: {message.rule} · 编号: {ref}")
        content = "\n".join(lines)
        data = content.encode("utf-8")
        if len(data) > APP_MESSAGE_MAX_BYTES:  # WeCom would cut it anyway; cut on a character
            content = data[:APP_MESSAGE_MAX_BYTES].decode("utf-8", "ignore")
        return content

    def _mark_tag(self, message: Message) -> Receipt:
        tag = message.body.get("tag")
        if not isinstance(tag, str) or not tag:
            return Receipt.failed(f"the {message.kind} action has no 'tag'")
        tag_id = self.tag_ids.get(tag)
        if tag_id is None:
            hint = did_you_mean(tag, self.tag_ids)
            return Receipt.failed(
                f"tag '{tag}' has no WeCom tag id: add it to tag_ids in [channels.{self.name}], "
                f"e.g. tag_ids = {{ \"{tag}\" = \"et...\" }}" + (f" ({hint})" if hint else ""))
        external = self._external_userid(message)
        if isinstance(external, Receipt):
            return external
        if not message.owner:
            return Receipt.failed(f"customer has no owner (customer {self._customer(message)})"
                                  ": WeCom tags a customer on behalf of the staff member who "
                                  "added it")
        field = "add_tag" if message.kind == "tag" else "remove_tag"
        self._api.call("externalcontact/mark_tag", {
            "userid": message.owner, "external_userid": external, field: [tag_id]})
        verb = "tagged" if message.kind == "tag" else "untagged"
        return Receipt.delivered(f"{verb} '{tag}' ({tag_id})")

    def _reassign(self, message: Message) -> Receipt:
        handover = message.body.get("from_owner")
        takeover = message.body.get("to")
        if not isinstance(handover, str) or not handover:
            return Receipt.failed(f"customer {self._customer(message)} had no owner to hand "
                                  "over from (from_owner)")
        if not isinstance(takeover, str) or not takeover:
            return Receipt.failed("the reassign action has no 'to' staff id")
        external = self._external_userid(message)
        if isinstance(external, Receipt):
            return external
        return self.transfer(handover, takeover, [external])[external]

    # -- the hand-over API (离职继承) -------------------------------------------------------

    def transfer(self, handover: str, takeover: str,
                 external_userids: Iterable[str]) -> dict[str, Receipt]:
        """Hand a resigned member's customers to `takeover`, 100 per call.

        Returns one Receipt per external_userid (in the order given, duplicates once):
        delivered with data {"transfer": "pending"} when WeCom started the transfer (it
        completes 24 h later; `transfer_result` tells the outcome), failed or retry with the
        errcode's meaning otherwise. A whole call that fails marks each of its customers.
        """
        if not handover or not takeover:
            raise ValueError("transfer needs both the handover and the takeover userid")
        ids = list(dict.fromkeys(external_userids))
        results: dict[str, Receipt] = {}
        for start in range(0, len(ids), MAX_TRANSFER_BATCH):
            batch = ids[start:start + MAX_TRANSFER_BATCH]
            try:
                data = self._api.call("externalcontact/resigned/transfer_customer", {
                    "handover_userid": handover, "takeover_userid": takeover,
                    "external_userid": batch})
            except WecomError as exc:
                for eu in batch:
                    results[eu] = exc.receipt()
                continue
            codes: dict[str, int] = {}
            for item in data.get("customer") or []:
                if isinstance(item, Mapping) and isinstance(item.get("external_userid"), str):
                    codes[item["external_userid"]] = int_of(item.get("errcode"), 0)
            for eu in batch:
                results[eu] = self._transfer_receipt(eu, codes.get(eu), handover, takeover)
        return results

    def _transfer_receipt(self, eu: str, code: int | None, handover: str,
                          takeover: str) -> Receipt:
        if code is None:
            return Receipt.failed(self._api.clean(
                f"WeCom's transfer answer does not mention customer {eu}; check transfer_result"))
        if code == 0:
            return Receipt.delivered(self._api.clean(
                f"transfer from '{handover}' to '{takeover}' started; WeCom completes it in "
                "24 h (transfer_result status: 1 接替完毕, 2 等待接替, 3 客户拒绝, "
                "4 接替成员客户达到上限)"),
                transfer="pending")
        return self._api.code_error(code, "", "resigned/transfer_customer", subject=eu).receipt()

    def transfer_result(self, handover: str, takeover: str) -> dict[str, int]:
        """{external_userid: status} for every customer handed from `handover` to `takeover`.

        Pages through resigned/transfer_result by cursor. Status meanings are TRANSFER_STATUS
        (1 接替完毕, 2 等待接替, 3 客户拒绝, 4 接替成员客户达到上限, 5 无接替记录).
        Raises WecomError (see `retryable`) when WeCom does not answer.
        """
        out: dict[str, int] = {}
        body: dict[str, Any] = {"handover_userid": handover, "takeover_userid": takeover}
        for item in self._api.pages("externalcontact/resigned/transfer_result", body, "customer"):
            if isinstance(item.get("external_userid"), str):
                out[item["external_userid"]] = int_of(item.get("status"), 0)
        return dict(sorted(out.items()))

    def send_result(self, msgid: str, userid: str) -> dict[str, int]:
        """{external_userid: status} of a group-message task (get_groupmsg_send_result).

        Status: 0 未发送 (not sent yet), 1 已发送 (sent), 2 not a customer any more,
        3 the customer already received another group message. Raises WecomError.
        """
        out: dict[str, int] = {}
        body: dict[str, Any] = {"msgid": msgid, "userid": userid, "limit": SEND_RESULT_PAGE}
        for item in self._api.pages("externalcontact/get_groupmsg_send_result", body, "send_list"):
            if isinstance(item.get("external_userid"), str):
                out[item["external_userid"]] = int_of(item.get("status"), 0)
        return dict(sorted(out.items()))


    # -- what became of delivered rows (SendResults, TransferResults) -----------------------

    def send_outcomes(self, provider_id: str, sender: str,
                      messages: Sequence[Message]) -> list[SendOutcome]:
        """Per message of group-message task `provider_id` of `sender`, whether it went out:
        `send_result` status 1 sent, 2 or 3 failed, anything else (0, no record) waiting."""
        statuses = self.send_result(provider_id, sender)
        return [SEND_STATUS.get(statuses.get(self._external_of(m), 0), "waiting")
                for m in messages]

    def transfer_outcomes(self, from_owner: str, to: str,
                          messages: Sequence[Message]) -> list[TransferOutcome]:
        """Per `reassign` message from `from_owner` to `to`, its `transfer_result` status:
        done at 1 接替完毕, with the status's meaning (TRANSFER_STATUS) as the detail."""
        statuses = self.transfer_result(from_owner, to)
        out = []
        for message in messages:
            status = statuses.get(self._external_of(message))
            if status is None:
                out.append(TransferOutcome(False, "no transfer record yet"))
            else:
                out.append(TransferOutcome(status == 1, f"{status} "
                                           f"{TRANSFER_STATUS.get(status, '')}".strip()))
        return out

    def _external_of(self, message: Message) -> str:
        value = message.contact.get(self.external_userid_attribute)
        return str(value) if value not in (None, "") else ""
