"""One event loop per store: the lock `sopkit run` takes before it touches any state.

Two loops on one store would both apply every event and both decide every message (and,
on a new store, race to create it). So `run` takes the store's loop lock first:

- SQLite: a row in the `loop_lock` table, a lease like an outbox row's: the holder's worker
  name, host and pid, and an expiry on the wall clock that a heartbeat thread renews while
  the run lives. Another run may take the lock over when the lease has run out, at once
  when it runs under the holder's --worker name (a restart: the old process is gone), and
  at once when the holder was a process on this host that no longer exists (killed).
  Every commit checks, in its transaction, that the lock is still this run's.
- PostgreSQL: a session-level advisory lock keyed by a hash of the database and schema;
  the server releases it when the holder's connection closes, a killed process included.
  A `loop_lock` row names the holder for the message the next run prints.

A run that finds the lock held exits 2 naming the holder and how to proceed. The read-only
commands (`dry-run`, `outbox list`, `handover status` ...) never take it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sopkit._errors import SopkitError, UsageError

LEASE_SECONDS = 30
"""How long a SQLite loop lock lasts without renewal (wall clock); renewed every third."""

SQLITE_TABLE = ("CREATE TABLE IF NOT EXISTS loop_lock (id INTEGER PRIMARY KEY CHECK (id = 1), "
                "worker TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, "
                "since INTEGER NOT NULL, until INTEGER NOT NULL)")
PG_TABLE = ("CREATE TABLE IF NOT EXISTS loop_lock (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "worker TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, "
            "since BIGINT NOT NULL, until BIGINT NOT NULL)")
_COLUMNS = "worker, host, pid, since, until"


@dataclass(frozen=True)
class LoopHolder:
    """Who holds a store's event loop: worker name, host, pid, since when, lease end."""

    worker: str
    host: str
    pid: int
    since: int
    until: int

    def same_process(self, other: LoopHolder) -> bool:
        return (self.worker, self.host, self.pid) == (other.worker, other.host, other.pid)


class LoopLocked(UsageError):
    """Another `sopkit run` holds this store's event loop (exit 2)."""

    def __init__(self, url: str, holder: LoopHolder | None, *, postgres: bool) -> None:
        self.holder = holder
        if holder is None:
            who = "another `sopkit run`"
        else:
            who = (f"`sopkit run` worker '{holder.worker}' (pid {holder.pid} on {holder.host}, "
                   f"since {_utc(holder.since)})")
        if postgres:
            how = ("stop that run first; PostgreSQL frees the lock as soon as its connection "
                   "closes, a killed process included")
        else:
            until = _utc(holder.until) if holder else "the end of its lease"
            name = holder.worker if holder else "NAME"
            how = ("stop that run first; if it was killed on another host, its lease runs out "
                   f"at {until}, or restart it under its own name (--worker {name}) to take "
                   "the lock back at once")
        super().__init__(f"store '{url}' is in use: {who} holds its event loop, and one "
                         f"store has one event loop; {how}")


class LoopLockLost(SopkitError):
    """This run's loop lock was taken over (its lease ran out while it stalled)."""


def _utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def this_host() -> str:
    return socket.gethostname()


def _alive(pid: int) -> bool:
    """Whether a process of this host with `pid` exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def takeable(held: LoopHolder, wanted: LoopHolder, now: int) -> bool:
    """Whether `wanted` may take the SQLite lock `held`: its lease ran out, it is the same
    worker name (a restart), or its process on this host is gone."""
    if held.until <= now or held.worker == wanted.worker:
        return True
    return held.host == wanted.host and held.pid != wanted.pid and not _alive(held.pid)


def sqlite_acquire(cur: Any, url: str, wanted: LoopHolder, now: int) -> None:
    """Take the lock inside the caller's write transaction, or raise LoopLocked."""
    cur.execute(SQLITE_TABLE)
    found = cur.execute(f"SELECT {_COLUMNS} FROM loop_lock WHERE id = 1").fetchone()
    if found is not None and not takeable(LoopHolder(*found), wanted, now):
        raise LoopLocked(url, LoopHolder(*found), postgres=False)
    cur.execute(f"INSERT OR REPLACE INTO loop_lock (id, {_COLUMNS}) VALUES (1, ?, ?, ?, ?, ?)",
                (wanted.worker, wanted.host, wanted.pid, wanted.since, wanted.until))


def holder_row(cur: Any, table_exists: bool = True) -> LoopHolder | None:
    if not table_exists:
        return None
    found = cur.execute(f"SELECT {_COLUMNS} FROM loop_lock WHERE id = 1").fetchone()
    return None if found is None else LoopHolder(*found)


def pg_key(database: str, schema: str) -> int:
    """The advisory lock key of a store: a signed 64-bit hash of database and schema."""
    digest = hashlib.sha256(f"sopkit-loop:{database}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def pg_pair(key: int) -> tuple[int, int]:
    """The key as two signed 32-bit halves, for the (int, int) advisory lock functions."""
    raw = key & 0xFFFFFFFFFFFFFFFF
    hi, lo = raw >> 32, raw & 0xFFFFFFFF
    return (hi - (1 << 32) if hi >= 1 << 31 else hi, lo - (1 << 32) if lo >= 1 << 31 else lo)


def me(worker: str, now: int, lease_seconds: int, host: str | None = None,
       pid: int | None = None) -> LoopHolder:
    return LoopHolder(worker, host or this_host(), os.getpid() if pid is None else pid, now,
                      now + lease_seconds)


class _LockingStore(Protocol):
    url: str

    def acquire_loop_lock(self, worker: str, now: int, lease_seconds: int = ...,
                          *, host: str | None = ..., pid: int | None = ...) -> LoopHolder: ...

    def renew_loop_lock(self, holder: LoopHolder, now: int,
                        lease_seconds: int = ...) -> bool: ...

    def release_loop_lock(self, holder: LoopHolder) -> None: ...

    def close(self) -> None: ...


@dataclass
class Heartbeat:
    """Renews a SQLite loop lock from its own connection; `lost` is set if it was taken."""

    lost: bool = False


@contextmanager
def holding(store: _LockingStore, worker: str, *, wall: Callable[[], float],
            reopen: Callable[[], _LockingStore] | None, on_lost: Callable[[], None],
            lease_seconds: int = LEASE_SECONDS, beat_seconds: float | None = None
            ) -> Iterator[Heartbeat]:
    """Hold the store's loop lock for the block (LoopLocked if another run has it).

    With `reopen` (SQLite), a daemon thread renews the lease every third of it (or every
    `beat_seconds`) through a connection of its own, and calls `on_lost` should another run
    have taken the lock.
    """
    holder = store.acquire_loop_lock(worker, int(wall()), lease_seconds)
    beat = Heartbeat()
    done = threading.Event()
    thread = None
    if reopen is not None:
        def renew() -> None:
            try:
                other = reopen()
            except SopkitError:  # gone already (the run ended); nothing to renew
                return
            try:
                while not done.wait(beat_seconds or lease_seconds / 3):
                    try:
                        kept = other.renew_loop_lock(holder, int(wall()), lease_seconds)
                    except Exception:  # busy or failing: try again at the next beat (the
                        continue       # lease outlasts two missed beats)
                    if not kept:
                        beat.lost = True
                        on_lost()
                        return
            finally:
                other.close()

        thread = threading.Thread(target=renew, name="sopkit-loop-lock", daemon=True)
        thread.start()
    try:
        yield beat
    finally:
        done.set()
        if thread is not None:
            thread.join(timeout=15)
        if not beat.lost:
            store.release_loop_lock(holder)
