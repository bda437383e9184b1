"""The feeder of local partitions: the history read and checked once, for all of them.

With `--workers N` on local processes (`executor="processes"`), the parent process reads
the events file once, exactly as a single run's driver (drive.py) does: the same records
quarantined for the same reasons (an unreadable line, a bad field, too far ahead of the
clock with `max_future`, a duplicate event_id, out of order), the same event ids
remembered, the same clock. It writes the events' quarantine once, counts what was read,
and feeds each partition (`Driver.run_fed`) a compact stream, in file order:

- an accepted event of one of its customers (or a staff event, which every partition
  applies to its own customers), parsed and checked: it is applied;
- for an accepted event of another partition's customer, only its time: the partition's
  clock and driver steps move as for that event (`Driver.run_fed` counts the steps without
  running them while nothing of its own is due), so the merge keys stay those of a run
  that reads everything;
- for a refused event that got as far as the clock catching up to it, `(ts,)`: the clock
  catches up (a day at a time) as the single run's does before refusing it.

Partitions then parse only their own customers' records. Every partition gets every chunk
of the history whole before the next chunk is read, through a bounded queue and a writer
thread each: a partition waiting at a barrier (barrier.py) stops reading its feed, but the
others have been fed at least as far as that barrier, so they reach it too and the run
goes on. Profiles are still read by every partition (each adds its own; the owner
quarantines a bad one). The Dask executor keeps every partition reading the whole history
(partition.py): its workers may be on other machines.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sopkit._errors import EventError
from sopkit._io import BadRecord, InputError, Quarantine, read_records
from sopkit._lang.clock import Calendar, too_far_ahead
from sopkit._offline.drive import Counts, Driver, Fed
from sopkit._runtime.inputs import EVENT_ID, STAFF_DEPARTED, Inputs, remember
from sopkit._runtime.records import Action
from sopkit._runtime.runtime import refusal

CHUNK = 2048  # records read per round of feeding
QUEUED = 16  # chunks a partition may be behind the feeder before it waits


class _Clock:
    """The one clock without customers: where a partition's clock is after each step."""

    def __init__(self, calendar: Calendar) -> None:
        self.calendar = calendar
        self.now_ts: int | None = None

    def advance_ts(self, ts: int) -> list[Action]:
        self.now_ts = ts if self.now_ts is None else max(self.now_ts, ts)
        return []


class Feeder:
    """Reads and checks `events` once; `run(send)` hands each chunk's parts, one list per
    partition, to `send`. `owner(customer_id)` is the partition that owns a customer."""

    def __init__(self, inputs: Inputs, events: Path, count: int,
                 owner: Callable[[str], int], *, end_ts: int | None,
                 max_future: int | None, sampled: bool, jail: Quarantine) -> None:
        self.inputs = inputs
        self.events = events
        self.count = count
        self.owner = owner
        self.end_ts = end_ts
        self.max_future = max_future
        self.jail = jail
        self.counts = Counts()
        self.clock = _Clock(inputs.calendar)
        # the driver's day-by-day catch-up (and the report's samples, which stop the clock
        # at the end of each day), on a clock alone: it reads only now_ts, calendar and
        # advance_ts of its runtime
        self.driver = Driver(self.clock, emit=lambda actions: None,  # type: ignore[arg-type]
                             quarantine=lambda *args: None,
                             sample=(lambda rt: None) if sampled else None, split=True)
        self.ids: dict[str, dict[str, int]] = {}  # customer -> event ids applied
        self.staff_ids: dict[str, int] | None = None
        self.parts: list[list[Fed]] = [[] for _ in range(count)]

    def run(self, send: Callable[[list[list[Fed]]], None]) -> None:
        """Feed the whole history, chunk by chunk; InputError where reading it fails (the
        records before are fed and the quarantine is written)."""
        name = str(self.events)
        read = 0
        try:
            for item in read_records(self.events):
                self.counts.events_read += 1
                if isinstance(item, BadRecord):
                    self.jail.add(name, item.line, item.reason, item.raw, item.kind)
                else:
                    try:
                        self._event(self.inputs.parse_event(item.data))
                    except EventError as exc:
                        self.jail.add(name, item.line, str(exc), item.data, exc.kind)
                read += 1
                if read == CHUNK:
                    read = 0
                    send(self.parts)
                    self.parts = [[] for _ in range(self.count)]
        finally:
            self.jail.close()
            send(self.parts)

    def _event(self, event: tuple[str, str, int, dict[str, Any]]) -> None:
        """As `Driver._event` in a partition that owns every customer, and feed it."""
        customer_id, etype, ts, fields = event
        cal, clock = self.inputs.calendar, self.clock
        ahead = too_far_ahead(cal, ts, clock.now_ts, self.max_future)
        if ahead is not None:
            raise EventError(ahead, "too far in the future")
        if self.end_ts is not None and ts > self.end_ts:
            self.counts.events_after_end += 1
            return
        self.driver.catch_up(ts)
        event_id = fields.get(EVENT_ID)
        staff = etype == STAFF_DEPARTED
        seen = self.staff_ids if staff else self.ids.get(customer_id)
        refused = refusal(cal, seen, event_id, ts, clock.now_ts)
        if refused is not None:
            for part in self.parts:
                part.append((ts,))
            raise refused
        clock.advance_ts(ts)
        if event_id is not None:
            if staff:
                self.staff_ids = remember(self.staff_ids, event_id, ts)
            else:
                self.ids[customer_id] = remember(seen, event_id, ts)
        self.counts.events_applied += 1
        owner = -1 if staff else self.owner(customer_id)
        for index, part in enumerate(self.parts):
            part.append(event if staff or index == owner else ts)


def fed(conn: Connection) -> Iterator[list[Fed]]:
    """A partition's end of its feed: the batches, then the end (InputError where reading
    the history failed)."""
    while True:
        try:
            message = conn.recv()
        except EOFError:
            raise RuntimeError("the feeder of the partitions stopped") from None
        if message is None:
            return
        if message is False:  # the feeder failed (the parent reports why)
            raise RuntimeError("the feeder of the partitions stopped")
        if isinstance(message, str):
            raise InputError(message)
        yield message


class Feeding:
    """The feeder in a thread of the parent process, a bounded queue and a writer thread
    per partition; `error` is what stopped it (InputError: reading the history)."""

    def __init__(self, feeder: Feeder) -> None:
        self.feeder = feeder
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, conns: Sequence[Connection]) -> None:
        queues: list[queue.Queue[Any]] = [queue.Queue(QUEUED) for _ in conns]
        for conn, q in zip(conns, queues, strict=True):
            self._threads.append(threading.Thread(target=_write, args=(conn, q), daemon=True))

        def send(parts: list[list[Fed]]) -> None:
            for q, part in zip(queues, parts, strict=True):
                q.put(part)

        def feed() -> None:
            end: str | None = None
            failed = False
            try:
                self.feeder.run(self._unless_stopped(send))
            except InputError as exc:
                end = str(exc)
                self.error = exc
            except BaseException as exc:  # the partitions are told it failed
                self.error = exc
                failed = True
            for q in queues:
                q.put(False if failed else end)

        self._threads.append(threading.Thread(target=feed, daemon=True))
        for thread in self._threads:
            thread.start()

    def _unless_stopped(self, send: Callable[[list[list[Fed]]], None]
                        ) -> Callable[[list[list[Fed]]], None]:
        def guarded(parts: list[list[Fed]]) -> None:
            if self.stopping.is_set():
                raise _Stopped
            send(parts)
        return guarded

    @property
    def failure(self) -> BaseException | None:
        """What went wrong in the feeder itself: not reading the history (InputError, which
        the partitions report as a single run does) nor a stop it was told (a partition
        failed, and that is the error)."""
        error = self.error
        return None if isinstance(error, InputError | _Stopped) else error

    def stop(self) -> None:
        """Feed no more (a partition failed); the writers drop what is queued."""
        self.stopping.set()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()


class _Stopped(Exception):
    """The run stopped feeding (a partition failed)."""


def _write(conn: Connection, q: queue.Queue[Any]) -> None:
    """Send a partition its queued batches, then the end; once it cannot be reached (it
    stopped), drop the rest so the feeder never waits for it."""
    alive = True
    while True:
        message = q.get()
        if alive:
            try:
                conn.send(message)
            except (OSError, ValueError):
                alive = False
        if not isinstance(message, list):  # the end: None, an InputError's text, False
            break
    conn.close()
