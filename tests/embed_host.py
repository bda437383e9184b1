"""A host's own tables, as a CRM engineer would write them against the embedding API:
customer state with a version column (compare-and-swap), the clock, and an outbox table that
implements `sopkit.Outbox`. Plain sqlite3; sopkit's own store is not used."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import sopkit

SCHEMA = """
CREATE TABLE IF NOT EXISTS sop_state (customer_id TEXT PRIMARY KEY, version INTEGER NOT NULL,
                                      data BLOB NOT NULL, wake_at INTEGER);
CREATE TABLE IF NOT EXISTS sop_clock (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sop_outbox (
    id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, customer_id TEXT NOT NULL,
    rule TEXT NOT NULL, kind TEXT NOT NULL, channel TEXT NOT NULL, status TEXT NOT NULL,
    due_at INTEGER NOT NULL, created_at INTEGER NOT NULL, message TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER, leased_by TEXT);
"""


class Conflict(Exception):
    """Another writer committed this customer's state first."""


class HostDb:
    """The host's database: state, clock and outbox in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript(SCHEMA)

    # -- state --------------------------------------------------------------------------
    def commit(self, exports: Iterable[sopkit.StateExport], clock: bytes,
               rows: Iterable[sopkit.OutboxRow]) -> None:
        """State (compare-and-swap on version), clock and outbox rows in one transaction."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for e in exports:
                wake = None if e.wake_at is None else int(e.wake_at.timestamp())
                if e.version == 1:
                    try:
                        db.execute("INSERT INTO sop_state VALUES (?, ?, ?, ?)",
                                   (e.customer_id, e.version, e.data, wake))
                    except sqlite3.IntegrityError:
                        raise Conflict(e.customer_id) from None
                elif db.execute("UPDATE sop_state SET version = ?, data = ?, wake_at = ? "
                                "WHERE customer_id = ? AND version = ?",
                                (e.version, e.data, wake, e.customer_id,
                                 e.version - 1)).rowcount != 1:
                    raise Conflict(e.customer_id)
            db.execute("INSERT OR REPLACE INTO sop_clock VALUES (1, ?)", (clock,))
            for r in rows:
                db.execute("INSERT OR IGNORE INTO sop_outbox (key, customer_id, rule, kind, "
                           "channel, status, due_at, created_at, message, reason) VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (r.key, r.customer_id, r.rule, r.kind, r.channel, r.status,
                            r.due_at, r.created_at, json.dumps(r.message), r.reason))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def exports(self, ids: Iterable[str] | None = None) -> list[sopkit.StateExport]:
        sql = "SELECT customer_id, version, data FROM sop_state"
        found = self.db.execute(sql + " ORDER BY customer_id").fetchall()
        wanted = None if ids is None else set(ids)
        return [sopkit.StateExport(c, v, bytes(d)) for c, v, d in found
                if wanted is None or c in wanted]

    def clock(self) -> bytes | None:
        row = self.db.execute("SELECT data FROM sop_clock").fetchone()
        return None if row is None else bytes(row[0])

    def due(self, until: int) -> list[str]:
        return [c for (c,) in self.db.execute(
            "SELECT customer_id FROM sop_state WHERE wake_at <= ? ORDER BY wake_at, "
            "customer_id", (until,))]

    def outbox(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM sop_outbox ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]


class HostOutbox:
    """`sopkit.Outbox` over the host's `sop_outbox` table."""

    def __init__(self, host: HostDb) -> None:
        self.db = host.db

    def claim(self, now: int, limit: int, lease_seconds: int, worker: str,
              skip_channels: Collection[str] = (), lease_now: int | None = None
              ) -> list[sopkit.OutboxRow]:
        lease_now = now if lease_now is None else lease_now
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        found = db.execute(
            "SELECT id, key, customer_id, rule, kind, channel, due_at, created_at, message, "
            "attempts FROM sop_outbox WHERE due_at <= ? AND (status = 'pending' OR "
            "(status = 'leased' AND lease_until <= ?)) ORDER BY due_at, id LIMIT ?",
            (now, lease_now, limit)).fetchall()
        rows = []
        for (row_id, key, customer, rule, kind, channel, due, created, message,
             attempts) in found:
            if channel in skip_channels:
                continue
            db.execute("UPDATE sop_outbox SET status = 'leased', lease_until = ?, "
                       "leased_by = ?, attempts = attempts + 1 WHERE id = ?",
                       (lease_now + lease_seconds, worker, row_id))
            rows.append(sopkit.OutboxRow(
                key=key, playbook="", customer_id=customer, rule=rule, kind=kind,
                channel=channel, status="leased", due_at=due, created_at=created,
                message=json.loads(message), attempts=attempts + 1, id=row_id))
        db.execute("COMMIT")
        return rows

    def _set(self, row_id: int, **values: Any) -> None:
        names = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE sop_outbox SET {names}, lease_until = NULL WHERE id = ? "
                        "AND status = 'leased'", (*values.values(), row_id))

    def mark_delivered(self, row_id: int, receipt: Mapping[str, Any], now: int) -> None:
        self._set(row_id, status="delivered")

    def mark_retry(self, row_id: int, due_at: int, error: str) -> None:
        self._set(row_id, status="pending", due_at=due_at, reason=error)

    def mark_dead(self, row_id: int, error: str, now: int) -> None:
        self._set(row_id, status="dead", reason=error)

    def release(self, row_id: int) -> None:
        self.db.execute("UPDATE sop_outbox SET status = 'pending', lease_until = NULL, "
                        "attempts = attempts - 1 WHERE id = ?", (row_id,))

    def settle(self, row_id: int, status: str, reason: str, now: int) -> None:
        self._set(row_id, status=status, reason=reason)
