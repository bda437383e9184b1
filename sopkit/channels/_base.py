"""The channel seam: one required method, `send(message) -> Receipt`.

A channel turns one outbox row into a delivery attempt. It never raises for a failure it
understands: it returns a Receipt that says delivered, retry (with an optional delay) or
failed (permanent). Anything it raises is treated by the dispatcher as a retryable error.

The life of a channel:

1. check: `sopkit check` calls `factory.check_config(name, config)` when the factory is a
   `CheckableFactory` (no environment, no side effects; the shipped channels call it first
   in their constructor too);
2. create: `factory(name, config, env)`, the factory usually being the class; it raises
   ChannelConfigError for anything unusable, reads secrets from `env` only;
3. send: `send(message)` for each due row, or `send_group(messages)` for the rows of one
   campaign firing when it is a `GroupSender`, any number of times, one call at a time;
   afterwards `send_outcomes` (`SendResults`) and `transfer_outcomes` (`TransferResults`)
   may be asked what became of delivered rows;
4. close: `close()` once, when it is `Closable`, whether the run ended well or not.

The optional steps are protocols in `sopkit.channels` (see `_capabilities`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from sopkit._errors import SopkitError

ReceiptStatus = Literal["delivered", "retry", "failed"]


class ChannelConfigError(SopkitError):
    """A channel cannot be built from its playbook table and environment; says which key.

    `key` names the setting at fault (for `sopkit check` to point at its line) and `hint`
    the suggestion, e.g. "did you mean 'corp_id'?"; the text holds both.
    """

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None, hint: str = "") -> None:
        super().__init__(message + (f"; {hint}" if hint else ""))
        self.detail = message
        self.key = key
        self.hint = hint


@dataclass(frozen=True)
class Message:
    """One action to deliver, as the outbox holds it.

    `key` is the idempotency key (playbook:version:rule:customer:occurrence:index); a
    channel passes it on where the far side can use it (webhook-id, Message-ID, WeCom
    duplicate check). `body` is the action record's details: for `send` the rendered
    `message` (and `title`, `template`, `params`), for `task` the `note`, `due` and
    `assignee`, for `webhook` the `payload`, for `tag`/`untag` the `tag`, for `reassign`
    `from_owner` and `to`. `contact` holds the customer's profile attributes (phone, e-mail,
    WeCom external_userid ...) and `owner` the staff member who owns the customer.
    """

    key: str
    kind: str
    channel: str
    customer_id: str
    rule: str
    time: str
    body: Mapping[str, Any] = field(default_factory=dict)
    contact: Mapping[str, Any] = field(default_factory=dict)
    owner: str | None = None
    attempt: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "channel": self.channel,
                "customer_id": self.customer_id, "rule": self.rule, "time": self.time,
                "body": dict(self.body), "contact": dict(self.contact), "owner": self.owner,
                "attempt": self.attempt}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        return cls(key=data["key"], kind=data["kind"], channel=data["channel"],
                   customer_id=data["customer_id"], rule=data["rule"], time=data["time"],
                   body=data.get("body") or {}, contact=data.get("contact") or {},
                   owner=data.get("owner"), attempt=int(data.get("attempt", 1)))


@dataclass(frozen=True)
class Receipt:
    """What one delivery attempt came to.

    - delivered: done; `provider_id` is the far side's id (WeCom msgid, SMTP queue id ...).
    - retry: a passing failure; `retry_after` (seconds) is honoured when given (HTTP
      Retry-After, WeCom frequency limits), otherwise the dispatcher backs off.
    - failed: permanent (bad address, 4xx, bounce); the row goes to dead letters.
    `disable` asks the dispatcher to stop using this channel (a webhook answering 410 Gone).
    """

    status: ReceiptStatus
    detail: str = ""
    retry_after: float | None = None
    provider_id: str | None = None
    disable: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def delivered(cls, detail: str = "", provider_id: str | None = None,
                  **data: Any) -> Receipt:
        return cls("delivered", detail, provider_id=provider_id, data=data)

    @classmethod
    def retry(cls, detail: str, retry_after: float | None = None) -> Receipt:
        return cls("retry", detail, retry_after=retry_after)

    @classmethod
    def failed(cls, detail: str, *, disable: bool = False) -> Receipt:
        return cls("failed", detail, disable=disable)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "detail": self.detail}
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.provider_id is not None:
            out["provider_id"] = self.provider_id
        if self.disable:
            out["disable"] = True
        if self.data:
            out["data"] = dict(self.data)
        return out


@runtime_checkable
class Channel(Protocol):
    """A delivery channel: one required method. Build it with `factory(name, config, env)`;
    its optional steps (close, group sends, results) are the protocols of `_capabilities`."""

    def send(self, message: Message) -> Receipt:
        """Attempt one delivery; return a Receipt (do not raise for understood failures)."""
        ...


class ChannelFactory(Protocol):
    """What an entry point in the `sopkit.channels` group names (usually the class itself).

    `config` is the playbook's `[channels.NAME]` table without `type` and `description`;
    `env` is the process environment: secrets come only from there, by the variable names
    that `*_env` keys in `config` give.

    A factory may also be a `CheckableFactory` (`check_config(name, config)`: the settings
    checks of the constructor without the environment and without side effects, raising
    ChannelConfigError; `sopkit check` runs it, so it finds what `sopkit run` would refuse)
    and a `TagMirror` (`mirrored_tags(config)`).
    """

    def __call__(self, name: str, config: Mapping[str, Any],
                 env: Mapping[str, str]) -> Channel: ...


class MemoryChannel:
    """The fake: records every message and answers with scripted receipts (default delivered).

    >>> ch = MemoryChannel("test", {}, {})
    >>> ch.script.append(Receipt.retry("busy", retry_after=5))
    """

    def __init__(self, name: str = "memory", config: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.sent: list[Message] = []
        self.script: list[Receipt] = []

    def send(self, message: Message) -> Receipt:
        self.sent.append(message)
        if self.script:
            return self.script.pop(0)
        return Receipt.delivered("recorded in memory")


def check_env_name(config: Mapping[str, Any], key: str, channel: str, *,
                   required: bool = True) -> str | None:
    """The environment variable name in `config[key]` (a `*_env` key), checked, not read."""
    var = config.get(key)
    if var is None:
        if required:
            raise ChannelConfigError(
                f"channel '{channel}': '{key}' is required: name the environment variable "
                f"that holds the secret, e.g. {key} = \"SOPKIT_{channel.upper()}_SECRET\"",
                key=key)
        return None
    if not isinstance(var, str) or not var:
        raise ChannelConfigError(f"channel '{channel}': '{key}' must name an environment "
                                 "variable", key=key)
    return var


def env_secret(config: Mapping[str, Any], env: Mapping[str, str], key: str, channel: str,
               *, required: bool = True) -> str | None:
    """The secret named by `config[key]` (a `*_env` key holding a variable name).

    ChannelConfigError names the channel, the key and the variable when it is missing.
    """
    var = check_env_name(config, key, channel, required=required)
    if var is None:
        return None
    value = env.get(var)
    if value is None or value == "":
        if required:
            raise ChannelConfigError(f"channel '{channel}': environment variable {var} "
                                     f"(named by '{key}') is not set")
        return None
    return value
