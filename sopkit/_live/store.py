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

Times are integer unix seconds passed in by the caller; a store never reads the clock.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from sopkit._errors import SopkitError, UsageError
from sopkit._live import looplock as lk
from sopkit._live.looplock import LoopHolder, LoopLocked, LoopLockLost

if TYPE_CHECKING:
    import psycopg

STATUSES = ("pending", "leased", "delivered", "dead", "suppressed", "holdout", "cancelled",
            "backfilled", "expired")
SENDABLE = ("pending", "leased")
SETTLED = ("delivered", "dead", "suppressed", "holdout", "cancelled", "backfilled", "expired")

SCHEMA_VERSION = 2  # 2: state as JSON by name (docs/live.md#stored-state), backfilled, expired
"""The layout this sopkit writes; a store with a higher version is refused, not guessed at."""

ACCEPTED = ("a file path (SQLite), sqlite:///relative/path.db, sqlite:////absolute/path.db, "
            "postgresql://user@host:port/database or postgres://...")


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
_SELECT = ", ".join(COLUMNS)
_INSERT_COLUMNS = ("key", "playbook", "customer_id", "rule", "kind", "channel", "status",
                   "due_at", "created_at", "message", "reason", "attempts", "settled_at")


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

    def commit(self, customers: Mapping[str, bytes], meta: Mapping[str, str],
               rows: Sequence[OutboxRow], reassign: Mapping[str, str] | None = None,
               cancel: Mapping[str, tuple[str, int]] | None = None) -> int:
        """Cancel the pending rows of the rules in `cancel` (rule -> (reason, now)), upsert
        customer states and meta, insert rows (skipping existing keys), then point the
        pending rows of each customer in `reassign` at its new owner, atomically; return how
        many rows were new."""
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


def open_store(url: str, *, create: bool = True) -> Store:
    """A store from a URL or a path: `postgresql://...` / `postgres://...`, else SQLite.

    SQLite: a plain path, `sqlite:///relative.db` or `sqlite:////absolute.db`, or `:memory:`.
    Anything else with a scheme is a UsageError naming the accepted forms. With
    `create=False` (the commands that only read or repair a store) a missing file, an empty
    database or a schema without sopkit's tables is a UsageError and nothing is created.
    """
    text = url.strip()
    if not text:
        raise UsageError(f"--store is empty; give {ACCEPTED}")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", text)
    if scheme and len(scheme.group(1)) > 1:  # one letter is a Windows drive, not a scheme
        name = scheme.group(1).lower()
        if name in ("postgresql", "postgres"):
            return PostgresStore(text, create=create)
        if name == "sqlite":
            if not text.startswith("sqlite:///"):
                raise UsageError(f"store '{text}': write sqlite:///relative/path.db or "
                                 "sqlite:////absolute/path.db (three slashes, then the path)")
            return SQLiteStore(text[len("sqlite:///"):], create=create)
        raise UsageError(f"store '{redact(text)}': unsupported scheme '{name}'; "
                         f"accepted: {ACCEPTED}")
    return SQLiteStore(text, create=create)


_CREATE_HINT = "`sopkit run` creates a store; check --store or $SOPKIT_STORE"


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


def _check_purge(status: str) -> None:
    if status not in SETTLED:
        raise ValueError(f"cannot purge {status} rows: only settled rows "
                         f"({', '.join(SETTLED)}) can be purged")


def _reassigned(message: dict[str, Any], kind: str, new_owner: str) -> dict[str, Any]:
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


# -- SQLite ---------------------------------------------------------------------------------

_SQLITE_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, state BLOB NOT NULL);
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
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _SharedSql:
    """What the SQLite and PostgreSQL stores say alike, but for the parameter mark."""

    MARK = "?"

    def _tx(self) -> Any:
        raise NotImplementedError

    @staticmethod
    def _reassign(cur: Any, customer_id: str, new_owner: str) -> int:
        raise NotImplementedError

    def release_worker(self, worker: str) -> int:
        with self._tx() as cur:
            return int(cur.execute(
                "UPDATE outbox SET status = 'pending', lease_until = NULL, leased_by = NULL "
                f"WHERE status = 'leased' AND leased_by = {self.MARK}", (worker,)).rowcount)

    def requeue(self, ids: Sequence[int] | None, status: str, now: int) -> int:
        where, args = _filters(status, None, ids, self.MARK)
        with self._tx() as cur:
            cur.execute(f"UPDATE outbox SET status = 'pending', due_at = {self.MARK}, "
                        "attempts = 0, lease_until = NULL, leased_by = NULL, settled_at = NULL, "
                        f"delivered_at = NULL{where}", [now, *args])
            return int(cur.rowcount)

    def purge(self, status: str, before: int | None) -> int:
        _check_purge(status)
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

    def settle(self, row_id: int, status: str, reason: str, now: int) -> None:
        """Settle a leased row without sending it (`expired`, or `suppressed` at delivery)."""
        mark = self.MARK
        with self._tx() as cur:
            cur.execute(f"UPDATE outbox SET status = {mark}, reason = {mark}, settled_at = "
                        f"{mark}, lease_until = NULL WHERE id = {mark} AND status = 'leased'",
                        (status, reason, now, row_id))

    def _cancel_rules(self, cur: Any, cancel: Mapping[str, tuple[str, int]] | None) -> None:
        """Cancel the pending rows of these rules (rule -> (reason, now)): a migration that
        removes a rule, in the same transaction as the new state."""
        mark = self.MARK
        for rule, (reason, now) in sorted((cancel or {}).items()):
            cur.execute(f"UPDATE outbox SET status = 'cancelled', reason = {mark}, settled_at = "
                        f"{mark} WHERE status = 'pending' AND rule = {mark}", (reason, now, rule))


class SQLiteStore(_SharedSql):
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
                                 f"({_CREATE_HINT})")
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
                                 f"{_CREATE_HINT}")
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
            _check_version(self.path, found[0] if found else None)

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

    def _exec(self, sql: str, args: Sequence[Any]) -> None:
        """One write on its own (autocommit); a lock held too long becomes a StoreError."""
        try:
            self._db.execute(sql, args)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"store '{self.path}': {exc}") from None

    def close(self) -> None:
        self._db.close()

    def get_meta(self, key: str) -> str | None:
        found = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if found is None else str(found[0])

    def load_customers(self) -> Iterator[tuple[str, bytes]]:
        after = ""
        while True:
            page = self._db.execute(
                "SELECT customer_id, state FROM customers WHERE customer_id > ? "
                "ORDER BY customer_id LIMIT 1000", (after,)).fetchall()
            for customer_id, state in page:
                yield str(customer_id), bytes(state)
            if len(page) < 1000:
                return
            after = page[-1][0]

    def commit(self, customers: Mapping[str, bytes], meta: Mapping[str, str],
               rows: Sequence[OutboxRow], reassign: Mapping[str, str] | None = None,
               cancel: Mapping[str, tuple[str, int]] | None = None) -> int:
        _check_meta(meta)
        with self._tx() as cur:
            self._fence(cur)
            self._cancel_rules(cur, cancel)
            cur.executemany(
                "INSERT INTO customers (customer_id, state) VALUES (?, ?) "
                "ON CONFLICT (customer_id) DO UPDATE SET state = excluded.state",
                list(customers.items()))
            cur.executemany("INSERT INTO meta (key, value) VALUES (?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            list(meta.items()))
            cur.executemany(
                f"INSERT INTO outbox ({', '.join(_INSERT_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(_INSERT_COLUMNS))}) ON CONFLICT (key) DO NOTHING",
                [_insert_values(row, _dumps(row.message)) for row in rows])
            new = max(cur.rowcount, 0) if rows else 0
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
        with self._tx() as cur:
            found = cur.execute(
                f"UPDATE outbox SET status = 'leased', lease_until = ?, leased_by = ?, "
                f"attempts = attempts + 1 WHERE id IN (SELECT id FROM outbox WHERE "
                f"((status = 'pending' AND due_at <= ?) OR "
                f"(status = 'leased' AND lease_until <= ?)) {not_skipped} "
                f"ORDER BY due_at, id LIMIT ?) RETURNING {_SELECT}",
                (wall + lease_seconds, worker, now, wall, *skip, limit)).fetchall()
        return sorted((self._row(r) for r in found), key=lambda r: (r.due_at, r.id or 0))

    def mark_delivered(self, row_id: int, receipt: Mapping[str, Any], now: int) -> None:
        self._exec(
            "UPDATE outbox SET status = 'delivered', receipt = ?, delivered_at = ?, "
            "settled_at = ?, lease_until = NULL WHERE id = ? AND status = 'leased'",
            (_dumps(dict(receipt)), now, now, row_id))

    def mark_retry(self, row_id: int, due_at: int, error: str) -> None:
        self._exec(
            "UPDATE outbox SET status = 'pending', due_at = ?, last_error = ?, "
            "lease_until = NULL WHERE id = ? AND status = 'leased'", (due_at, error, row_id))

    def mark_dead(self, row_id: int, error: str, now: int) -> None:
        self._exec(
            "UPDATE outbox SET status = 'dead', last_error = ?, settled_at = ?, "
            "lease_until = NULL WHERE id = ? AND status = 'leased'", (error, now, row_id))

    def release(self, row_id: int) -> None:
        self._exec(
            "UPDATE outbox SET status = 'pending', attempts = MAX(attempts - 1, 0), "
            "lease_until = NULL, leased_by = NULL WHERE id = ? AND status = 'leased'",
            (row_id,))

    def rows(self, status: str | None = None, *, customer_id: str | None = None,
             limit: int | None = None, ids: Sequence[int] | None = None) -> list[OutboxRow]:
        where, args = _filters(status, customer_id, ids, "?")
        sql = f"SELECT {_SELECT} FROM outbox{where} ORDER BY id"
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
                        (_dumps(_reassigned(json.loads(message), kind, new_owner)), row_id))
        return len(found)

    @staticmethod
    def _row(values: Sequence[Any]) -> OutboxRow:
        data = dict(zip(COLUMNS, values, strict=True))
        data["message"] = json.loads(data["message"])
        data["receipt"] = None if data["receipt"] is None else json.loads(data["receipt"])
        return OutboxRow(**data)


def _insert_values(row: OutboxRow, message: Any) -> tuple[Any, ...]:
    if row.status not in STATUSES:
        raise ValueError(f"outbox row {row.key}: unknown status '{row.status}'")
    settled = row.created_at if row.status in SETTLED else None
    return (row.key, row.playbook, row.customer_id, row.rule, row.kind, row.channel,
            row.status, row.due_at, row.created_at, message, row.reason, row.attempts,
            settled)


def _check_meta(meta: Mapping[str, str]) -> None:
    if "schema_version" in meta:
        raise ValueError("meta key 'schema_version' belongs to the store")


def _check_version(where: str, found: str | None) -> None:
    if found is None or not found.isdigit():
        raise UsageError(f"store '{where}' has a meta table but no sopkit schema version; "
                         "it is not a sopkit store (name another file or database)")
    if int(found) < SCHEMA_VERSION:
        raise UsageError(
            f"store '{where}' was written by an older sopkit (schema {found}), whose customer "
            "state this sopkit no longer reads (it was pickled, and reading it could run code); "
            "build a new store from your history without sending the past: sopkit run "
            "PLAYBOOK --store NEW --events HISTORY --once (docs/live.md#going-live)")
    if int(found) > SCHEMA_VERSION:
        raise UsageError(f"store '{where}' was written by a newer sopkit (schema {found}; "
                         f"this sopkit reads schema {SCHEMA_VERSION} and older): upgrade "
                         "sopkit (pip install -U sopkit) to use it")


def _filters(status: str | None, customer_id: str | None, ids: Sequence[int] | None,
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


# -- PostgreSQL -----------------------------------------------------------------------------

_PG_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE customers (customer_id TEXT PRIMARY KEY, state BYTEA NOT NULL)",
    f"""CREATE TABLE outbox (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        key TEXT UNIQUE NOT NULL,
        playbook TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        kind TEXT NOT NULL,
        channel TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
        due_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        message JSONB NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until BIGINT,
        leased_by TEXT,
        last_error TEXT NOT NULL DEFAULT '',
        receipt JSONB,
        delivered_at BIGINT,
        settled_at BIGINT)""",
    "CREATE INDEX outbox_claim ON outbox (status, due_at)",
    "CREATE INDEX outbox_customer ON outbox (customer_id, id)",
]
_PG_LOCK = 0x736F706B6974  # "sopkit": serialises schema set-up between concurrent openers


class PostgresStore(_SharedSql):
    """PostgreSQL through psycopg 3; tables in the first schema of the search_path.

    One connection per instance (autocommit; multi-statement work in explicit transactions).
    Dispatchers in other processes claim with FOR UPDATE SKIP LOCKED and never share a row.
    """

    MARK = "%s"
    RENEWS = False

    def __init__(self, url: str, *, connect_timeout: int = 10, create: bool = True) -> None:
        self.url = redact(url)
        self._lock_key: int | None = None
        try:
            import psycopg
        except ImportError:
            raise UsageError("a PostgreSQL store needs psycopg: pip install "
                             "'sopkit[postgresql]'") from None
        self._psycopg = psycopg
        try:
            urlsplit(url).port  # noqa: B018  # reading it checks it is a number in range
        except ValueError as exc:
            raise UsageError(f"store '{self.url}': bad PostgreSQL URL: {exc}") from None
        try:
            self._db: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
                url, autocommit=True, connect_timeout=connect_timeout)
        except psycopg.ProgrammingError as exc:  # a malformed URL
            raise UsageError(f"store '{self.url}': bad PostgreSQL URL: "
                             f"{_pg_message(exc, url)}") from None
        except psycopg.Error as exc:
            raise StoreError(f"store '{self.url}': cannot connect: "
                             f"{_pg_message(exc, url)}") from None
        try:
            self._setup(create)
        except BaseException:
            self._db.close()
            raise

    def _setup(self, create: bool = True) -> None:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
            found = cur.execute("SELECT to_regclass('meta') IS NOT NULL, "
                                "to_regclass('outbox') IS NOT NULL").fetchone()
            has_meta, has_outbox = found if found else (False, False)
            if not has_meta:
                if has_outbox:
                    raise UsageError(f"store '{self.url}' has an outbox table but no sopkit "
                                     "meta table; it is not a sopkit store")
                if not create:
                    raise UsageError(f"'{self.url}' is not a sopkit store (no sopkit tables "
                                     f"in its schema); {_CREATE_HINT}")
                for statement in _PG_SCHEMA:
                    cur.execute(statement)
                cur.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s)",
                            (str(SCHEMA_VERSION),))
                return
            version = cur.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            _check_version(self.url, version[0] if version else None)

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        try:
            with self._db.transaction(), self._db.cursor() as cur:
                yield cur
        except self._psycopg.OperationalError as exc:
            raise StoreError(f"store '{self.url}': {exc}") from None

    def _one(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args)
        except self._psycopg.OperationalError as exc:
            raise StoreError(f"store '{self.url}': {exc}") from None

    def close(self) -> None:
        self._db.close()

    def get_meta(self, key: str) -> str | None:
        found = self._one("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if found is None else str(found[0])

    def load_customers(self) -> Iterator[tuple[str, bytes]]:
        after = ""
        while True:
            page = self._one("SELECT customer_id, state FROM customers WHERE customer_id > %s "
                             "ORDER BY customer_id LIMIT 1000",
                             (after,)).fetchall()
            for customer_id, state in page:
                yield str(customer_id), bytes(state)
            if len(page) < 1000:
                return
            after = page[-1][0]

    def commit(self, customers: Mapping[str, bytes], meta: Mapping[str, str],
               rows: Sequence[OutboxRow], reassign: Mapping[str, str] | None = None,
               cancel: Mapping[str, tuple[str, int]] | None = None) -> int:
        from psycopg.types.json import Jsonb

        _check_meta(meta)
        values = [_insert_values(row, Jsonb(row.message)) for row in rows]
        with self._tx() as cur:
            self._cancel_rules(cur, cancel)
            if customers:
                cur.executemany(
                    "INSERT INTO customers (customer_id, state) VALUES (%s, %s) "
                    "ON CONFLICT (customer_id) DO UPDATE SET state = excluded.state",
                    list(customers.items()))
            if meta:
                cur.executemany("INSERT INTO meta (key, value) VALUES (%s, %s) "
                                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                list(meta.items()))
            new = 0
            if values:
                cur.executemany(
                    f"INSERT INTO outbox ({', '.join(_INSERT_COLUMNS)}) VALUES "
                    f"({', '.join(['%s'] * len(_INSERT_COLUMNS))}) ON CONFLICT (key) "
                    "DO NOTHING", values)
                new = max(cur.rowcount, 0)
            for customer_id, owner in (reassign or {}).items():
                self._reassign(cur, customer_id, owner)
            return new

    # -- the loop lock: a session advisory lock (see _looplock.py) -----------------------
    def _key(self) -> int:
        found = self._one("SELECT current_database(), current_schema()").fetchone()
        database, schema = found if found else ("", "")
        return lk.pg_key(str(database), str(schema or ""))

    def acquire_loop_lock(self, worker: str, now: int, lease_seconds: int = lk.LEASE_SECONDS,
                          *, host: str | None = None, pid: int | None = None) -> LoopHolder:
        key = self._key()
        wanted = lk.me(worker, now, lease_seconds, host, pid)
        with self._tx() as cur:
            # trying and naming the holder happen under one transaction lock (the two-int
            # form: another key space than the loop lock's), so a run that is refused reads
            # the row its winner wrote, never a half-acquired or an earlier holder's row
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", lk.pg_pair(key))
            got = cur.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if not (got and got[0]):
                exists = cur.execute("SELECT to_regclass('loop_lock') IS NOT NULL").fetchone()
                raise LoopLocked(self.url, lk.holder_row(cur, bool(exists and exists[0])),
                                 postgres=True)
            self._lock_key = key  # a session lock: held past this transaction's end
            cur.execute(lk.PG_TABLE)
            cur.execute("INSERT INTO loop_lock (id, worker, host, pid, since, until) VALUES "
                        "(1, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                        "worker = excluded.worker, host = excluded.host, pid = excluded.pid, "
                        "since = excluded.since, until = excluded.until",
                        (wanted.worker, wanted.host, wanted.pid, wanted.since, wanted.until))
        return wanted

    def renew_loop_lock(self, holder: LoopHolder, now: int,
                        lease_seconds: int = lk.LEASE_SECONDS) -> bool:
        return self._lock_key is not None  # held for as long as this connection lives

    def release_loop_lock(self, holder: LoopHolder) -> None:
        if self._lock_key is not None:
            self._one("SELECT pg_advisory_unlock(%s)", (self._lock_key,))
            self._lock_key = None

    def loop_lock_holder(self) -> LoopHolder | None:
        found = self._one("SELECT to_regclass('loop_lock') IS NOT NULL").fetchone()
        with self._db.cursor() as cur:
            return lk.holder_row(cur, bool(found and found[0]))

    def claim(self, now: int, limit: int, lease_seconds: int, worker: str,
              skip_channels: Collection[str] = (), lease_now: int | None = None
              ) -> list[OutboxRow]:
        wall = now if lease_now is None else lease_now
        with self._tx() as cur:
            found = cur.execute(
                f"UPDATE outbox SET status = 'leased', lease_until = %s, leased_by = %s, "
                f"attempts = attempts + 1 WHERE id IN (SELECT id FROM outbox WHERE "
                f"((status = 'pending' AND due_at <= %s) OR "
                f"(status = 'leased' AND lease_until <= %s)) "
                f"AND NOT (channel = ANY(%s)) ORDER BY due_at, id LIMIT %s "
                f"FOR UPDATE SKIP LOCKED) RETURNING {_SELECT}",
                (wall + lease_seconds, worker, now, wall, sorted(set(skip_channels)),
                 limit)).fetchall()
        return sorted((self._row(r) for r in found), key=lambda r: (r.due_at, r.id or 0))

    def mark_delivered(self, row_id: int, receipt: Mapping[str, Any], now: int) -> None:
        from psycopg.types.json import Jsonb

        self._one("UPDATE outbox SET status = 'delivered', receipt = %s, delivered_at = %s, "
                  "settled_at = %s, lease_until = NULL WHERE id = %s AND status = 'leased'",
                  (Jsonb(dict(receipt)), now, now, row_id))

    def mark_retry(self, row_id: int, due_at: int, error: str) -> None:
        self._one("UPDATE outbox SET status = 'pending', due_at = %s, last_error = %s, "
                  "lease_until = NULL WHERE id = %s AND status = 'leased'",
                  (due_at, error, row_id))

    def mark_dead(self, row_id: int, error: str, now: int) -> None:
        self._one("UPDATE outbox SET status = 'dead', last_error = %s, settled_at = %s, "
                  "lease_until = NULL WHERE id = %s AND status = 'leased'",
                  (error, now, row_id))

    def release(self, row_id: int) -> None:
        self._one("UPDATE outbox SET status = 'pending', attempts = GREATEST(attempts - 1, 0), "
                  "lease_until = NULL, leased_by = NULL WHERE id = %s AND status = 'leased'",
                  (row_id,))

    def rows(self, status: str | None = None, *, customer_id: str | None = None,
             limit: int | None = None, ids: Sequence[int] | None = None) -> list[OutboxRow]:
        where, args = _filters(status, customer_id, ids, "%s")
        sql = f"SELECT {_SELECT} FROM outbox{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT %s"
            args.append(limit)
        return [self._row(r) for r in self._one(sql, args).fetchall()]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for status, count in self._one(
                "SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall():
            out[status] = int(count)
        return out

    @staticmethod
    def _reassign(cur: Any, customer_id: str, new_owner: str) -> int:
        from psycopg.types.json import Jsonb

        found = cur.execute("SELECT id, kind, message FROM outbox WHERE customer_id = %s "
                            "AND status = 'pending' ORDER BY id FOR UPDATE",
                            (customer_id,)).fetchall()
        for row_id, kind, message in found:
            cur.execute("UPDATE outbox SET message = %s WHERE id = %s",
                        (Jsonb(_reassigned(message, kind, new_owner)), row_id))
        return len(found)

    @staticmethod
    def _row(values: Sequence[Any]) -> OutboxRow:
        data = dict(zip(COLUMNS, values, strict=True))
        return OutboxRow(**data)


def _pg_message(exc: Exception, url: str) -> str:
    """A psycopg error as one line, without the password should libpq have echoed it."""
    text = " ".join(str(exc).split())
    password = urlsplit(url).password if "://" in url else None
    return text.replace(password, "***") if password else text

