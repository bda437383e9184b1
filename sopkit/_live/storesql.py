"""What the SQLite and PostgreSQL stores share: the SQL both say alike (SharedSql, but for the
parameter mark), the column lists, and the checks on what is written and found."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sopkit import _json  # json.loads, exactly, faster
from sopkit._errors import UsageError
from sopkit._live.store import (
    COLUMNS,
    MARKS,
    PAGE,
    SCHEMA_VERSION,
    SETTLED,
    STATUSES,
    UPGRADABLE,
    Mark,
    OutboxRow,
)

SELECT = ", ".join(COLUMNS)
INSERT_COLUMNS = ("key", "playbook", "customer_id", "rule", "kind", "channel", "status",
                  "due_at", "created_at", "message", "reason", "attempts", "settled_at",
                  "lease_until", "leased_by")
CREATE_HINT = "`sopkit run` creates a store; check --store or $SOPKIT_STORE"
# due wake-ups are read from here; an idle customer (no wake-up) is not even in the index
WAKE_INDEX = ("CREATE INDEX customers_wake ON customers (next_wake, customer_id) "
              "WHERE next_wake IS NOT NULL")


def wake_of(blob: bytes) -> int | None:
    """A stored state's next wake-up (its `wake_at`, docs/live.md#stored-state), for the
    next_wake column; None when it has none or cannot be read (a damaged state wakes
    nobody: it is reported when the customer is read)."""
    try:
        data = _json.loads(bytes(blob))
    except ValueError:
        return None
    wake = data.get("wake_at") if isinstance(data, dict) else None
    return wake if isinstance(wake, int) and not isinstance(wake, bool) else None


def customer_values(customers: Mapping[str, bytes], wakes: Mapping[str, int | None] | None
                    ) -> list[tuple[str, bytes, int | None]]:
    """(customer_id, state, next_wake) to upsert: the wake-up from `wakes`, else the state's."""
    return [(cid, blob, wakes[cid] if wakes is not None and cid in wakes else wake_of(blob))
            for cid, blob in customers.items()]


def check_purge(status: str) -> None:
    if status not in SETTLED:
        raise ValueError(f"cannot purge {status} rows: only settled rows "
                         f"({', '.join(SETTLED)}) can be purged")


def reassigned(message: dict[str, Any], kind: str, new_owner: str) -> dict[str, Any]:
    """A pending row's message after a hand-over: the new owner, and a task that went to the
    old owner now goes to the new one (a task for a named role stays with it)."""
    old = message.get("owner")
    out = dict(message)
    out["owner"] = new_owner
    body = dict(out.get("body") or {})
    if kind == "task" and body.get("assignee") in (None, "", old):
        body["assignee"] = new_owner
    out["body"] = body
    return out


def dumps(value: Any) -> str:
    """A stored message or receipt as compact JSON text (orjson where it writes the same)."""
    return _json.dumps(value)


class SharedSql:
    """What the SQLite and PostgreSQL stores say alike, but for the parameter mark."""

    MARK = "?"
    WAKE_TYPE = "INTEGER"

    def _tx(self) -> Any:
        raise NotImplementedError

    def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def load_customer(self, customer_id: str) -> bytes | None:
        found = self._read(f"SELECT state FROM customers WHERE customer_id = {self.MARK}",
                           (customer_id,))
        return bytes(found[0][0]) if found else None

    def due_customers(self, until: int, after: tuple[int, str] | None = None,
                      limit: int = PAGE) -> list[tuple[int, str]]:
        mark = self.MARK
        sql = f"SELECT next_wake, customer_id FROM customers WHERE next_wake <= {mark}"
        args: list[Any] = [until]
        if after is not None:
            sql += f" AND (next_wake, customer_id) > ({mark}, {mark})"  # a row value: an
            args += [after[0], after[1]]  # index range, no sort (SQLite >= 3.15, PostgreSQL)
        sql += f" ORDER BY next_wake, customer_id LIMIT {mark}"
        return [(int(when), str(cid)) for when, cid in self._read(sql, [*args, limit])]

    def count_customers(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM customers", ())[0][0])

    def _upgrade(self, cur: Any) -> None:
        """Schema 2 to 3 in place, in the caller's transaction: the next_wake column, filled
        from each state (read in pages), and its index."""
        mark = self.MARK
        cur.execute(f"ALTER TABLE customers ADD COLUMN next_wake {self.WAKE_TYPE}")
        after = ""
        while True:
            page = cur.execute(f"SELECT customer_id, state FROM customers WHERE customer_id > "
                               f"{mark} ORDER BY customer_id LIMIT {PAGE}", (after,)).fetchall()
            wakes = [(wake, cid) for cid, state in page
                     if (wake := wake_of(bytes(state))) is not None]
            if wakes:
                cur.executemany(f"UPDATE customers SET next_wake = {mark} WHERE customer_id = "
                                f"{mark}", wakes)
            if len(page) < PAGE:
                break
            after = page[-1][0]
        cur.execute(WAKE_INDEX)
        cur.execute(f"UPDATE meta SET value = {mark} WHERE key = 'schema_version'",
                    (str(SCHEMA_VERSION),))

    @staticmethod
    def _reassign(cur: Any, customer_id: str, new_owner: str) -> int:
        raise NotImplementedError

    def release_worker(self, worker: str) -> int:
        with self._tx() as cur:
            return int(cur.execute(
                "UPDATE outbox SET status = 'pending', lease_until = NULL, leased_by = NULL "
                f"WHERE status = 'leased' AND leased_by = {self.MARK}", (worker,)).rowcount)

    def requeue(self, ids: Sequence[int] | None, status: str, now: int) -> int:
        where, args = filters(status, None, ids, self.MARK)
        with self._tx() as cur:
            cur.execute(f"UPDATE outbox SET status = 'pending', due_at = {self.MARK}, "
                        "attempts = 0, lease_until = NULL, leased_by = NULL, settled_at = NULL, "
                        f"delivered_at = NULL{where}", [now, *args])
            return int(cur.rowcount)

    def purge(self, status: str, before: int | None) -> int:
        check_purge(status)
        sql = f"DELETE FROM outbox WHERE status = {self.MARK}"
        args: list[Any] = [status]
        if before is not None:
            sql += f" AND COALESCE(settled_at, created_at) < {self.MARK}"
            args.append(before)
        with self._tx() as cur:
            cur.execute(sql, args)
            return int(cur.rowcount)

    def reassign_pending(self, customer_id: str, new_owner: str) -> int:
        with self._tx() as cur:
            return self._reassign(cur, customer_id, new_owner)

    # -- what a dispatcher records about a leased row: one at a time, or many at once ----
    GREATEST = "MAX"

    def _json(self, value: dict[str, Any]) -> Any:
        return dumps(value)

    def _write(self, sql: str, args: Sequence[Any]) -> None:
        """One write on its own (autocommit)."""
        raise NotImplementedError

    def _mark(self, op: str, args: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        """The statement and arguments of one mark (`Mark`); a mark applies only to a row
        that is still leased, so a late outcome never overwrites a newer one."""
        m = self.MARK
        leased = f"WHERE id = {m} AND status = 'leased'"
        if op == "mark_delivered":
            row_id, receipt, now = args
            return (f"UPDATE outbox SET status = 'delivered', receipt = {m}, delivered_at = {m}, "
                    f"settled_at = {m}, lease_until = NULL {leased}",
                    (self._json(dict(receipt)), now, now, row_id))
        if op == "mark_retry":
            row_id, due_at, error = args
            return (f"UPDATE outbox SET status = 'pending', due_at = {m}, last_error = {m}, "
                    f"lease_until = NULL {leased}", (due_at, error, row_id))
        if op == "mark_dead":
            row_id, error, now = args
            return (f"UPDATE outbox SET status = 'dead', last_error = {m}, settled_at = {m}, "
                    f"lease_until = NULL {leased}", (error, now, row_id))
        if op == "release":
            (row_id,) = args
            return (f"UPDATE outbox SET status = 'pending', attempts = "
                    f"{self.GREATEST}(attempts - 1, 0), lease_until = NULL, leased_by = NULL "
                    f"{leased}", (row_id,))
        if op == "settle":
            row_id, status, reason, now = args
            return (f"UPDATE outbox SET status = {m}, reason = {m}, settled_at = {m}, "
                    f"lease_until = NULL {leased}", (status, reason, now, row_id))
        raise ValueError(f"unknown outbox mark {op!r}; one of {', '.join(MARKS)}")

    def mark_delivered(self, row_id: int, receipt: Mapping[str, Any], now: int) -> None:
        self._write(*self._mark("mark_delivered", (row_id, receipt, now)))

    def mark_retry(self, row_id: int, due_at: int, error: str) -> None:
        self._write(*self._mark("mark_retry", (row_id, due_at, error)))

    def mark_dead(self, row_id: int, error: str, now: int) -> None:
        self._write(*self._mark("mark_dead", (row_id, error, now)))

    def release(self, row_id: int) -> None:
        self._write(*self._mark("release", (row_id,)))

    def settle(self, row_id: int, status: str, reason: str, now: int) -> None:
        """Settle a leased row without sending it (`expired`, or `suppressed` at delivery)."""
        self._write(*self._mark("settle", (row_id, status, reason, now)))

    def mark_many(self, marks: Sequence[Mark]) -> None:
        """Record the outcomes of a dispatcher's pass in one transaction: one disk sync for
        the batch instead of one per row."""
        if not marks:
            return
        with self._tx() as cur:
            self._marks_in(cur, marks)

    def _marks_in(self, cur: Any, marks: Sequence[Mark]) -> None:
        """The marks' statements, in the caller's transaction: one executemany a kind."""
        grouped: dict[str, list[tuple[Any, ...]]] = {}
        for op, args in marks:
            sql, values = self._mark(op, args)
            grouped.setdefault(sql, []).append(values)
        for sql, rows in grouped.items():
            cur.executemany(sql, rows)

    def _cancel_rules(self, cur: Any, cancel: Mapping[str, tuple[str, int]] | None) -> None:
        """Cancel the pending rows of these rules (rule -> (reason, now)): a migration that
        removes a rule, in the same transaction as the new state."""
        mark = self.MARK
        for rule, (reason, now) in sorted((cancel or {}).items()):
            cur.execute(f"UPDATE outbox SET status = 'cancelled', reason = {mark}, settled_at = "
                        f"{mark} WHERE status = 'pending' AND rule = {mark}", (reason, now, rule))


def insert_values(row: OutboxRow, message: Any) -> tuple[Any, ...]:
    if row.status not in STATUSES:
        raise ValueError(f"outbox row {row.key}: unknown status '{row.status}'")
    settled = row.created_at if row.status in SETTLED else None
    return (row.key, row.playbook, row.customer_id, row.rule, row.kind, row.channel,
            row.status, row.due_at, row.created_at, message, row.reason, row.attempts,
            settled, row.lease_until, row.leased_by)


def number_leased(rows: Sequence[OutboxRow], inserted: Sequence[Sequence[Any]]) -> None:
    """Set the `id` of each row given `leased` that the commit inserted ((id, key) of the
    inserted rows): a dispatcher sends those without claiming them (`Dispatcher.adopt`); a
    leased row whose key the store held already keeps no id and is left to its lease."""
    leased: dict[str, OutboxRow] = {}
    for row in rows:
        if row.status == "leased":
            leased.setdefault(row.key, row)
    if not leased:
        return
    for row_id, key in inserted:
        found = leased.pop(str(key), None)
        if found is not None:
            found.id = int(row_id)


def check_meta(meta: Mapping[str, str]) -> None:
    if "schema_version" in meta:
        raise ValueError("meta key 'schema_version' belongs to the store")


def check_version(where: str, found: str | None) -> int:
    """The store's schema version, if this sopkit reads it (UPGRADABLE: after an upgrade)."""
    if found is None or not found.isdigit():
        raise UsageError(f"store '{where}' has a meta table but no sopkit schema version; "
                         "it is not a sopkit store (name another file or database)")
    if int(found) < UPGRADABLE:
        raise UsageError(
            f"store '{where}' was written by an older sopkit (schema {found}), whose customer "
            "state this sopkit no longer reads (it was pickled, and reading it could run code); "
            "build a new store from your history without sending the past: sopkit run "
            "PLAYBOOK --store NEW --events HISTORY --once (docs/live.md#going-live)")
    if int(found) > SCHEMA_VERSION:
        raise UsageError(f"store '{where}' was written by a newer sopkit (schema {found}; "
                         f"this sopkit reads schema {SCHEMA_VERSION} and older): upgrade "
                         "sopkit (pip install -U sopkit) to use it")
    return int(found)


def filters(status: str | None, customer_id: str | None, ids: Sequence[int] | None,
            mark: str) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if status is not None:
        clauses.append(f"status = {mark}")
        args.append(status)
    if customer_id is not None:
        clauses.append(f"customer_id = {mark}")
        args.append(customer_id)
    if ids is not None:
        if not ids:
            clauses.append("1 = 0")
        else:
            clauses.append(f"id IN ({', '.join([mark] * len(ids))})")
            args.extend(int(i) for i in ids)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
