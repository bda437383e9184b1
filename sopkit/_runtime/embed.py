"""The embedding API's logic: state export and import with versions, paging customers in and
out, the actions a customer has scheduled, cancelling one, and the check made at delivery.

`Runtime` inherits thin methods that call these (docs/embedding.md). The runtime imports this
module, so it reads the runtime's type only for checking.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sopkit._errors import EventError
from sopkit._live.outbox import message_for, outbox_rows
from sopkit._runtime import state as _state
from sopkit._runtime.codec import StateError
from sopkit._runtime.errors import BadArgument, ClockError, NotFound, StateConflict
from sopkit._runtime.policy import MESSAGES, opted_out

if TYPE_CHECKING:
    from sopkit._live.store import OutboxRow
    from sopkit._runtime.records import Action, CustomerState
    from sopkit._runtime.runtime import Runtime
    from sopkit.channels import Message


@dataclass(frozen=True)
class StateExport:
    """One customer's state as the host stores it: `data` is the documented JSON
    (docs/live.md#stored-state), `version` counts the exports of changed state (1, 2, ...),
    `wake_at` is when the runtime must see the customer next (None: only on an event), for
    a host that pages customers in by it (docs/embedding.md)."""

    customer_id: str
    version: int
    data: bytes
    wake_at: dt.datetime | None = None


@dataclass(frozen=True)
class Scheduled:
    """One action the runtime holds for later: a rule with a `delay` that fired."""

    key: str
    customer_id: str
    rule: str
    action: str  # send | webhook | task | tag | untag | set_stage | reassign
    due: dt.datetime
    fired_at: dt.datetime
    channel: str | None = None
    template: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "customer_id": self.customer_id, "rule": self.rule,
                "action": self.action, "due": self.due.isoformat(),
                "fired_at": self.fired_at.isoformat(), "channel": self.channel,
                "template": self.template}


def check_record(record: object, what: str) -> None:
    """EventError unless `record` is a mapping (a JSON object's dict)."""
    if not isinstance(record, Mapping):
        raise EventError(f"{what} is a mapping of field names to values (a dict), not "
                         f"{type(record).__name__}", f"{what} is not a mapping")


# ---- state export and import ----------------------------------------------------------------


def customer(rt: Runtime, customer_id: str) -> CustomerState:
    """The customer's state (read from the source, if the runtime has one and does not hold
    it); NotFound naming what to do when this runtime does not know it."""
    cs = rt.core.lookup(customer_id)
    if cs is None:
        raise NotFound(f"customer {customer_id!r} is not in this runtime: it has had no "
                       "event or profile yet, or it was evicted (load its StateExport)")
    return cs


def export(rt: Runtime, customer_id: str) -> StateExport:
    """The customer's state now; a new version if it changed since its last export."""
    cs = customer(rt, customer_id)
    version = rt.versions.get(customer_id, 0)
    if customer_id in rt.touched or version == 0:
        rt.touched.discard(customer_id)
        version += 1
        rt.versions[customer_id] = version
    wake = None if cs.wake_at is None else rt.calendar.local(cs.wake_at)
    return StateExport(customer_id, version, _state.dump_customer(rt, cs), wake)


def export_changed(rt: Runtime) -> list[StateExport]:
    """Every customer changed since the last export, by customer id, each a new version."""
    return [export(rt, cid) for cid in sorted(rt.touched) if cid in rt.customers]


def load(rt: Runtime, item: StateExport) -> None:
    """Hold the customer with the exported state, replacing what this runtime holds."""
    if not isinstance(item, StateExport):
        raise BadArgument(f"load() takes a StateExport, not {type(item).__name__}; for the "
                          "clock use load_clock()")
    held = rt.versions.get(item.customer_id, 0)
    if item.version < held:
        raise StateConflict(
            f"customer {item.customer_id!r}: loading version {item.version} of its state, but "
            f"this runtime already exported version {held}. Another writer changed it, or a "
            "failed commit was not rolled back; to roll back, evict the customer first, then "
            "load the last committed export (docs/embedding.md#one-writer)")
    if item.customer_id in rt.touched and item.customer_id in rt.customers:
        raise StateConflict(
            f"customer {item.customer_id!r} has changes this runtime has not exported; "
            "loading over them would lose them. Commit them (export_changed) first, or "
            "evict the customer to drop them (a rollback)")
    cs = _state.load_customer(rt, item.customer_id, item.data)
    rt._adopt(cs)
    rt.versions[item.customer_id] = item.version
    rt.touched.discard(item.customer_id)


def load_clock(rt: Runtime, data: bytes) -> None:
    """The runtime-wide state `export_clock` wrote (clock, counters, fits)."""
    if not isinstance(data, bytes | bytearray):
        raise BadArgument(f"load_clock() takes the bytes export_clock() returned, not "
                          f"{type(data).__name__}")
    rt.restore(data, ())


def evict(rt: Runtime, customer_id: str) -> bool:
    """Forget a customer (its state is the host's again); False if it was not held.

    Unexported changes are lost: that is how a failed commit is rolled back."""
    if rt._rfm is not None or rt._clv is not None:
        raise BadArgument(
            "this playbook has [rfm] or [clv]: their population-wide fits read every "
            "customer, so a runtime running it must hold all of them (no evict)")
    cs = rt.customers.pop(customer_id, None)
    rt.touched.discard(customer_id)
    rt.versions.pop(customer_id, None)
    if cs is None:
        return False
    rt.stage_counts[cs.stage] -= 1
    if customer_id in rt.coordinator.unstarted:
        rt.coordinator.unstarted.remove(customer_id)
    return True


def due(rt: Runtime, until: dt.datetime | str | None, limit: int | None
        ) -> list[tuple[dt.datetime, str]]:
    """The next wake-ups of the customers held, earliest first (ties by customer id)."""
    if limit is not None and limit < 0:
        raise BadArgument(f"due(limit={limit}): the limit cannot be negative")
    bound = None if until is None else timestamp(rt, until)
    found = sorted((cs.wake_at, cid) for cid, cs in rt.customers.items()
                   if cs.wake_at is not None and (bound is None or cs.wake_at <= bound))
    return [(rt.calendar.local(when), cid) for when, cid in
            itertools.islice(found, limit)]


def timestamp(rt: Runtime, when: dt.datetime | str) -> int:
    """A datetime (naive: the playbook's zone) or ISO 8601 text as unix seconds."""
    if isinstance(when, dt.datetime):
        aware = when if when.tzinfo else when.replace(tzinfo=rt.calendar.tz)
        return int(aware.timestamp())
    if not isinstance(when, str):
        raise ClockError(f"bad time {when!r}: expected a datetime or ISO 8601 text such as "
                         "2024-05-01T10:00:00+08:00")
    try:
        return rt.calendar.parse(when)
    except ValueError:
        raise ClockError(f"bad time {when!r}: expected ISO 8601, e.g. 2024-05-01T10:00:00 or "
                         "2024-05-01T10:00:00+08:00") from None


# ---- scheduled actions ----------------------------------------------------------------------


def pending(rt: Runtime, customer_id: str) -> list[Scheduled]:
    """The actions the runtime holds for the customer, by due time, each with its key."""
    cs = customer(rt, customer_id)
    out: list[Scheduled] = []
    for item in sorted(cs.pending, key=lambda p: (p.due, p.seq)):
        rule = rt.rules[item.rule]
        variant = rt.actions.variant(rule, customer_id)
        for i, spec in enumerate(rule["actions"]):
            if spec["type"] == "send" and variant in spec.get("variants", {}):
                spec = {**spec, **spec["variants"][variant]}
            out.append(Scheduled(
                rt.actions.key(cs, rule, item.occurrence, i), customer_id, rule["name"],
                spec["type"],
                rt.calendar.local(item.due), rt.calendar.local(item.scheduled),
                spec.get("channel"), spec.get("template")))
    return out


def cancel(rt: Runtime, key: str, reason: str) -> list[Action]:
    """Cancel the scheduled firing the key belongs to; its actions, recorded `cancelled`."""
    if not isinstance(reason, str) or not reason.strip():
        raise BadArgument("cancel() needs a reason: it is recorded with the cancelled actions")
    parts = key.rsplit(":", 2) if isinstance(key, str) else []
    head = parts[0] if len(parts) == 3 else ""
    prefix = f"{rt.pk}:"
    customer_id = ""
    if head.startswith(prefix):  # playbook:version:rule:customer:occurrence:index
        for rule in rt.rules:
            if head.startswith(f"{prefix}{rule['name']}:"):
                customer_id = head[len(prefix) + len(rule["name"]) + 1:]
                break
    cs = rt.customers.get(customer_id)
    for item in [] if cs is None else list(cs.pending):
        assert cs is not None
        rule = rt.rules[item.rule]
        keys = [rt.actions.key(cs, rule, item.occurrence, i) for i in range(len(rule["actions"]))]
        if key in keys:
            cs.pending.remove(item)
            now = rt.now_ts if rt.now_ts is not None else item.scheduled
            rt.touched.add(customer_id)
            rt.core.schedule(cs, now)
            return rt.actions.records(cs, now, item.rule, item.occurrence, item.facts, "delayed",
                               "cancelled", reason.strip())
    raise NotFound(f"no scheduled action has the key {key!r} in this runtime: it ran, was "
                   "cancelled, or its customer is not loaded (Runtime.pending lists them)")


# ---- at delivery --------------------------------------------------------------------------


def deliverable(rt: Runtime, customer_id: str, channel: Any, kind: str, expires_at: Any,
                at: dt.datetime | str | None) -> str | None:
    """Why the message may not go out now (consent withdrawn, expired), or None."""
    if kind in MESSAGES:
        reason = opted_out(customer(rt, customer_id).opt_out, str(channel or ""))
        if reason is not None:
            return f"{reason} (at delivery)"
    if isinstance(expires_at, str):
        now = rt.now_ts if at is None else timestamp(rt, at)
        if now is not None and now > timestamp(rt, expires_at):
            return f"expired: not delivered by {expires_at}"
    return None


# ---- the Runtime's embedding methods ------------------------------------------------------


class EmbeddingAPI:
    """The embedding methods of `Runtime` (docs/embedding.md); `Runtime` inherits them."""

    @property
    def now(self) -> dt.datetime | None:
        """The runtime's virtual time, in the playbook's timezone; None before the first event
        or `advance`. (`now_ts` is the same instant in unix seconds.)"""
        rt = _rt(self)
        return None if rt.now_ts is None else rt.calendar.local(rt.now_ts)

    def pending(self, customer_id: str) -> list[Scheduled]:
        """The actions the runtime holds for a customer (rules with a `delay` that fired),
        by due time, each with its rule, due time, channel and key."""
        return pending(_rt(self), customer_id)

    def cancel(self, key: str, reason: str) -> list[Action]:
        """Cancel a scheduled action by its key (the whole firing it belongs to): its actions,
        recorded `cancelled` with the reason, like any decision."""
        return cancel(_rt(self), key, reason)

    def export(self, customer_id: str) -> StateExport:
        """One customer's state, versioned, to store in the host's own table."""
        return export(_rt(self), customer_id)

    def export_changed(self) -> list[StateExport]:
        """The state of every customer changed since the last export (new versions)."""
        return export_changed(_rt(self))

    def export_clock(self) -> bytes:
        """The runtime-wide state (clock, counters, fits) to store with the customers'."""
        return _rt(self).dump_clock()

    def load(self, export: StateExport) -> None:
        """Hold a customer with an exported state (replacing what is held); StateConflict if
        this runtime already exported a later version of it (two writers)."""
        load(_rt(self), export)

    def load_clock(self, data: bytes) -> None:
        """Load what `export_clock` returned (do it before loading customers)."""
        load_clock(_rt(self), data)

    def evict(self, customer_id: str) -> bool:
        """Stop holding a customer (unexported changes are dropped: a rollback); False if it
        was not held."""
        return evict(_rt(self), customer_id)

    def due(self, until: dt.datetime | str | None = None,
            limit: int | None = None) -> list[tuple[dt.datetime, str]]:
        """The next wake-ups of the customers held, earliest first: (time, customer id)."""
        return due(_rt(self), until, limit)

    def deliverable(self, action: Action,
                    at: dt.datetime | str | None = None) -> str | None:
        """Why the action may not be delivered now (consent withdrawn, expired), or None.
        Ask at the moment of delivery; `at` defaults to the runtime's clock."""
        return deliverable(_rt(self), action.customer_id, action.details.get("channel"),
                                  action.action, action.details.get("expires_at"), at)

    def consent_screen(self, row: OutboxRow, now: int) -> tuple[str, str] | None:
        """A dispatcher screen: a message row whose customer (held by this runtime) opted
        out since it was planned is settled `suppressed`, with the reason."""
        rt = _rt(self)
        if rt.core.lookup(row.customer_id) is None:  # not held (nor stored, with a source)
            return None
        reason = deliverable(rt, row.customer_id, row.channel, row.kind, None, None)
        return None if reason is None else ("suppressed", reason)

    def message(self, action: Action) -> Message:
        """The `channels.Message` for a deliverable action, with the customer's contact and
        owner as held now (build it at delivery time)."""
        return message_for(_rt(self), action)

    def outbox_rows(self, actions: list[Action]) -> list[OutboxRow]:
        """The `OutboxRow`s for actions, as `sopkit run` stores them (deliverable kinds)."""
        return outbox_rows(_rt(self), actions)


def _rt(api: EmbeddingAPI) -> Runtime:
    """The runtime the mixin's methods run on (`Runtime` is the only subclass)."""
    return cast("Runtime", api)


__all__ = ["BadArgument", "ClockError", "NotFound", "Scheduled", "StateConflict", "StateError",
           "StateExport"]
