"""Durable state and the outbox: the seam between deciding and delivering.

A live run keeps each customer's runtime state, a little run metadata (the clock, where the
input stopped) and the outbox in one store; `commit` writes all three in one transaction, so
a crash leaves either the event fully applied with its outbox rows or not applied at all.
Each row's `key` is UNIQUE: re-processing an event after a restart inserts nothing twice.

Stores: SQLite (WAL; `--store path.db` or `sqlite:///path.db`, the default) and PostgreSQL
(`--store postgresql://...`, psycopg 3; dispatchers claim with FOR UPDATE SKIP LOCKED).
This module holds what every store shares (the `Store` protocol, `OutboxRow`, the statuses);
the stores are in sqlitestore.py and pgstore.py, the SQL they share in storesql.py, and
`open_store` (a store from a URL) in openstore.py.

Row status: pending (due at `due_at`), leased (a dispatcher holds it until `lease_until`),
delivered, dead (permanent failure or retries exhausted), and decisions that are never sent
but kept for the record: suppressed, holdout, cancelled.

Times are integer unix seconds passed in by the caller; a store never reads the clock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from sopkit._errors import SopkitError
from sopkit._live import looplock as lk
from sopkit._live.looplock import LoopHolder

STATUSES = ("pending", "leased", "delivered", "dead", "suppressed", "holdout", "cancelled",
            "backfilled", "expired")
SENDABLE = ("pending", "leased")
SETTLED = ("delivered", "dead", "suppressed", "holdout", "cancelled", "backfilled", "expired")
SCHEMA_VERSION = 3  # 2: state as JSON by name (docs/live.md#stored-state), backfilled, expired;
# 3: customers.next_wake, indexed (a schema 2 store is upgraded in place when opened)
"""The layout this sopkit writes; a store with a higher version is refused, not guessed at."""
UPGRADABLE = 2
"""The oldest schema this sopkit upgrades in place when it opens the store."""
PAGE = 1000  # rows per page when a store reads customers or due wake-ups
MARKS = ("mark_delivered", "mark_retry", "mark_dead", "release", "settle")
Mark = tuple[str, tuple[Any, ...]]
"""One outcome a dispatcher records about a leased row: the name of the `Store` method (one of
MARKS) and its arguments; `Store.mark_many` applies a pass's marks in one transaction."""


class StoreError(SopkitError):
    """The store failed while in use (server unreachable, disk full, locked too long)."""


@dataclass
class OutboxRow:
    """One action in the outbox; `message` is `channels.Message.to_json()`.

    `settled_at` is when the row reached a final status (delivered, dead, or created as
    suppressed/holdout/cancelled); `purge --before` goes by it.
    """

    key: str
    playbook: str
    customer_id: str
    rule: str
    kind: str
    channel: str
    status: str
    due_at: int
    created_at: int
    message: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    attempts: int = 0
    id: int | None = None
    last_error: str = ""
    receipt: dict[str, Any] | None = None
    delivered_at: int | None = None
    lease_until: int | None = None
    leased_by: str | None = None
    settled_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Every field, in column order (for `sopkit outbox list --output jsonl`)."""
        return {name: getattr(self, name) for name in COLUMNS}


COLUMNS = ("id", "key", "playbook", "customer_id", "rule", "kind", "channel", "status",
           "due_at", "created_at", "message", "reason", "attempts", "lease_until", "leased_by",
           "last_error", "receipt", "delivered_at", "settled_at")


class Store(Protocol):
    """What `run`, `dry-run`, the dispatcher and `sopkit outbox` need from a store."""

    url: str
    """Where the store is, for messages: the path, or the URL without its password."""

    def close(self) -> None: ...

    # -- runtime state ------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None: ...

    def load_customers(self) -> Iterator[tuple[str, bytes]]:
        """Every customer's state, by customer_id; read in pages, so memory stays flat."""
        ...

    def load_customer(self, customer_id: str) -> bytes | None:
        """One customer's stored state; None when the store has none."""
        ...

    def due_customers(self, until: int, after: tuple[int, str] | None = None,
                      limit: int = PAGE) -> list[tuple[int, str]]:
        """(next_wake, customer_id) of the customers whose next wake-up is due by `until`,
        after `after` in (next_wake, customer_id) order, at most `limit` (from the index)."""
        ...

    def count_customers(self) -> int:
        """How many customers the store holds."""
        ...

    def commit(self, customers: Mapping[str, bytes], meta: Mapping[str, str],
               rows: Sequence[OutboxRow], reassign: Mapping[str, str] | None = None,
               cancel: Mapping[str, tuple[str, int]] | None = None,
               wakes: Mapping[str, int | None] | None = None) -> int:
        """Cancel the pending rows of the rules in `cancel` (rule -> (reason, now)), upsert
        customer states (each with its next wake-up: from `wakes`, else read from the
        state) and meta, insert rows (skipping existing keys), then point the pending rows
        of each customer in `reassign` at its new owner, atomically; return how many rows
        were new. A row given `leased` (to the live loop's dispatcher) that was inserted gets
        its `id` set (`Dispatcher.adopt` sends it without a claim)."""
        ...

    # -- dispatching --------------------------------------------------------------------
    def claim(self, now: int, limit: int, lease_seconds: int, worker: str,
              skip_channels: Collection[str] = (), lease_now: int | None = None
              ) -> list[OutboxRow]:
        """Lease up to `limit` pending rows due by `now` (and leased rows whose lease ran
        out), oldest due first, except rows of `skip_channels`; each claim adds one to
        `attempts`. Leases run on `lease_now` (the wall clock; default `now`): a replay on a
        fixed business clock still sees a dead dispatcher's leases run out."""
        ...

    def release_worker(self, worker: str) -> int:
        """Give back every row `worker` holds (a restarted process of that name holds none
        in flight); return how many. The attempts stay counted."""
        ...

    def mark_delivered(self, row_id: int, receipt: Mapping[str, Any], now: int) -> None:
        """A leased row was delivered (a row no longer leased is left alone)."""
        ...

    def mark_retry(self, row_id: int, due_at: int, error: str) -> None:
        """A leased row goes back to pending, due at `due_at`, with the error recorded."""
        ...

    def mark_dead(self, row_id: int, error: str, now: int) -> None:
        """A leased row failed for good."""
        ...

    def release(self, row_id: int) -> None:
        """Give a leased row back untouched: pending, same due time, the claim not counted."""
        ...

    def settle(self, row_id: int, status: str, reason: str, now: int) -> None:
        """Settle a leased row without sending it: `expired`, or `suppressed` when consent
        was withdrawn before delivery; the reason is recorded."""
        ...

    def mark_many(self, marks: Sequence[Mark]) -> None:
        """Apply marks (`mark_delivered`, `mark_retry` ... with their arguments) in one
        transaction: all of them or, after a crash, none (the rows stay leased)."""
        ...

    # -- inspection and repair ----------------------------------------------------------
    def rows(self, status: str | None = None, *, customer_id: str | None = None,
             limit: int | None = None, ids: Sequence[int] | None = None) -> list[OutboxRow]:
        """Rows by id, optionally only one status, one customer, these ids, the first `limit`."""
        ...

    def counts(self) -> dict[str, int]:
        """Rows per status, every status listed (0 when none)."""
        ...

    def requeue(self, ids: Sequence[int] | None, status: str, now: int) -> int:
        """Put rows in `status` (only these ids, or all of them) back to pending, due `now`,
        with attempts reset to 0; return how many."""
        ...

    def purge(self, status: str, before: int | None) -> int:
        """Delete settled rows in `status` (settled before `before`, if given); never
        pending or leased rows (ValueError)."""
        ...

    def reassign_pending(self, customer_id: str, new_owner: str) -> int:
        """Point pending task rows of a customer at a new owner (staff hand-over)."""
        ...

    # -- one event loop per store (see _looplock.py) ------------------------------------
    RENEWS: bool
    """Whether the loop lock is a lease to renew (SQLite) or lives with the connection."""

    def acquire_loop_lock(self, worker: str, now: int, lease_seconds: int = lk.LEASE_SECONDS,
                          *, host: str | None = None, pid: int | None = None) -> LoopHolder:
        """Take the store's event-loop lock for this process (`now`: wall clock), or raise
        LoopLocked (a UsageError, exit 2) naming the holder; later commits on this store
        object check that the lock is still theirs (LoopLockLost otherwise)."""
        ...

    def renew_loop_lock(self, holder: LoopHolder, now: int,
                        lease_seconds: int = lk.LEASE_SECONDS) -> bool:
        """Extend `holder`'s lease; False when another run has taken the lock."""
        ...

    def release_loop_lock(self, holder: LoopHolder) -> None:
        """Give the lock back (only if `holder` still has it)."""
        ...

    def loop_lock_holder(self) -> LoopHolder | None:
        """Who holds (or last held) the loop lock, for messages; None if nobody ever did."""
        ...


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages and `Store.url`."""
    try:
        parts = urlsplit(url)
        password, port_number = parts.password, parts.port
    except ValueError:  # a port that is not a number: hide whatever sits before the host
        head, sep, tail = url.partition("@")
        return f"{head.split(':', 2)[0]}:{head.split(':', 2)[1]}:***@{tail}" \
            if sep and head.count(":") >= 2 else url
    if password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{port_number}" if port_number else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query,
                       parts.fragment))
