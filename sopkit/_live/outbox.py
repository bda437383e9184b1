"""Actions as outbox rows and channel messages, and the public dispatcher.

`message_for` turns an `Action` into the `channels.Message` a channel sends; `outbox_rows`
turns a list of actions into the rows `sopkit run` commits (and a host may store in its own
table). `Dispatcher` is the live loop's dispatcher, with one addition for a host: given the
runtime, it decides consent and ownership again at the moment of delivery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sopkit._live import dispatch as _dispatch
from sopkit._live.dispatch import Outbox, Screen, expiry
from sopkit._live.store import OutboxRow
from sopkit._live.storesql import reassigned
from sopkit._runtime.errors import BadArgument
from sopkit._runtime.policy import MESSAGES
from sopkit._runtime.records import json_value
from sopkit.channels import Channel, Message

if TYPE_CHECKING:
    from sopkit._runtime.records import Action
    from sopkit._runtime.runtime import Runtime

# Actions that reach a person or a system go to the outbox; tag and stage changes are facts
# (mirrored only to a channel whose type is a TagMirror of the tag: wecom, by `tag_ids`).
DELIVERABLE = frozenset({"send", "webhook", "task", "reassign"})
_STATUS = {"planned": "pending", "deferred": "pending"}


def message_for(runtime: Runtime, action: Action) -> Message:
    """The channel message for an action: its details as the body, the customer's profile
    as `contact` and owner as `owner` (for a `reassign`, the new owner), as the runtime holds
    them now."""
    if action.action not in DELIVERABLE:
        raise BadArgument(f"a {action.action!r} action is a fact, not a delivery: only "
                          f"{', '.join(sorted(DELIVERABLE))} actions have a message")
    details = action.details
    cs = runtime.core.lookup(action.customer_id)
    # by name: the same message whether the customer was held since the event or read
    # back from the store (which keeps names sorted)
    contact = {k: json_value(v, exact=True) for k, v in sorted(cs.profile.items())} \
        if cs else {}
    owner = cs.owner if cs else None
    if action.action == "reassign":
        owner = details.get("to")
    return Message(key=action.key, kind=action.action,
                   channel=str(details.get("channel") or ""),
                   customer_id=action.customer_id, rule=action.rule, time=action.time,
                   body={k: json_value(v, exact=True) for k, v in details.items()},
                   contact=contact, owner=owner)


def outbox_rows(runtime: Runtime, actions: Sequence[Action]) -> list[OutboxRow]:
    """The outbox rows for a list of action records (deliverable kinds only): `planned` and
    `deferred` ones `pending` (due at their delivery time), the others settled as decided."""
    rows: list[OutboxRow] = []
    for action in actions:
        if action.action not in DELIVERABLE:
            continue
        message = message_for(runtime, action)
        due = int(getattr(action, "deliver_ts", 0) or action.ts)
        rows.append(OutboxRow(
            key=action.key, playbook=runtime.pk, customer_id=action.customer_id,
            rule=action.rule, kind=action.action, channel=message.channel,
            status=_STATUS.get(action.status, action.status), due_at=due,
            created_at=action.ts, message=message.to_json(),
            reason=str(action.details.get("reason", ""))))
    return rows


def refreshed(runtime: Runtime, message: dict[str, Any], kind: str) -> dict[str, Any]:
    """A stored message as of now: a customer handed over since it was planned goes with
    the new owner (and a task that went to the old owner, to the new one)."""
    cs = runtime.core.lookup(str(message.get("customer_id")))
    if cs is None or kind == "reassign" or cs.owner is None or \
            cs.owner == message.get("owner"):
        return message
    return reassigned(message, kind, cs.owner)


class Dispatcher(_dispatch.Dispatcher):
    """Claims due rows from an `Outbox`, sends each through its channel, records the outcome.

    `outbox` is sopkit's store (`open_store`) or the host's own table (the `Outbox`
    protocol); `channels` maps the playbook's channel names to channels. With `runtime`, it
    decides again at the moment of delivery what the runtime knows now: a message to a
    customer who opted out since it was planned is settled `suppressed` (reason
    `opt-out: sms (at delivery)`), and a customer handed over since goes to the new owner.
    Rows of customers the runtime does not hold pass unscreened (page them in first).
    Settings: `lease_seconds`, `max_attempts`, `base_delay`, `max_delay`, `batch`,
    `screens` (docs/live.md#the-dispatcher-and-retries).
    """

    def __init__(self, outbox: Outbox, channels: Mapping[str, Channel], *, worker: str,
                 runtime: Runtime | None = None, screens: Sequence[Screen] | None = None,
                 lease_seconds: int = 60, max_attempts: int = 8, base_delay: int = 30,
                 max_delay: int = 6 * 3600, batch: int = 100) -> None:
        if screens is None:
            screens = (expiry,) if runtime is None else (expiry, runtime.consent_screen)
        super().__init__(outbox, channels, worker=worker, lease_seconds=lease_seconds,
                         max_attempts=max_attempts, base_delay=base_delay,
                         max_delay=max_delay, batch=batch, screens=screens)
        self.runtime = runtime

    def message_of(self, row: OutboxRow) -> Message:
        if self.runtime is not None and row.kind in (*MESSAGES, "task"):
            row.message = refreshed(self.runtime, row.message, row.kind)
        return super().message_of(row)
