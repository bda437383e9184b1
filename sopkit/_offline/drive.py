"""The one clock driver of offline runs (`simulate`, `--report`, `explain`).

It reads profiles then events in file order, quarantines what cannot be applied (with the
record's line and reason), and moves the runtime's virtual clock: a day at a time up to each
event, so a quiet month or the months after the last event never hold their actions in memory
at once, and to the end. The wake-ups run in the same order as in one jump, so every offline
view of a history sees the same run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sopkit._errors import EventError
from sopkit._io import BadRecord, Record, read_records
from sopkit._lang.clock import too_far_ahead
from sopkit._runtime.records import Action
from sopkit._runtime.runtime import Runtime, in_time

# seconds an event may be stamped before the clock and still count, at the clock, in the
# commands that replay a history (run's and serve's --lateness default too: docs/live.md)
LATENESS = 60

# (file, line, reason, record, kind) of a record left out
Quarantined = Callable[[str, int, str, Any, str], None]
Progress = Callable[[str, int, int], None]
Event = tuple[str, str, int, dict[str, Any]]
# what a partition is fed (run_fed): another's event's time, a refused event's, or its own
Fed = int | tuple[int] | Event
_NEVER = -(1 << 62)  # an instant before any: nothing is quiet before it


@dataclass
class Counts:
    """What the driver read and applied."""

    profiles: int = 0
    events_read: int = 0
    events_applied: int = 0
    events_after_end: int = 0


class Driver:
    """Drives `runtime` over a history: `emit` gets every batch of actions in order,
    `quarantine` every record left out. `before_event(event, line)` runs once the clock has
    reached an event's instant (the wake-ups before it have run), before it is applied; apply
    may still refuse it (out of order, a duplicate event_id) and then `quarantine` hears of
    the same line. `sample(runtime)` (the report's) runs at the last second of every
    playbook day that ends before the next event or the end."""

    def __init__(self, runtime: Runtime, *, emit: Callable[[list[Action]], None],
                 quarantine: Quarantined, end_ts: int | None = None,
                 max_future: int | None = None, lateness: int = 0,
                 progress: Progress | None = None,
                 before_event: Callable[[Event, int], None] | None = None,
                 sample: Callable[[Runtime], None] | None = None, split: bool = False,
                 skip: Callable[[int], None] | None = None) -> None:
        self.runtime = runtime
        self.emit = emit
        self.quarantine = quarantine
        self.end_ts = end_ts
        self.max_future = max_future
        self.lateness = lateness  # an event this much before the clock is applied at it
        self.late: int | None = None  # the time the event being applied was stamped, if late
        self.progress = progress
        self.before_event = before_event
        self.sample = sample
        self.split = split  # the clock moves to an event as a step of its own (partitions)
        self.skip = skip  # counts this many steps that emit nothing (run_fed), if given
        self.first: int | None = None  # the first event's time, once the clock starts
        self.counts = Counts()
        self._sample_at: int | None = None  # the end of the next day `sample` sees
        self._day: tuple[int, int] | None = None  # the clock's day: its start, the next's

    def run(self, events: Path | Iterable[Record | BadRecord], profiles: Path | None = None,
            source: str | None = None) -> Counts:
        """Profiles, then events (a file, or records read elsewhere, named `source` in the
        quarantine), each applied or quarantined; then on to the end, if any."""
        runtime = self.runtime
        self._profiles(profiles)
        if isinstance(events, Path):
            items: Iterable[Record | BadRecord] = read_records(
                events, _tick(self.progress, "events", events.stat().st_size))
        else:
            items = events
        name = str(events) if isinstance(events, Path) else source or "records"
        for item in items:
            self.counts.events_read += 1
            if isinstance(item, BadRecord):
                self.quarantine(name, item.line, item.reason, item.raw, item.kind)
                continue
            try:
                self._event(runtime.parse_event(item.data), item.line)
            except EventError as exc:
                self.quarantine(name, item.line, str(exc), item.data, exc.kind)
        return self._finish()

    def _profiles(self, profiles: Path | None) -> None:
        runtime = self.runtime
        if profiles is not None:
            size = profiles.stat().st_size
            for item in read_records(profiles, _tick(self.progress, "profiles", size)):
                if isinstance(item, BadRecord):
                    self.quarantine(str(profiles), item.line, item.reason, item.raw, item.kind)
                    continue
                try:
                    runtime.add_profile(item.data)
                    self.counts.profiles += 1
                except EventError as exc:
                    self.quarantine(str(profiles), item.line, str(exc), item.data, exc.kind)

    def _finish(self) -> Counts:
        """On to the end, if any, and the last sample."""
        runtime = self.runtime
        if self.end_ts is not None:
            self.catch_up(self.end_ts)
            self.emit(runtime.advance_ts(self.end_ts))
        if self.sample is not None:
            self.sample(runtime)
        return self.counts

    def run_fed(self, feed: Iterable[list[Fed]], profiles: Path | None = None) -> Counts:
        """`run` on the events another process read and checked (feed.py): each item is the
        time of an event of another partition's customer (the clock and the step numbering
        move as for it), `(ts,)` for a refused event (the clock only catches up to it, as
        `run` does before refusing it), or an event of this partition's to apply (an event
        of one of its customers, or a staff event). A batch comes whole; the feed raises
        InputError where reading the history did. `counts` stay 0 (the feeder counts)."""
        runtime = self.runtime
        self._profiles(profiles)
        catch_up, emit = self.catch_up, self.emit
        skip = self.skip
        quiet = _NEVER  # an event of another's before this instant only moves the clock
        for batch in feed:
            for item in batch:
                if isinstance(item, int):
                    if item < quiet and skip is not None:  # as the three lines below
                        runtime.coordinator.pass_to(item)
                        skip(2)
                        continue
                    catch_up(item)
                    emit(runtime.advance_ts(item))
                    emit([])
                elif len(item) == 1:
                    catch_up(item[0])
                else:
                    catch_up(item[2])
                    emit(runtime.advance_ts(item[2]))
                    emit(runtime._apply_checked(item))
                quiet = min(runtime.coordinator.quiet_until(), self._quiet_until())
        return self._finish()

    def _quiet_until(self) -> int:
        """`catch_up(ts)` does nothing for a `ts` before this instant (a lower bound)."""
        now = self.runtime.now_ts
        if now is None:
            return _NEVER
        day = self._day
        if day is None or not day[0] <= now < day[1]:
            return _NEVER
        if self.sample is not None:  # the samples' days first, then the clock's
            return _NEVER if self._sample_at is None else min(self._sample_at, day[1] + 1)
        return day[1] + 1

    def _event(self, event: Event, line: int) -> None:
        runtime = self.runtime
        self.late = None
        if self.lateness:
            stamped = event[2]
            event = in_time(event, runtime.now_ts, self.lateness)
            if event[2] != stamped:
                self.late = stamped
        ts = event[2]
        ahead = too_far_ahead(runtime.calendar, ts, runtime.now_ts, self.max_future)
        if ahead is not None:
            raise EventError(ahead, "too far in the future")
        if self.end_ts is not None and ts > self.end_ts:
            self.counts.events_after_end += 1
            return
        self.catch_up(ts)  # nothing to do for an event out of order: apply refuses it
        if self.split:
            refused = runtime._refusal(event)  # as apply would, before the clock moves
            if refused is not None:
                raise refused
        if self.split or (self.before_event is not None
                          and (runtime.now_ts is None or ts >= runtime.now_ts)):
            self.emit(runtime.advance_ts(ts))  # the wake-ups apply would run first
        if self.before_event is not None:
            self.before_event(event, line)
        # split: checked and the clock moved, nothing ran since
        self.emit(runtime._apply_checked(event) if self.split else runtime.apply(event))
        self.counts.events_applied += 1

    def catch_up(self, ts: int) -> None:
        """Run the wake-ups before `ts` a day at a time, emitting each day's actions as it
        passes (with `sample`, stopping first at the last second of every day that ends by
        `ts`). This is the only place an offline run moves the clock."""
        runtime = self.runtime
        cal = runtime.calendar
        if self.sample is not None:
            if runtime.now_ts is None:  # `ts` is the first event's time
                self.first = self.first or ts
                return
            day_end = self._sample_at or cal.day_start(cal.day_index(runtime.now_ts) + 1)
            while day_end <= ts:
                self.emit(runtime.advance_ts(day_end - 1))
                self.sample(runtime)
                day_end = cal.day_start(cal.day_index(day_end) + 1)
            self._sample_at = day_end
        while (now := runtime.now_ts) is not None:
            day = self._day
            if day is None or not day[0] <= now < day[1]:  # the clock's day, remembered
                day = self._day = (cal.day_start(cal.day_index(now)),
                                   cal.day_start(cal.day_index(now) + 1))
            if day[1] >= ts:
                return
            self.emit(runtime.advance_ts(day[1]))


def _tick(progress: Progress | None, label: str, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress(label, done, total)
