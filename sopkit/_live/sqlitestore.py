"""The SQLite store: one file in WAL mode (the default `--store`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sopkit import _json  # json.loads, exactly, faster
from sopkit._errors import UsageError
from sopkit._live import looplock as lk
from sopkit._live.looplock import LoopHolder, LoopLockLost
from sopkit._live.store import COLUMNS, PAGE, SCHEMA_VERSION, STATUSES, OutboxRow, StoreError
from sopkit._live.storesql import (
    CREATE_HINT,
    INSERT_COLUMNS,
    SELECT,
    WAKE_INDEX,
    SharedSql,
    check_meta,
    check_version,
    customer_values,
    dumps,
    filters,
    insert_values,
    number_leased,
    reassigned,
)

_SQLITE_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, state BLOB NOT NULL,
                        next_wake INTEGER);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,
    playbook TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
    due_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    message TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER,
    leased_by TEXT,
    last_error TEXT NOT NULL DEFAULT '',
    receipt TEXT,
    delivered_at INTEGER,
    settled_at INTEGER
);
CREATE INDEX outbox_claim ON outbox (status, due_at);
CREATE INDEX outbox_customer ON outbox (customer_id, id);
""" + WAKE_INDEX
INSERT_ROWS = 500  # outbox rows per INSERT statement (15 parameters a row, under SQLite's cap)
_ROW_MARKS = f"({', '.join('?' * len(INSERT_COLUMNS))})"


class SQLiteStore(SharedSql):
    """One SQLite file in WAL mode with synchronous=FULL (see docs/live.md#the-store).

    One connection per instance, used from one thread; several processes (or threads with
    their own instances) may share the file: writers queue for up to `busy_timeout_ms`.
    """

    RENEWS = True

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000,
                 create: bool = True) -> None:
        self.path = str(path)
        self.url = self.path
        self._holder: LoopHolder | None = None
        self.RENEWS = self.path != ":memory:"  # a memory store has no other process to fend off
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise UsageError(f"store '{self.path}': directory {parent} does not exist; "
                                 "create it first (for an absolute path after sqlite:// "
                                 "write four slashes: sqlite:////abs/path.db)")
            if Path(self.path).is_dir():
                raise UsageError(f"store '{self.path}' is a directory; name a file, "
                                 "e.g. sopkit.db")
            if not create and not Path(self.path).expanduser().exists():
                raise UsageError(f"no store at '{self.path}': the file does not exist "
                                 f"({CREATE_HINT})")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       timeout=busy_timeout_ms / 1000,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise UsageError(f"store '{self.path}': cannot open: {exc}") from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._check_tables(create)  # before WAL: another application's file stays as is
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._setup(create)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise UsageError(f"store '{self.path}' is not a usable SQLite database ({exc}); "
                             "name a new file or a sopkit store") from None
        except BaseException:
            self._db.close()
            raise

    def _check_tables(self, create: bool) -> set[str]:
        tables = {name for (name,) in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if tables:
                raise UsageError(
                    f"store '{self.path}' is an SQLite database but not a sopkit store "
                    f"(it has tables {', '.join(sorted(tables))}); name another file")
            if not create:
                raise UsageError(f"'{self.path}' is not a sopkit store (an empty database); "
                                 f"{CREATE_HINT}")
        return tables

    def _setup(self, create: bool = True) -> None:
        with self._tx():
            tables = self._check_tables(create)
            if "meta" not in tables:
                for statement in _SQLITE_SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                                 (str(SCHEMA_VERSION),))
                return
            found = self._db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if check_version(self.path, found[0] if found else None) < SCHEMA_VERSION:
                self._upgrade(self._db.cursor())

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (BEGIN IMMEDIATE: the write lock is taken up front)."""
        try:
            cur = self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"store '{self.path}': {exc} (another process held the write "
                             "lock past the busy timeout)") from None
        try:
            yield cur
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _write(self, sql: str, args: Sequence[Any]) -> None:
        """One write on its own (autocommit); a lock held too long becomes a StoreError."""
        try:
            self._db.execute(sql, args)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"store '{self.path}': {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        return self._db.execute(sql, args).fetchall()

    def get_meta(self, key: str) -> str | None:
        found = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if found is None else str(found[0])

    def load_customers(self) -> Iterator[tuple[str, bytes]]:
        after = ""
        while True:
            page = self._db.execute(
                "SELECT customer_id, state FROM customers WHERE customer_id > ? "
                "ORDER BY customer_id LIMIT ?", (after, PAGE)).fetchall()
            for customer_id, state in page:
                yield str(customer_id), bytes(state)
            if len(page) < PAGE:
                return
            after = page[-1][0]

    def commit(self, customers: Mapping[str, bytes], meta: Mapping[str, str],
               rows: Sequence[OutboxRow], reassign: Mapping[str, str] | None = None,
               cancel: Mapping[str, tuple[str, int]] | None = None,
               wakes: Mapping[str, int | None] | None = None) -> int:
        check_meta(meta)
        with self._tx() as cur:
            self._fence(cur)
            self._cancel_rules(cur, cancel)
            cur.executemany(
                "INSERT INTO customers (customer_id, state, next_wake) VALUES (?, ?, ?) "
                "ON CONFLICT (customer_id) DO UPDATE SET state = excluded.state, "
                "next_wake = excluded.next_wake", customer_values(customers, wakes))
            cur.executemany("INSERT INTO meta (key, value) VALUES (?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            list(meta.items()))
            new = 0
            for start in range(0, len(rows), INSERT_ROWS):
                part = rows[start:start + INSERT_ROWS]
                # one statement for many rows; RETURNING names the rows that were new
                inserted = cur.execute(
                    f"INSERT INTO outbox ({', '.join(INSERT_COLUMNS)}) VALUES "
                    f"{', '.join([_ROW_MARKS] * len(part))} ON CONFLICT (key) DO NOTHING "
                    "RETURNING id, key",
                    [v for row in part for v in insert_values(row, dumps(row.message))]
                ).fetchall()
                new += len(inserted)
                number_leased(part, inserted)
            for customer_id, owner in (reassign or {}).items():
                self._reassign(cur, customer_id, owner)
            return new

    # -- the loop lock: a lease row (see _looplock.py) ---------------------------------
    def acquire_loop_lock(self, worker: str, now: int, lease_seconds: int = lk.LEASE_SECONDS,
                          *, host: str | None = None, pid: int | None = None) -> LoopHolder:
        wanted = lk.me(worker, now, lease_seconds, host, pid)
        with self._tx() as cur:
            lk.sqlite_acquire(cur, self.url, wanted, now)
        self._holder = wanted
        return wanted

    def renew_loop_lock(self, holder: LoopHolder, now: int,
                        lease_seconds: int = lk.LEASE_SECONDS) -> bool:
        with self._tx() as cur:
            cur.execute(lk.SQLITE_TABLE)
            return bool(cur.execute(
                "UPDATE loop_lock SET until = ? WHERE id = 1 AND worker = ? AND host = ? "
                "AND pid = ?", (now + lease_seconds, holder.worker, holder.host,
                                holder.pid)).rowcount)

    def release_loop_lock(self, holder: LoopHolder) -> None:
        with self._tx() as cur:
            cur.execute(lk.SQLITE_TABLE)
            cur.execute("DELETE FROM loop_lock WHERE id = 1 AND worker = ? AND host = ? AND "
                        "pid = ?", (holder.worker, holder.host, holder.pid))
        self._holder = None

    def loop_lock_holder(self) -> LoopHolder | None:
        exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                  "name = 'loop_lock'").fetchone() is not None
        return lk.holder_row(self._db, exists)

    def _fence(self, cur: sqlite3.Cursor) -> None:
        """In a commit of a lock holder: the lock must still be this run's."""
        if self._holder is None:
            return
        found = lk.holder_row(cur)
        if found is None or not found.same_process(self._holder):
            who = f"worker '{found.worker}' (pid {found.pid} on {found.host})" if found \
                else "nobody"
            raise LoopLockLost(f"store '{self.url}': this run's event-loop lock was taken "
                               f"over (now held by {who}): its lease ran out while this run "
                               "stalled, or a run under the same --worker name started; "
                               "this run stops without committing")

    def claim(self, now: int, limit: int, lease_seconds: int, worker: str,
              skip_channels: Collection[str] = (), lease_now: int | None = None
              ) -> list[OutboxRow]:
        wall = now if lease_now is None else lease_now
        skip = sorted(set(skip_channels))
        not_skipped = f"AND channel NOT IN ({', '.join('?' * len(skip))})" if skip else ""
        # nothing to claim is told by a read, without the write lock: the live loop asks
        # after every pass, and the lock is what the inbox's commits wait for
        claimable = (f"((status = 'pending' AND due_at <= ?) OR "
                     f"(status = 'leased' AND lease_until <= ?)) {not_skipped}")
        if not self._db.execute(f"SELECT 1 FROM outbox WHERE {claimable} LIMIT 1",
                                (now, wall, *skip)).fetchone():
            return []
        with self._tx() as cur:
            found = cur.execute(
                f"UPDATE outbox SET status = 'leased', lease_until = ?, leased_by = ?, "
                f"attempts = attempts + 1 WHERE id IN (SELECT id FROM outbox WHERE "
                f"{claimable} ORDER BY due_at, id LIMIT ?) RETURNING {SELECT}",
                (wall + lease_seconds, worker, now, wall, *skip, limit)).fetchall()
        return sorted((self._row(r) for r in found), key=lambda r: (r.due_at, r.id or 0))

    def rows(self, status: str | None = None, *, customer_id: str | None = None,
             limit: int | None = None, ids: Sequence[int] | None = None) -> list[OutboxRow]:
        where, args = filters(status, customer_id, ids, "?")
        sql = f"SELECT {SELECT} FROM outbox{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._row(r) for r in self._db.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for status, count in self._db.execute(
                "SELECT status, COUNT(*) FROM outbox GROUP BY status"):
            out[status] = int(count)
        return out

    @staticmethod
    def _reassign(cur: Any, customer_id: str, new_owner: str) -> int:
        found = cur.execute("SELECT id, kind, message FROM outbox WHERE customer_id = ? "
                            "AND status = 'pending' ORDER BY id", (customer_id,)).fetchall()
        for row_id, kind, message in found:
            cur.execute("UPDATE outbox SET message = ? WHERE id = ?",
                        (dumps(reassigned(json.loads(message), kind, new_owner)), row_id))
        return len(found)

    @staticmethod
    def _row(values: Sequence[Any]) -> OutboxRow:
        data = dict(zip(COLUMNS, values, strict=True))
        data["message"] = _json.loads(data["message"])
        data["receipt"] = None if data["receipt"] is None else _json.loads(data["receipt"])
        return OutboxRow(**data)
