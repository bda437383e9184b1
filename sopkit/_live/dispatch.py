"""The dispatcher: claims due outbox rows, hands each to its channel, records what happened.

One `run_once(now)` claims up to `batch` due rows (leasing them for `lease_seconds`), sends
each through its channel and marks it delivered, pending again with a delay, or dead.
Delivery is at least once: a dispatcher that dies mid-batch leaves its rows leased, and
they are claimed again when the lease runs out; channels pass the row's key on as an
idempotency key so the far side can drop the duplicate. See docs/live.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sopkit._errors import did_you_mean
from sopkit._live.store import Mark, OutboxRow
from sopkit._mask import mask, mask_text
from sopkit._runtime.errors import BadArgument
from sopkit.channels import BatchSender, Channel, GroupSender, Message, Receipt

log = logging.getLogger("sopkit.dispatch")

OUTCOMES = ("delivered", "retried", "dead", "released", "expired", "suppressed")

# A screen looks at a claimed row just before it would be sent and may settle it unsent:
# (status, reason), or None to let it go. The dispatcher runs its screens in order.
Screen = Callable[[OutboxRow, int], "tuple[str, str] | None"]


class Outbox(Protocol):
    """What the dispatcher needs of an outbox table: sopkit's stores (`open_store`) have it,
    and a host can implement it over its own table (docs/embedding.md#your-own-outbox).

    A row is `pending` until claimed; a claim leases it to one worker until the lease runs
    out; the dispatcher then marks it `delivered`, pending again (`mark_retry`), `dead`, or
    settles it unsent (`expired`, `suppressed`), or gives it back (`release`). An outbox
    that also has `mark_many(marks)` (a `BatchedOutbox`, as sopkit's stores) gets a pass's
    outcomes in one call, once every channel of the pass has answered, to record them in one
    transaction; the others get one call per row.
    """

    def claim(self, now: int, limit: int, lease_seconds: int, worker: str,
              skip_channels: Collection[str] = (), lease_now: int | None = None
              ) -> list[OutboxRow]:
        """Lease up to `limit` rows due by `now` (pending, or leased with the lease run out
        at `lease_now`, default `now`), oldest due first, not of `skip_channels`; add one to
        each row's `attempts` and set its `id`."""
        ...

    def mark_delivered(self, row_id: int, receipt: Mapping[str, Any], now: int) -> None:
        """A leased row was delivered; `receipt` is the channel's Receipt as JSON."""
        ...

    def mark_retry(self, row_id: int, due_at: int, error: str) -> None:
        """A leased row goes back to pending, due at `due_at`."""
        ...

    def mark_dead(self, row_id: int, error: str, now: int) -> None:
        """A leased row failed for good."""
        ...

    def release(self, row_id: int) -> None:
        """Give a leased row back untouched (pending, the claim not counted)."""
        ...

    def settle(self, row_id: int, status: str, reason: str, now: int) -> None:
        """Settle a leased row unsent with `status` (`expired`, `suppressed`) and the reason."""
        ...


@runtime_checkable
class BatchedOutbox(Protocol):
    """An outbox that records a pass's outcomes in one transaction (sopkit's stores)."""

    def mark_many(self, marks: Sequence[Mark]) -> None: ...


def expiry(row: OutboxRow, now: int) -> tuple[str, str] | None:
    """A row whose action said `expires` and that could not go out in time is `expired`."""
    body = row.message.get("body") if isinstance(row.message, dict) else None
    until = body.get("expires_at") if isinstance(body, dict) else None
    if not isinstance(until, str):
        return None
    try:
        limit = int(dt.datetime.fromisoformat(until).timestamp())
    except ValueError:
        return None
    if now <= limit:
        return None
    return "expired", f"expired: not delivered by {until}"


@dataclass
class DispatchStats:
    """What one `run_once` did: rows claimed, and what became of them, in total and per
    channel (`""` is staff tasks with no delivery channel). `released` rows were given back
    untouched because their channel had been disabled; `disabled` names the channels
    disabled during this run, with the reason."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    expired: int = 0
    suppressed: int = 0
    by_channel: dict[str, dict[str, int]] = field(default_factory=dict)
    disabled: dict[str, str] = field(default_factory=dict)

    def count(self, channel: str, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        per = self.by_channel.setdefault(channel, dict.fromkeys(OUTCOMES, 0))
        per[outcome] += 1

    def to_json(self) -> dict[str, Any]:
        return {"claimed": self.claimed, "delivered": self.delivered, "retried": self.retried,
                "dead": self.dead, "released": self.released, "expired": self.expired,
                "suppressed": self.suppressed,
                "by_channel": {k: dict(v) for k, v in sorted(self.by_channel.items())},
                "disabled": dict(sorted(self.disabled.items()))}


class Dispatcher:
    """Delivers due outbox rows through `channels` (the playbook's channels, by name).

    Retries back off exponentially from `base_delay` seconds, doubling per attempt up to
    `max_delay`, with full jitter seeded by (row key, attempt): the same row always waits
    the same, different rows spread out. A channel's `retry_after` is honoured as given.
    After `max_attempts` attempts a row is dead. A receipt with `disable=True` stops the
    channel for the life of this dispatcher: its rows stay pending for a fixed restart.
    """

    def __init__(self, store: Outbox, channels: Mapping[str, Channel], *, worker: str,
                 lease_seconds: int = 60, max_attempts: int = 8, base_delay: int = 30,
                 max_delay: int = 6 * 3600, batch: int = 100,
                 wall: Callable[[], int] | None = None, group_rows: int = 10_000,
                 screens: Sequence[Screen] = (expiry,)) -> None:
        for name, value, least in (("lease_seconds", lease_seconds, 1),
                                   ("max_attempts", max_attempts, 1),
                                   ("base_delay", base_delay, 0), ("max_delay", max_delay, 0),
                                   ("batch", batch, 1)):
            if value < least:
                raise BadArgument(f"Dispatcher: {name} must be at least {least}, not {value}")
        self.store = store
        self.channels = dict(channels)
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.batch = batch
        self.group_rows = group_rows  # at most this many rows of one group send per pass
        # leases are about processes: `sopkit run` passes the wall clock, so that a replay on
        # a fixed business clock still sees a killed dispatcher's leases run out
        self.wall = wall
        self.disabled: dict[str, str] = {}
        """Channels disabled by a receipt, with the reason; their rows are not claimed."""
        self.screens = list(screens)
        """Checks made at the moment of delivery (expiry, consent): see `Screen`."""
        # a store that can records a pass's outcomes in one transaction, after every channel
        # of the pass has answered (a row is never marked before its channel has it)
        self._marks: list[Mark] | None = [] if isinstance(store, BatchedOutbox) else None
        self._batches: dict[str, list[tuple[OutboxRow, Message]]] = {}
        # asked once: isinstance on a runtime_checkable protocol costs tens of microseconds
        self._batching = {name for name, channel in self.channels.items()
                          if isinstance(channel, BatchSender)}
        self._grouping = {name for name, channel in self.channels.items()
                          if isinstance(channel, GroupSender)}
        self._adopted: list[OutboxRow] = []  # rows committed leased to this dispatcher

    def lease_new(self, rows: Sequence[OutboxRow], now: int) -> None:
        """Lease new rows due by `now` to this dispatcher before they are first committed
        (the live loop): they are inserted `leased`, and the ones the commit inserted (their
        `id` set) are given to `adopt`, so the next pass sends them without claiming them
        back from the store. As a claim would: attempts one, the lease on the wall clock. At
        most `batch` rows sent one at a time and `group_rows` rows of batch senders or
        recorded tasks; rows of a group sender are left to the claim (it gathers a firing)."""
        wall = self.wall() if self.wall else now
        alone = together = 0
        for row in rows:
            name = row.channel
            if row.status != "pending" or row.due_at > now or name in self.disabled or \
                    name in self._grouping:
                continue
            batched = name in self._batching or (name == "" and "" not in self.channels)
            if (together if batched else alone) >= (self.group_rows if batched
                                                    else self.batch):
                continue
            if batched:
                together += 1
            else:
                alone += 1
            row.status, row.attempts = "leased", row.attempts + 1
            row.lease_until, row.leased_by = wall + self.lease_seconds, self.worker

    def adopt(self, rows: Sequence[OutboxRow]) -> None:
        """Send these rows in the next pass with what it claims: rows `lease_new` leased
        that the commit inserted (those with an `id`); the others are left to their lease."""
        self._adopted.extend(r for r in rows if r.status == "leased" and r.id is not None)

    def backoff(self, key: str, attempts: int) -> int:
        """Seconds to wait after failed attempt number `attempts` (1-based) of row `key`.

        Full jitter: uniform in (0, min(max_delay, base_delay * 2**(attempts-1))], drawn
        from a hash of key and attempt, so it is the same on every run and machine; at
        least one second unless the ceiling is 0.
        """
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(attempts - 1, 0))
        digest = hashlib.sha256(f"{key}\0{attempts}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2 ** 64
        return min(ceiling, max(1, math.ceil(ceiling * fraction))) if ceiling > 0 else 0

    def delay(self, row: OutboxRow, receipt: Receipt) -> int:
        """The wait before the next attempt: the channel's retry_after, else the backoff."""
        after = receipt.retry_after
        if after is not None and math.isfinite(after) and after >= 0:
            return math.ceil(after)
        return self.backoff(row.key, row.attempts)

    def run_once(self, now: int) -> DispatchStats:
        """Claim the rows due at `now` (unix seconds) and attempt each once.

        Rows of one campaign firing on a channel that can send groups (a GroupSender, e.g.
        WeCom 企业群发) go to it together: while a full claim ends in such a row, more are
        claimed (up to `group_rows`), so one firing becomes one group send per pass.
        """
        stats = DispatchStats()
        try:
            self._run(now, stats)
        finally:  # what the channels took is recorded even if the pass is interrupted
            self._flush()
        return stats

    def _flush(self) -> None:
        """Record the outcomes kept so far: one transaction for all of them (a pass's rows of
        batch senders, screens and recorded tasks go together; a row sent on its own or a
        group send is recorded right after it)."""
        if self._marks:
            marks, self._marks = self._marks, []
            assert isinstance(self.store, BatchedOutbox), "marks are kept for such a store"
            self.store.mark_many(marks)

    def _record(self, op: str, *args: Any) -> None:
        """One outcome: kept for the pass's transaction, or written at once by an outbox
        that has no `mark_many`."""
        if self._marks is not None:
            self._marks.append((op, args))
        else:
            getattr(self.store, op)(*args)

    def _run(self, now: int, stats: DispatchStats) -> None:
        self._batches = {}
        rows = self._claim(now)
        last = rows
        while (last and len(last) >= self.batch and self._group_of(last[-1]) is not None
               and len(rows) < self.group_rows):
            last = self._claim(now)
            rows.extend(last)
        if self._adopted:  # leased when committed: sent in order with the claimed ones
            adopted, self._adopted = self._adopted, []
            claimed = {r.id for r in rows}  # a lease that ran out meanwhile: claimed again
            rows = sorted(rows + [r for r in adopted if r.id not in claimed],
                          key=lambda r: (r.due_at, r.id or 0))
        stats.claimed = len(rows)
        groups: dict[tuple[str, str, str], list[OutboxRow]] = {}
        for row in rows:
            group = self._group_of(row)
            if group is not None:
                groups.setdefault(group, []).append(row)
        sent: set[tuple[str, str, str]] = set()
        for row in rows:
            group = self._group_of(row)
            if group is None:
                self._dispatch(row, now, stats)
            elif group not in sent:
                sent.add(group)
                self._dispatch_group(groups[group], now, stats)
        batches, self._batches = self._batches, {}
        for name, pairs in batches.items():
            self._send_batch(name, pairs, now, stats)

    def _send_batch(self, name: str, pairs: list[tuple[OutboxRow, Message]], now: int,
                    stats: DispatchStats) -> None:
        """Send a pass's rows of a `BatchSender` channel in one call (one fsync for a file)."""
        channel = self.channels[name]
        assert isinstance(channel, BatchSender), "_dispatch batches rows of batch senders only"
        receipts = _receipts(name, channel.send_batch, [m for _, m in pairs])
        for (row, _), receipt in zip(pairs, receipts, strict=True):
            self._settle(row, receipt, now, stats)

    def _claim(self, now: int) -> list[OutboxRow]:
        return self.store.claim(now, self.batch, self.lease_seconds, self.worker,
                                skip_channels=tuple(self.disabled),
                                lease_now=self.wall() if self.wall else None)

    def _group_of(self, row: OutboxRow) -> tuple[str, str, str] | None:
        """(channel, campaign, firing) of a campaign send its channel can group, else None."""
        if row.kind != "send" or row.channel in self.disabled:
            return None
        body = row.message.get("body") if isinstance(row.message, dict) else None
        if not isinstance(body, dict) or "firing" not in body:
            return None
        if row.channel not in self._grouping:
            return None
        return row.channel, row.rule, str(body["firing"])

    def _dispatch_group(self, rows: list[OutboxRow], now: int, stats: DispatchStats) -> None:
        """Send the rows of one campaign firing through the channel's `send_group`."""
        name = rows[0].channel
        channel = self.channels[name]
        assert isinstance(channel, GroupSender), "_group_of groups rows of group senders only"
        readable: list[tuple[OutboxRow, Message]] = []
        for row in rows:
            if self._screened(row, now, stats):
                continue
            try:
                message = self.message_of(row)
            except (KeyError, TypeError, ValueError) as exc:
                self._dead(row, f"unreadable message in the outbox: {type(exc).__name__}: "
                           f"{exc}", now, stats)
                continue
            readable.append((row, message))
        if not readable:
            return
        receipts = _receipts(name, channel.send_group, [m for _, m in readable])
        log.info("group send of %d rows (%s) via %s", len(readable), rows[0].rule, name)
        for (row, _), receipt in zip(readable, receipts, strict=True):
            self._settle(row, receipt, now, stats)
        self._flush()  # one group send, recorded before anything else goes out

    def _dispatch(self, row: OutboxRow, now: int, stats: DispatchStats) -> None:
        assert row.id is not None, "a claimed row has an id"
        name = row.channel
        if name in self.disabled:  # disabled earlier in this batch: give the row back
            self._record("release", row.id)
            stats.count(name, "released")
            return
        if self._screened(row, now, stats):
            return
        if name == "" and "" not in self.channels:  # a staff task, and no task channel:
            # the record is the delivery
            self._record("mark_delivered", row.id, Receipt.delivered("recorded").to_json(), now)
            stats.count(name, "delivered")
            return
        channel = self.channels.get(name)
        if channel is None:
            hint = did_you_mean(name, self.channels)
            self._dead(row, f"unknown channel '{name}'" + (f"; {hint}" if hint else ""), now,
                       stats)
            return
        try:
            message = self.message_of(row)
        except (KeyError, TypeError, ValueError) as exc:
            self._dead(row, f"unreadable message in the outbox: {type(exc).__name__}: {exc}",
                       now, stats)
            return
        if name in self._batching:  # sent with the pass's other rows for it
            self._batches.setdefault(name, []).append((row, message))
            return
        try:
            receipt = channel.send(message)
        except Exception as exc:  # a channel bug or an error it did not understand: retry
            receipt = Receipt.retry(f"{type(exc).__name__}: {exc}")
        self._settle(row, receipt, now, stats)
        # a message sent on its own reached someone outside (a customer, an endpoint): record
        # it now, with what the pass kept so far, so a crash resends it alone, not the pass
        self._flush()

    def message_of(self, row: OutboxRow) -> Message:
        """The message a claimed row delivers (its attempt number set)."""
        return Message.from_json({**row.message, "attempt": row.attempts})  # one object

    def _screened(self, row: OutboxRow, now: int, stats: DispatchStats) -> bool:
        """Settle the row unsent if a screen says so (expired, consent withdrawn)."""
        assert row.id is not None, "a claimed row has an id"
        for screen in self.screens:
            verdict = screen(row, now)
            if verdict is not None:
                status, reason = verdict
                self._record("settle", row.id, status, reason, now)
                stats.count(row.channel, status)
                log.info("%s %s via %s: %s", status, mask_text(row.key), row.channel or "-",
                         reason)
                return True
        return False

    def _settle(self, row: OutboxRow, receipt: Any, now: int, stats: DispatchStats) -> None:
        """Record what a channel's receipt says about one row."""
        assert row.id is not None, "a claimed row has an id"
        name = row.channel
        if not isinstance(receipt, Receipt):
            receipt = Receipt.retry(f"channel '{name}' returned {type(receipt).__name__}, "
                                    "not a Receipt")
        if receipt.status == "delivered":
            self._record("mark_delivered", row.id, mask(receipt.to_json()), now)
            stats.count(name, "delivered")
            if log.isEnabledFor(logging.DEBUG):  # masking every row's key costs when unread
                log.debug("delivered %s via %s", mask_text(row.key), name)
            if receipt.disable:
                self._disable(name, mask_text(receipt.detail), stats)
            return
        detail = mask_text(receipt.detail)
        if receipt.status == "retry" and row.attempts < self.max_attempts:
            wait = self.delay(row, receipt)
            self._record("mark_retry", row.id, now + wait, detail)
            stats.count(name, "retried")
            log.info("retrying %s via %s in %ss (attempt %s of %s): %s", mask_text(row.key),
                     name, wait, row.attempts, self.max_attempts, detail)
        elif receipt.status == "retry":
            self._dead(row, f"retries exhausted: {detail}", now, stats)
        else:
            self._dead(row, detail or "failed", now, stats)
        if receipt.disable:
            self._disable(name, detail, stats)

    def _disable(self, name: str, detail: str, stats: DispatchStats) -> None:
        """Stop using channel `name` for the life of this dispatcher (a receipt asked)."""
        self.disabled[name] = detail
        stats.disabled[name] = detail
        log.warning("channel %s disabled until restart: %s", name, detail)

    def _dead(self, row: OutboxRow, error: str, now: int, stats: DispatchStats) -> None:
        assert row.id is not None
        self._record("mark_dead", row.id, error, now)
        stats.count(row.channel, "dead")
        log.warning("dead letter %s via %s: %s", mask_text(row.key), row.channel or "-", error)


def _receipts(name: str, send: Callable[[list[Message]], Any],
              messages: list[Message]) -> list[Receipt]:
    """A receipt per message from one call that sends them all (a batch or a group send):
    retry for every message if the call raises or answers a receipt count that is not
    theirs."""
    try:
        receipts = list(send(messages))
    except Exception as exc:  # as for one row: an error the channel did not understand
        return [Receipt.retry(f"{type(exc).__name__}: {exc}")] * len(messages)
    if len(receipts) != len(messages):
        return [Receipt.retry(f"channel '{name}' answered {len(receipts)} receipts for "
                              f"{len(messages)} messages")] * len(messages)
    return receipts
