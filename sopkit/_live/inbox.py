"""The durable inbox of `sopkit serve`: records accepted over HTTP, in arrival order.

An HTTP request is answered `202 Accepted` only after its records are committed to the
`inbox` table of the store. The live loop reads the rows after its stored position (the
`input.line` meta that `run` keeps for a file's line number, here a row's `seq`) and commits
that position in the same transaction as the decisions; so after a kill -9 at any moment a
restart applies every accepted record exactly once (a row whose decisions were committed is
behind the position; one whose were not is read again).

The table is created on first use (`CREATE TABLE IF NOT EXISTS`) in SQLite and PostgreSQL
alike, so a store of any schema version can take it. A row the service could not map (a
Segment event without a mapping, say) is stored with its `reason` and goes to the
quarantine when the loop reaches it, in order with the others.

Appends are serialised (SQLite's write lock; a table lock in PostgreSQL), so `seq` order is
commit order and a reader never sees a row appear behind one it has already passed.

Concurrent appends are committed together (group commit): the requests that arrive while
one commit is on its way wait, and the next thread to hold the connection commits all of
them in one transaction, each request's rows in order and checked against the bound on its
own; each caller still returns only once its rows are committed. One fsync then serves
many requests (benchmarks/serve-results.md).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sopkit import _json  # compact json.dumps, exactly, faster
from sopkit._errors import SopkitError, UsageError
from sopkit._live.store import STATUSES, StoreError, redact

SQLITE_TABLE = ("CREATE TABLE IF NOT EXISTS inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "received_at INTEGER NOT NULL, source TEXT NOT NULL, record TEXT NOT NULL, "
                "reason TEXT)")
PG_TABLE = ("CREATE TABLE IF NOT EXISTS inbox (seq BIGINT GENERATED ALWAYS AS IDENTITY "
            "PRIMARY KEY, received_at BIGINT NOT NULL, source TEXT NOT NULL, "
            "record TEXT NOT NULL, reason TEXT)")
T = TypeVar("T")
SOURCE = "inbox"
"""The input name the store records (`input.source`) for a served loop."""
HISTORY = "history.complete"
"""Store meta: "yes" when the kept inbox holds every record the store's state came from;
"no" when it holds the records from `HISTORY_FROM` on (or from an unknown point); "off" when
the last `serve` kept none (`--no-history`)."""
HISTORY_FROM = "history.from"
"""Store meta: unix seconds; the kept inbox holds every applied record with an event time
from then on (older ones were deleted by `serve --history-keep`)."""


class InboxFull(SopkitError):
    """More unconsumed rows than the bound: the caller answers 429 and the client retries."""

    def __init__(self, depth: int, bound: int) -> None:
        super().__init__(f"the inbox holds {depth} unapplied records (bound {bound})")
        self.depth = depth
        self.bound = bound


@dataclass
class _Pending:
    """One append waiting for a commit: its rows, its bound, and then its outcome."""

    values: list[tuple[Any, ...]]
    after: int
    bound: int
    done: bool = False
    last: int = 0
    error: Exception | None = None


@dataclass(frozen=True)
class Entry:
    """One accepted record: where it came from, the sopkit record, and why it is
    quarantined (None: it is to be applied)."""

    source: str
    record: Any
    reason: str | None = None


@dataclass(frozen=True)
class Row:
    seq: int
    received_at: int
    source: str
    record: str
    reason: str | None


def _sqlite_path(url: str) -> str | None:
    text = url.strip()
    if text.startswith(("postgresql:", "postgres:")):
        return None
    return text[len("sqlite:///"):] if text.startswith("sqlite:///") else text


class Inbox:
    """A connection of its own to the store's inbox; safe to share between threads."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000) -> None:
        self.url = redact(url)
        self._lock = threading.Lock()  # the connection
        self._queued: list[_Pending] = []  # appends waiting for the next group commit
        self._queue_lock = threading.Lock()
        self._busy_s = busy_timeout_ms / 1000
        path = _sqlite_path(url)
        self._pg = path is None
        try:
            if path is None:
                import psycopg

                self._db: Any = psycopg.connect(url, autocommit=True, connect_timeout=10)
                self._db.execute(PG_TABLE)
            else:
                self._db = sqlite3.connect(path, isolation_level=None,
                                           timeout=busy_timeout_ms / 1000,
                                           check_same_thread=False)
                self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                self._db.execute(SQLITE_TABLE)
        except ImportError:
            raise UsageError("a PostgreSQL store needs psycopg: pip install "
                             "'sopkit[postgresql]'") from None
        except Exception as exc:  # sqlite3.Error or psycopg.Error: the store is unusable
            raise StoreError(f"store '{self.url}': cannot open the inbox: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _mark(self) -> str:
        return "%s" if self._pg else "?"

    def append(self, entries: Sequence[Entry], now: int, after: int, bound: int) -> int:
        """Commit `entries` in order; return the last seq. InboxFull when more than `bound`
        rows after `after` (the loop's committed position) would be waiting."""
        outcome = self.append_many([(entries, now, after, bound)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def append_many(self, appends: Sequence[tuple[Sequence[Entry], int, int, int]]
                    ) -> list[int | Exception]:
        """`append` for each of `appends` ((entries, now, after, bound)), in order, in one
        commit: each one's last seq, or its InboxFull or StoreError (`sopkit serve`'s
        committer: the requests waiting while a commit runs share the next one)."""
        group = [_Pending([(now, e.source, _json.dumps(e.record, default=str), e.reason)
                           for e in entries], after, bound)
                 for entries, now, after, bound in appends]
        with self._queue_lock:
            self._queued.extend(group)
        with self._lock:
            # unless another thread committed them meanwhile: commit every one queued
            if not all(pending.done for pending in group):
                with self._queue_lock:
                    queued, self._queued = self._queued, []
                self._commit(queued)
        return [pending.error if pending.error is not None else pending.last
                for pending in group]

    def _commit(self, group: list[_Pending]) -> None:
        """One transaction for `group`, each append on its own against its bound."""
        try:
            self._append(group)
        except Exception as exc:  # the database failed: none of the requests is accepted
            for pending in group:
                pending.error = StoreError(f"store '{self.url}': {exc}")
        for pending in group:
            pending.done = True

    def _append(self, group: list[_Pending]) -> None:
        mark = self._mark()
        insert = (f"INSERT INTO inbox (received_at, source, record, reason) VALUES "
                  f"({mark}, {mark}, {mark}, {mark})")

        def append(cur: Any) -> None:
            if self._pg:
                cur.execute("LOCK TABLE inbox IN EXCLUSIVE MODE")  # seq order = commit order
            self._append_each(cur, group, insert)

        self._write(append)

    def _write(self, work: Callable[[Any], T]) -> T:
        """`work(cursor)` in one write transaction (SQLite: BEGIN IMMEDIATE, asked again
        while the loop writes), committed, or rolled back if it raises."""
        if self._pg:
            with self._db.transaction(), self._db.cursor() as cur:
                return work(cur)
        cur = self._begin()
        try:
            done = work(cur)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return done

    def _begin(self) -> Any:
        """BEGIN IMMEDIATE, asking again every half millisecond while the loop writes.

        SQLite's own busy handler sleeps ever longer (up to 100 ms a try) while another
        connection holds the write lock; the live loop takes it for many short
        transactions, so a request would wait far longer than the lock is held."""
        deadline = time.monotonic() + self._busy_s
        self._db.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    return self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                time.sleep(0.0005)
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {int(self._busy_s * 1000)}")

    def _append_each(self, cur: Any, group: list[_Pending], insert: str) -> None:
        # the freshest position any of them saw: rows at or before it are applied. The rows
        # after it are the seqs up to the last one (SQLite's never skip one; PostgreSQL's
        # identity skips those of a rolled-back append, which then count until the loop
        # passes them), so the depth is a subtraction, not a count that reads every waiting
        # row while holding the write lock
        found = cur.execute("SELECT max(seq) FROM inbox").fetchone()
        last = int(found[0]) if found and found[0] is not None else 0
        depth = max(last - max(p.after for p in group), 0)
        for pending in group:
            adding = len(pending.values)
            if depth + adding > pending.bound and depth > 0:  # an empty inbox takes any one
                pending.error = InboxFull(depth, pending.bound)
                continue
            cur.executemany(insert, pending.values)
            found = cur.execute("SELECT max(seq) FROM inbox").fetchone()
            pending.last = int(found[0]) if found and found[0] is not None else 0
            depth += adding

    def read(self, after: int, limit: int) -> list[Row]:
        """The rows after seq `after`, oldest first, at most `limit`."""
        mark = self._mark()
        with self._lock:
            found = self._db.execute(
                f"SELECT seq, received_at, source, record, reason FROM inbox WHERE seq > {mark} "
                f"ORDER BY seq LIMIT {mark}", (after, limit)).fetchall()
        return [Row(int(s), int(r), str(src), str(rec), reason)
                for s, r, src, rec, reason in found]

    def waiting(self, after: int) -> tuple[int, int | None]:
        """How many rows wait after `after`, and when the oldest of them arrived."""
        mark = self._mark()
        with self._lock:
            found = self._db.execute(
                f"SELECT count(*), min(received_at) FROM inbox WHERE seq > {mark}",
                (after,)).fetchone()
        if not found:
            return 0, None
        return int(found[0]), None if found[1] is None else int(found[1])

    def prune(self, upto: int) -> int:
        """Delete the rows the loop has committed (seq <= `upto`); return how many."""
        mark = self._mark()
        with self._lock:
            cur = self._db.execute(f"DELETE FROM inbox WHERE seq <= {mark}", (upto,))
            return max(int(cur.rowcount), 0)

    def expire(self, upto: int, before: int, when: Callable[[Row], int | None],
               limit: int) -> tuple[int, int | None]:
        """Delete the oldest applied rows (seq <= `upto`) whose event time (`when`; None:
        unreadable, then their arrival) is before `before`, at most `limit` in one short
        transaction, stopping at the first row at or after it. When any went, the store's
        meta records that the kept history now starts at `before` (`HISTORY_FROM`; a
        complete history becomes incomplete) in the same transaction. Returns how many
        rows went and the event time of the row that stopped the walk (None: none did)."""
        mark = self._mark()
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, received_at, source, record, reason FROM inbox WHERE seq <= "
                f"{mark} ORDER BY seq LIMIT {mark}", (upto, limit)).fetchall()
            last, stop = None, None
            for s, r, src, rec, reason in rows:
                row = Row(int(s), int(r), str(src), str(rec), reason)
                at = when(row)
                at = row.received_at if at is None else at
                if at >= before:
                    stop = at
                    break
                last = row.seq
            if last is None:
                return 0, stop
            try:
                return self._write(lambda cur: self._expire_in(cur, last, before, mark)), stop
            except Exception as exc:  # the database failed: nothing went, try again later
                raise StoreError(f"store '{self.url}': {exc}") from None

    @staticmethod
    def _expire_in(cur: Any, last: int, before: int, mark: str) -> int:
        gone = max(int(cur.execute(f"DELETE FROM inbox WHERE seq <= {mark}",
                                   (last,)).rowcount), 0)
        meta = dict(cur.execute(f"SELECT key, value FROM meta WHERE key IN ({mark}, {mark})",
                                (HISTORY, HISTORY_FROM)).fetchall())
        since = meta.get(HISTORY_FROM)
        if meta.get(HISTORY) == "yes" or (since and int(since) < before):
            for key, value in ((HISTORY, "no"), (HISTORY_FROM, str(before))):
                cur.execute(f"INSERT INTO meta (key, value) VALUES ({mark}, {mark}) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            (key, value))
        return gone

    def ping(self) -> None:
        """Raise if the store does not answer."""
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def outbox_counts(self) -> dict[str, int]:
        """Outbox rows per status (for /metrics), read on this connection."""
        with self._lock:
            found = self._db.execute(
                "SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in found}

    def outbox_counts_by_channel(self) -> dict[str, dict[str, int]]:
        """Outbox rows per channel ('' for tasks) and status (the web console's overview)."""
        with self._lock:
            found = self._db.execute("SELECT coalesce(channel, ''), status, count(*) FROM "
                                     "outbox GROUP BY 1, 2").fetchall()
        out: dict[str, dict[str, int]] = {}
        for channel, status, n in found:
            out.setdefault(str(channel), {})[str(status)] = int(n)
        return dict(sorted(out.items()))

    def outbox_by_day(self, starts: Sequence[int]) -> list[tuple[int, str, str, int]]:
        """Outbox rows by the day they are due, channel ('' for tasks) and status (the web
        console's chart): (day, channel, status, count), day `i` being the rows with
        `starts[i] <= due_at < starts[i + 1]`; days and their lengths are the caller's (a
        playbook day of a DST change is not 24 hours).

        One query in SQLite and PostgreSQL alike. The status list (every status) lets both
        read the window off the `outbox_claim (status, due_at)` index, one range a status,
        rather than scanning the table: the cost follows the rows due in the window."""
        if len(starts) < 2:
            return []
        mark = self._mark()
        case = " ".join(f"WHEN due_at < {mark} THEN {i}" for i in range(len(starts) - 2))
        day = f"CASE {case} ELSE {len(starts) - 2} END" if case else "0"
        sql = (f"SELECT {day}, coalesce(channel, ''), status, count(*) FROM outbox "
               f"WHERE status IN ({', '.join(mark for _ in STATUSES)}) "
               f"AND due_at >= {mark} AND due_at < {mark} GROUP BY 1, 2, 3")
        with self._lock:
            found = self._db.execute(sql, (*starts[1:-1], *STATUSES, starts[0],
                                           starts[-1])).fetchall()
        return sorted((int(d), str(c), str(s), int(n)) for d, c, s, n in found)

    def customer_state(self, customer_id: str) -> tuple[bytes | None, str | None]:
        """A customer's stored state and the runtime clock, read together (GET
        /v1/customers); (None, clock) for a customer the store does not hold."""
        mark = self._mark()
        with self._lock:
            found = self._db.execute(f"SELECT state FROM customers WHERE customer_id = {mark}",
                                     (customer_id,)).fetchone()
            clock = self._db.execute("SELECT value FROM meta WHERE key = 'runtime'").fetchone()
        return (None if found is None else bytes(found[0]),
                None if clock is None else str(clock[0]))
