"""The live loop of `sopkit serve`, on a thread of its own, fed from the durable inbox.

The loop is `run`'s (`run_live`): it applies the inbox rows after its committed position,
in seq order, commits the position with the decisions, lets time pass and dispatches. The
HTTP side only appends to the inbox and wakes the loop. On shutdown the loop first applies
every row accepted so far (drains), commits, and stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sopkit import _json
from sopkit._io import BadRecord, Quarantine, Record
from sopkit._live.dispatch import Dispatcher
from sopkit._live.inbox import SOURCE, Inbox, Row
from sopkit._live.loop import LiveRun, LiveStats, Stopper, run_live
from sopkit._mask import mask_text

log = logging.getLogger("sopkit.serve")

# after a request wakes the loop, it waits this long before reading: a burst of requests is
# then applied, committed and delivered in one cycle, whose fewer write transactions keep
# the inbox's commits waiting less (benchmarks/serve-profile.md); the lag grows by as much
GATHER_S = 0.01
READ_ROWS = 2000  # inbox rows read at a time: a backlog is read in big chunks
COMMIT_WAIT = 0.5
"""Under a backlog the loop commits after `--batch` records or this many seconds after the
oldest uncommitted one was read, whichever first; with nothing more to read, at once."""
DISPATCH_ROWS = 500
"""Outbox rows the served loop's dispatcher claims a pass: a backlog's thank-yous go out in
passes this big (one claim, one channel write and sync, one transaction of outcomes each)."""
EXPIRE_ROWS = 500  # history rows deleted per transaction: ingest never waits for long
EXPIRE_BATCHES = 4  # transactions per pause of the loop (idle tick, or READ_ROWS applied)


@dataclass
class LoopOptions:
    """How the served loop runs: as `run`'s options of the same names."""

    clock: Callable[[], int]
    lateness: int
    batch: int
    tick: float
    max_future: int | None
    max_inbox: int
    history: bool = False  # keep applied inbox rows (the timeline's history)
    keep: int | None = None  # with history: delete applied rows this much older than the clock
    max_wait: float | None = COMMIT_WAIT  # under a backlog, commit at least this often (s)


@dataclass
class Counters:
    """What /metrics reports of this process's requests."""

    accepted: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, table: dict[str, int], key: str, n: int = 1) -> None:
        with self.lock:
            table[key] = table.get(key, 0) + n


class ServedLoop:
    """`run_live` over the inbox on a thread; `stop()` drains the inbox and joins it."""

    def __init__(self, live: LiveRun, dispatcher: Dispatcher, inbox: Inbox,
                 jail: Quarantine, options: LoopOptions) -> None:
        self.live = live
        self.dispatcher = dispatcher
        self.inbox = inbox
        self.jail = jail
        self.options = options
        self.wake = threading.Event()
        self.stopper = Stopper()  # set once the inbox is drained after stop(); not installed
        self.shutdown = False
        self.error: BaseException | None = None
        self.stats: LiveStats | None = None
        self.counters = Counters()
        self.on_failure: Callable[[], None] = lambda: None
        self._kept_from: int | None = None  # the oldest kept row's event time, once seen
        self._thread = threading.Thread(target=self._main, name="sopkit-live-loop",
                                        daemon=True)

    @property
    def position(self) -> int:
        """The seq of the last inbox row whose decisions are committed."""
        return self.live.offset

    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Apply what the inbox holds, commit, stop the loop (waits for it)."""
        self.shutdown = True
        self.wake.set()
        self._thread.join(timeout)

    def _main(self) -> None:
        o = self.options
        try:
            self.stats = run_live(self.live, events=SOURCE, follow=True, once=False,
                                  clock=o.clock, lateness=o.lateness,
                                  dispatcher=self.dispatcher, quarantine=self.jail,
                                  batch=o.batch, tick=o.tick, stop=self.stopper,
                                  max_future=o.max_future, records=self._records,
                                  max_wait=o.max_wait)
        except BaseException as exc:  # reported by readyz and the exit code; logged here
            self.error = exc
            log.error("the live loop stopped: %s", mask_text(str(exc)))
            self.on_failure()

    def _records(self, idle: Callable[[], None]) -> Iterator[Record | BadRecord]:
        """The inbox rows after the committed position, waiting for more when none."""
        after = self.live.offset
        while True:
            rows = self.inbox.read(after, READ_ROWS)
            for row in rows:
                after = row.seq
                if row.reason is None:
                    yield Record(row.seq, _json.loads(row.record))  # json.loads, faster
                else:
                    yield BadRecord(row.seq, row.record, row.reason, _kind(row.reason))
            if len(rows) == READ_ROWS:  # a steady stream: keep the table short meanwhile
                self._prune()
            if rows:
                continue
            if self.shutdown:  # drained: run_live commits and returns
                self.stopper.requested = True
                return
            idle()  # commits what was read, lets time pass, dispatches what is due
            self._prune()
            woken = self.wake.wait(self.options.tick)
            self.wake.clear()
            if woken and not self.shutdown:  # let the requests of a burst gather: one cycle
                time.sleep(GATHER_S)  # applies, commits and delivers them all

    def _prune(self) -> None:
        """Delete the applied rows, unless they are kept as the history (`--history`); then
        those older than `--history-keep`."""
        if not self.options.history:
            self.inbox.prune(self.live.offset)
        elif self.options.keep is not None:
            self._expire(self.options.clock() - self.options.keep)

    def _expire(self, before: int) -> None:
        """Delete kept rows whose event time is before `before`, a batch at a time (a short
        transaction each) and a few batches per call, so the loop soon goes back to applying;
        remembers the time of the row that stopped the walk, so that an idle tick with
        nothing to delete reads nothing."""
        if self._kept_from is not None and self._kept_from >= before:
            return
        for _ in range(EXPIRE_BATCHES):
            gone, stop = self.inbox.expire(self.live.offset, before, self._event_time,
                                           EXPIRE_ROWS)
            self._kept_from = stop
            if gone:
                log.info("deleted %d kept records before %s (--history-keep)", gone,
                         self.live.runtime.calendar.format(before))
            if gone < EXPIRE_ROWS:
                return

    def _event_time(self, row: Row) -> int | None:
        """A kept row's event time (its `ts`), None when it has none readable."""
        try:
            ts = _json.loads(row.record).get("ts")
            return self.live.runtime.calendar.parse_ts(ts) if isinstance(ts, str) else None
        except (ValueError, AttributeError):
            return None


class FlushedQuarantine(Quarantine):
    """The loop's quarantine file, flushed at each record so GET /v1/quarantine sees it."""

    def add(self, source: str, line: int, reason: str, record: Any, kind: str = "") -> None:
        if isinstance(record, str):  # an inbox row's JSON text: kept as the object it is
            with contextlib.suppress(ValueError):
                record = json.loads(record)
        super().add(source, line, reason, record, kind)
        if self._file is not None:
            self._file.flush()


def _kind(reason: str) -> str:
    """The quarantine summary group of an ingest-time reason (its text before the name)."""
    return reason.split(" '")[0].split(" \"")[0]


def status_lines(loop: ServedLoop, inbox: Inbox, wall: int) -> list[str]:
    """The Prometheus text exposition of /metrics."""
    waiting, oldest = inbox.waiting(loop.position)
    counts = inbox.outbox_counts()
    lines = ["# HELP sopkit_events_accepted_total Records committed to the inbox (202).",
             "# TYPE sopkit_events_accepted_total counter"]
    with loop.counters.lock:
        accepted = dict(loop.counters.accepted)
        refused = dict(loop.counters.refused)
    for endpoint, n in sorted(accepted.items()):
        lines.append(f'sopkit_events_accepted_total{{endpoint="{endpoint}"}} {n}')
    lines += ["# HELP sopkit_requests_refused_total Requests answered 4xx, by status.",
              "# TYPE sopkit_requests_refused_total counter"]
    for status, n in sorted(refused.items()):
        lines.append(f'sopkit_requests_refused_total{{status="{status}"}} {n}')
    lines += ["# HELP sopkit_events_quarantined_total Records the loop quarantined (this "
              "process).", "# TYPE sopkit_events_quarantined_total counter",
              f"sopkit_events_quarantined_total {loop.jail.count}",
              "# HELP sopkit_inbox_depth Accepted records not yet applied.",
              "# TYPE sopkit_inbox_depth gauge", f"sopkit_inbox_depth {waiting}",
              "# HELP sopkit_loop_lag_seconds Age of the oldest record not yet applied.",
              "# TYPE sopkit_loop_lag_seconds gauge",
              f"sopkit_loop_lag_seconds {max(wall - oldest, 0) if oldest else 0}",
              "# HELP sopkit_loop_up Whether the live loop runs.",
              "# TYPE sopkit_loop_up gauge", f"sopkit_loop_up {int(loop.alive())}",
              "# HELP sopkit_actions Outbox rows by status.", "# TYPE sopkit_actions gauge"]
    from sopkit._live.store import STATUSES

    for status in STATUSES:
        lines.append(f'sopkit_actions{{status="{status}"}} {counts.get(status, 0)}')
    depth = counts.get("pending", 0) + counts.get("leased", 0)
    lines += ["# HELP sopkit_outbox_depth Outbox rows waiting to be delivered.",
              "# TYPE sopkit_outbox_depth gauge", f"sopkit_outbox_depth {depth}"]
    return lines
