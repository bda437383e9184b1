"""Durable state and the outbox: the seam between deciding and delivering.

A live run keeps each customer's runtime state, a little run metadata (the clock, where the
input stopped) and the outbox in one store; `commit` writes all three in one transaction, so
a crash leaves either the event fully applied with its outbox rows or not applied at all.
Each row's `key` is UNIQUE: re-processing an event after a restart inserts nothing twice.

Stores: SQLite (WAL; `--store path.db` or `sqlite:///path.db`, the default) and PostgreSQL
(`--store postgresql://...`, psycopg 3; dispatchers claim with FOR UPDATE SKIP LOCKED).

Row status: pending (due at `due_at`), leased (a dispatcher holds it until `lease_until`),
delivered, dead (permanent failure or retries exhausted), and decisions that are never sent
but kept for the record: suppressed, holdout, cancelled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

STATUSES = ("pending", "leased", "delivered", "dead", "suppressed", "holdout", "cancelled")
SENDABLE = ("pending", "leased")


@dataclass
class OutboxRow:
    """One action in the outbox; `message` is `channels.Message.to_json()`."""

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


class Store(Protocol):
    """What `run`, `dry-run`, the dispatcher and `sopkit outbox` need from a store."""

    url: str

    def close(self) -> None: ...

    # -- runtime state ------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None: ...

    def load_customers(self) -> Iterator[tuple[str, bytes]]: ...

    def commit(self, customers: Mapping[str, bytes], meta: Mapping[str, str],
               rows: Sequence[OutboxRow]) -> int:
        """Upsert customer states and meta, insert rows (skipping existing keys), atomically;
        return how many rows were new."""
        ...

    # -- dispatching --------------------------------------------------------------------
    def claim(self, now: int, limit: int, lease_seconds: int, worker: str) -> list[OutboxRow]:
        """Lease up to `limit` pending rows due by `now` (and leased rows whose lease ran
        out), oldest due first; each claim adds one to `attempts`."""
        ...

    def mark_delivered(self, row_id: int, receipt: Mapping[str, Any], now: int) -> None: ...

    def mark_retry(self, row_id: int, due_at: int, error: str) -> None: ...

    def mark_dead(self, row_id: int, error: str, now: int) -> None: ...

    # -- inspection and repair ----------------------------------------------------------
    def rows(self, status: str | None = None, *, customer_id: str | None = None,
             limit: int | None = None) -> list[OutboxRow]: ...

    def counts(self) -> dict[str, int]: ...

    def requeue(self, ids: Sequence[int] | None, status: str, now: int) -> int:
        """Put rows (these ids, or every row in `status`) back to pending, due now."""
        ...

    def purge(self, status: str, before: int | None) -> int: ...

    def reassign_pending(self, customer_id: str, new_owner: str) -> int:
        """Point pending task rows of a customer at a new owner (staff hand-over)."""
        ...


def open_store(url: str) -> Store:
    """A store from a URL or a path: `postgresql://...` or an SQLite file."""
    raise NotImplementedError  # filled in by the store implementation
