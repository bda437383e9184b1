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
from sopkit._io import InputError, Quarantine
from sopkit._offline.drive import Counts, Driver, Event, Fed
from sopkit._runtime.inputs import EVENT_ID, STAFF_DEPARTED, Inputs, remember
from sopkit._runtime.records import Action
from sopkit._runtime.runtime import refusal

CHUNK = 2048  # events fed per round of feeding
QUEUED = 16  # chunks a partition may be behind the feeder before it waits


class _Clock:
    """The runtime of a partition that owns every customer but keeps none: `Driver` runs on
    it as on a partition's (`split=True`), so the feeder checks, refuses and moves the one
    clock exactly as a single run does; what a runtime would apply goes into `parts`."""

    def __init__(self, feeder: Feeder) -> None:
        self.feeder = feeder
        self.calendar = feeder.inputs.calendar
        self.parse_event = feeder.inputs.parse_event
        self.now_ts: int | None = None
        self.ids: dict[str, dict[str, int]] = {}  # customer -> event ids applied
        self.staff_ids: dict[str, int] | None = None

    def advance_ts(self, ts: int) -> list[Action]:
        self.now_ts = ts if self.now_ts is None else max(self.now_ts, ts)
        return []

    def _refusal(self, event: Event) -> EventError | None:
        """As `Runtime._refusal`; a refused event is fed as `(ts,)`: the clock has caught
        up to it."""
        customer_id, etype, ts, fields = event
        seen = self.staff_ids if etype == STAFF_DEPARTED else self.ids.get(customer_id)
        refused = refusal(self.calendar, seen, fields.get(EVENT_ID), ts, self.now_ts)
        if refused is not None:
            self.feeder.feed((ts,), (ts,), None)
        return refused

    def _apply_checked(self, event: Event) -> list[Action]:
        """Remember its event id, and feed it to its owner (a staff event to every
        partition) and its time to the others."""
        customer_id, etype, ts, fields = event
        event_id = fields.get(EVENT_ID)
        staff = etype == STAFF_DEPARTED
        if event_id is not None:
            if staff:
                self.staff_ids = remember(self.staff_ids, event_id, ts)
            else:
                self.ids[customer_id] = remember(self.ids.get(customer_id), event_id, ts)
        self.feeder.feed(event, ts, None if staff else self.feeder.owner(customer_id))
        return []


class Feeder:
    """Reads and checks `events` once; `run(send)` hands each chunk's parts, one list per
    partition, to `send`. `owner(customer_id)` is the partition that owns a customer."""

    def __init__(self, inputs: Inputs, events: Path, count: int,
                 owner: Callable[[str], int], *, end_ts: int | None,
                 max_future: int | None, lateness: int = 0, sampled: bool,
                 jail: Quarantine) -> None:
        self.inputs = inputs
        self.events = events
        self.count = count
        self.owner = owner
        self.jail = jail
        self.parts: list[list[Fed]] = [[] for _ in range(count)]
        self._send: Callable[[list[list[Fed]]], None] = lambda parts: None
        # the driver's checks and its day-by-day catch-up (and the report's samples, which
        # stop the clock at the end of each day), on a runtime without customers
        self.driver = Driver(_Clock(self), emit=lambda actions: None,  # type: ignore[arg-type]
                             quarantine=jail.add, end_ts=end_ts, max_future=max_future,
                             lateness=lateness,
                             sample=(lambda rt: None) if sampled else None, split=True)
        # (a duck-typed Runtime: the driver reads only now_ts, calendar, parse_event,
        # advance_ts, _refusal and _apply_checked)

    @property
    def counts(self) -> Counts:
        """What was read, applied and left after the end, as a single run counts them."""
        return self.driver.counts

    def run(self, send: Callable[[list[list[Fed]]], None]) -> None:
        """Feed the whole history, chunk by chunk; InputError where reading it fails (the
        records before are fed and the quarantine is written)."""
        self._send = send
        try:
            self.driver.run(self.events)
        finally:
            self.jail.close()
            send(self.parts)

    def feed(self, own: Fed, other: Fed, owner: int | None) -> None:
        """`own` to the partition `owner` (to every one if None), `other` to the rest; a
        full chunk is sent."""
        for index, part in enumerate(self.parts):
            part.append(own if owner is None or index == owner else other)
        if len(self.parts[0]) >= CHUNK:
            self._send(self.parts)
            self.parts = [[] for _ in range(self.count)]


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
