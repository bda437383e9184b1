"""The live loop behind `sopkit run` and `sopkit dry-run`.

Events are applied by the same Runtime (and so the same policy pipeline) that `simulate`
uses; only the clock and the channels differ. After each batch of events, the changed
customers' state, the position in the input and the new outbox rows are committed in one
transaction; then the dispatcher delivers what is due. A crash loses nothing: on restart
the input resumes after the last committed position, replaying a partly applied batch
gives the same idempotency keys, and the store's UNIQUE key turns them into no-ops.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sopkit._errors import EventError, SopkitError, UsageError
from sopkit._io import (
    TRUNCATED,
    BadRecord,
    InputError,
    Quarantine,
    Record,
    _csv_records,
    _jsonl_records,
    read_records,
    record_format,
)
from sopkit._lang.clock import too_far_ahead
from sopkit._live.cache import CustomerCache, cache_size
from sopkit._live.dispatch import Dispatcher
from sopkit._live.outbox import outbox_rows
from sopkit._live.store import OutboxRow, Store
from sopkit._playbook.load import LoadedPlaybook
from sopkit._runtime.observe import TagLog
from sopkit._runtime.runtime import Action, Runtime, json_value
from sopkit.channels import (
    Channel,
    ChannelConfigError,
    Message,
    TransferOutcome,
    TransferResults,
    build,
)
from sopkit.channels._registry import mirrored_tags

MIRROR_RULE = "mirror_tags"


class StoreMismatch(SopkitError):
    """The store was written by another playbook, or by this one before it changed."""

    exit_code = 2


@dataclass
class LiveStats:
    """What one `run` did, for its summary line and `--output jsonl`."""

    events_read: int = 0
    events_applied: int = 0
    events_skipped: int = 0
    quarantined: int = 0
    rows_new: int = 0
    commits: int = 0
    customers: int = 0
    dispatched: dict[str, int] = field(default_factory=dict)
    disabled: dict[str, str] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fingerprint(ir: Mapping[str, Any]) -> str:
    """A short hash of the compiled playbook: a store refuses a changed playbook."""
    text = json.dumps(ir, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tag_mirrors(loaded: LoadedPlaybook) -> dict[str, frozenset[str]]:
    """{channel: the tags it mirrors} for the playbook's channels whose type is a TagMirror
    (the wecom channel mirrors its `tag_ids`). A type not installed mirrors nothing here:
    `run` refuses it when it builds the channels."""
    mirrors: dict[str, frozenset[str]] = {}
    for name, channel in loaded.model.channels.items():
        try:
            tags = frozenset(mirrored_tags({"type": channel.type,
                                            **(channel.model_extra or {})}))
        except ChannelConfigError:
            continue
        if tags:
            mirrors[name] = tags
    return mirrors


def mirror_rows(loaded: LoadedPlaybook, runtime: Runtime, log: TagLog,
                mirrors: Mapping[str, Collection[str]] | None = None) -> list[OutboxRow]:
    """Outbox rows that mirror tag changes to the channels that mirror the tag (`mirrors`,
    default `tag_mirrors(loaded)`): a `tag` or `untag` row each; drains `log` (the runtime's
    observer of tag changes)."""
    if not log:
        return []
    if mirrors is None:
        mirrors = tag_mirrors(loaded)
    rows: list[OutboxRow] = []
    for customer_id, tag, held, now, seq in log:
        cs = runtime.customers.get(customer_id)
        for channel, tags in mirrors.items():
            if tag not in tags:
                continue
            kind = "tag" if held else "untag"
            key = f"{runtime.pk}:mirror:{channel}:{customer_id}:{seq}"
            message = Message(key=key, kind=kind, channel=channel, customer_id=customer_id,
                              rule=MIRROR_RULE, time=runtime.calendar.format(now),
                              body={"tag": tag},
                              contact={k: json_value(v, exact=True)  # by name (outbox.py)
                                       for k, v in sorted((cs.profile if cs else {}).items())},
                              owner=cs.owner if cs else None)
            rows.append(OutboxRow(key=key, playbook=runtime.pk, customer_id=customer_id,
                                  rule=MIRROR_RULE, kind=kind, channel=channel,
                                  status="pending", due_at=now, created_at=now,
                                  message=message.to_json()))
    log.clear()
    return rows


def build_channels(loaded: LoadedPlaybook, env: Mapping[str, str],
                   only: set[str] | None = None) -> dict[str, Channel]:
    """Every channel the playbook declares (or those in `only`), built from the environment."""
    out: dict[str, Channel] = {}
    for name, channel in loaded.model.channels.items():
        if only is not None and name not in only:
            continue
        table = {"type": channel.type, **(channel.model_extra or {})}
        out[name] = build(name, table, env)
    return out


CLOCK_MODE = "clock.mode"
CLOCK_AT = "clock.at"


def record_clock(store: Store, fixed: int | None) -> None:
    """Remember how `run` tells time: `clock.mode` "fixed" with `clock.at` the instant
    (unix seconds) of `run --clock`, or "system"; `dry-run` and `outbox retry` follow it."""
    meta = {CLOCK_MODE: "system"} if fixed is None else {CLOCK_MODE: "fixed",
                                                          CLOCK_AT: str(fixed)}
    store.commit({}, meta, [])


def stored_clock(store: Store) -> int | None:
    """The fixed instant the store's last `run --clock` ran at; None on the system clock."""
    if store.get_meta(CLOCK_MODE) != "fixed":
        return None
    text = store.get_meta(CLOCK_AT) or ""
    return int(text) if text.lstrip("-").isdigit() else None


log = logging.getLogger("sopkit.live")


class LiveRun:
    """A Runtime restored from a store, fed events, committing after each batch.

    `cache_customers`: how many customers to hold (None: the default bound; 0: all of them,
    read at start); the others are read from the store when needed (cache.py)."""

    def __init__(self, loaded: LoadedPlaybook, store: Store, *, engine: str,
                 cache_customers: int | None = None) -> None:
        self.loaded = loaded
        self.store = store
        self.runtime = Runtime(loaded, engine=engine)
        self.fingerprint = fingerprint(self.runtime.ir)
        self.tag_log = TagLog()  # tag changes, mirrored where a channel mirrors the tag
        self.runtime.observe(self.tag_log, "tag")
        self.mirrors = tag_mirrors(loaded)
        self.fresh = check_store(self.store, self.runtime, self.fingerprint, loaded)
        self.cache = CustomerCache(self.runtime, store,
                                   cache_size(self.runtime, cache_customers), fresh=self.fresh)
        self.runtime.restore(self._clock_blob(),
                             () if self.cache.bounded else store.load_customers())
        offset = store.get_meta("input.line")
        self.offset = int(offset) if offset else 0
        self.source = store.get_meta("input.source")
        send_from = store.get_meta("send_from")
        # actions due before this instant are recorded as `backfilled`, never sent (go-live)
        self.send_from: int | None = int(send_from) if send_from else None
        # where the system clock last moved the runtime's clock (run_live): an event before
        # it is refused, as a replay of the kept history cannot know where ticks fell; an
        # event behind only the events before it is applied at the clock (docs/live.md).
        # A store from before it was kept: its restored clock
        ticked = store.get_meta("clock.ticked")
        self.runtime._late_floor = int(ticked) if ticked else self.runtime.now_ts
        self.lateness: int | None = None  # run_live's
        self._ir_saved = not self.fresh
        self._calendar_noted: set[str] = set()  # holiday years warned about (docs/calendar.md)

    def screen_consent(self, row: OutboxRow, now: int) -> tuple[str, str] | None:
        """A dispatcher screen: a message whose customer opted out since it was planned
        (while it waited for quiet hours, a retry or its delay) is suppressed, not sent."""
        return self.runtime.consent_screen(row, now)

    def _clock_blob(self) -> bytes | None:
        text = self.store.get_meta("runtime")
        return text.encode() if text else None

    def commit(self, actions: list[Action], offset: int | None = None,
               source: str | None = None, *, dispatcher: Dispatcher | None = None,
               due_by: int | None = None) -> int:
        """Write touched customers, the clock, the input position and the rows, atomically;
        with `dispatcher`, the new rows due by `due_by` leased to it (`Dispatcher.lease_new`:
        its next pass, which the caller runs at once, sends them without a claim)."""
        rt = self.runtime
        for note in rt.holidays.notes():  # once per year the holiday data does not cover
            if note not in self._calendar_noted:
                self._calendar_noted.add(note)
                log.warning("%s", note)
        touched = sorted(rt.take_touched())
        customers = {cid: rt.dump_customer(cid) for cid in touched}
        wakes = {cid: rt.customers[cid].wake_at for cid in touched}
        meta = {"playbook": rt.pk, "fingerprint": self.fingerprint,
                "runtime": rt.dump_clock().decode()}
        if not self._ir_saved:  # what `sopkit migrate` compares the next version with
            meta["ir"] = json.dumps(rt.ir, ensure_ascii=False, sort_keys=True, default=str)
            self._ir_saved = True
        if self.send_from is not None:
            meta["send_from"] = str(self.send_from)
        if rt._late_floor is not None:
            meta["clock.ticked"] = str(rt._late_floor)
        if self.lateness is not None:  # what a replay of the kept history applies
            meta["lateness"] = str(self.lateness)
        if offset is not None:
            meta["input.line"] = str(offset)
            self.offset = offset
        if source is not None:
            meta["input.source"] = source
            self.source = source
        # a hand-over moves the customer's pending rows (tasks, deferred sends) in the same
        # transaction, including rows this batch adds before the hand-over
        moved = {a.customer_id: str(a.details["to"]) for a in actions
                 if a.action == "reassign" and a.status == "planned" and a.details.get("to")}
        rows = backfill(outbox_rows(rt, actions) + mirror_rows(self.loaded, rt, self.tag_log,
                                                                self.mirrors),
                        self.send_from, rt)
        if dispatcher is not None and due_by is not None:  # not a customer handed over now:
            # its pending rows are pointed at the new owner in the commit
            dispatcher.lease_new([r for r in rows if r.customer_id not in moved], due_by)
        new = self.store.commit(customers, meta, rows, moved, wakes=wakes)
        self.cache.committed(touched)
        if dispatcher is not None:
            dispatcher.adopt(rows)
        return new

    def customer_count(self) -> int:
        """The customers of this run: in the store (all committed) when some are not held."""
        return self.store.count_customers() if self.cache.bounded else \
            len(self.runtime.customers)


def backfill(rows: list[OutboxRow], send_from: int | None, rt: Runtime) -> list[OutboxRow]:
    """Rows due before `send_from` become `backfilled`: recorded, counted by max_times,
    cooldowns and caps as if sent (the runtime did), never sent (docs/live.md#going-live)."""
    if send_from is None:
        return rows
    reason = f"backfilled: due before --send-from {rt.calendar.format(send_from)}"
    for row in rows:
        if row.status == "pending" and row.due_at < send_from:
            row.status = "backfilled"
            row.reason = reason
            row.settled_at = row.created_at
    return rows


def check_store(store: Store, runtime: Runtime, fingerprint_: str,
                loaded: LoadedPlaybook) -> bool:
    """True for a new store; StoreMismatch (exit 2) for a store of another playbook, of
    another version (`sopkit migrate` deploys it), or of this version changed."""
    name = store.get_meta("playbook")
    if name is None:
        return True
    here = runtime.pk
    if name.split(":")[0] != here.split(":")[0]:
        raise StoreMismatch(f"{store.url} belongs to playbook '{name}', not "
                            f"'{here}'; use another --store")
    if name != here:
        raise StoreMismatch(
            f"{store.url} runs version {name.split(':', 1)[1]} of playbook "
            f"'{here.split(':')[0]}', this file is version {runtime.ir['version']}; deploy it "
            f"first (customers in flight keep their state):\n  sopkit migrate "
            f"{loaded.path} --store {store.url} --plan\n  sopkit migrate {loaded.path} "
            f"--store {store.url}")
    if store.get_meta("fingerprint") != fingerprint_:
        raise StoreMismatch(
            f"the playbook '{here}' changed since {store.url} was written, but its "
            "version did not; bump [playbook].version and deploy it with `sopkit migrate` "
            "so new actions get new keys")
    return False


def follow_lines(stream: IO[bytes], stop: Callable[[], bool], poll: float,
                 follow: bool, idle: Callable[[], None] | None = None
                 ) -> Iterator[tuple[int, str]]:
    """(line number, text) of each complete line; with `follow`, wait for more at the end,
    calling `idle` before each wait (the live loop commits, lets time pass, dispatches)."""
    number = 0
    partial = b""
    while True:
        chunk = stream.readline()
        if chunk:
            partial += chunk
            if not partial.endswith(b"\n"):
                continue  # a line still being written
            number += 1
            yield number, partial.decode("utf-8", "replace")
            partial = b""
            continue
        if not follow or stop():
            if partial:
                number += 1
                yield number, partial.decode("utf-8", "replace")
            return
        if idle is not None:
            idle()
        time.sleep(poll)


def records_from(source: str, *, follow: bool, stop: Callable[[], bool],
                 poll: float = 0.5, idle: Callable[[], None] | None = None
                 ) -> Iterator[Record | BadRecord]:
    """Records of a file (JSONL/CSV, .gz unless following) or of stdin (`-`)."""
    if source == "-":
        lines = follow_lines(sys.stdin.buffer, stop, poll, follow=False)
        yield from _jsonl_records(lines, [])
        return
    path = Path(source)
    if not path.exists():
        raise UsageError(f"--events {source}: no such file")
    if not follow:
        yield from read_records(path)
        return
    if path.suffix.lower() in (".gz", ".parquet"):
        raise UsageError(f"--follow reads a growing plain file; a {path.suffix} file cannot grow")
    with path.open("rb") as stream:
        lines = follow_lines(stream, stop, poll, follow=True, idle=idle)
        if record_format(path) == "csv":
            yield from _csv_records(lines, [])
        else:
            yield from _jsonl_records(lines, [])


class Stopper:
    """SIGINT/SIGTERM ask the loop to stop after the current batch (a second one kills)."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> Callable[[], None]:
        """Handle SIGINT/SIGTERM; return a function that puts the old handlers back."""
        old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in old.items():
                signal.signal(sig, handler)

        return restore

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self) -> bool:
        return self.requested


def drain(live: LiveRun, dispatcher: Dispatcher, now: int, stats: LiveStats,
          limit: int = 1000) -> None:
    """Dispatch what is due at `now` until nothing more is (or `limit` rounds)."""
    for _ in range(limit):
        result = dispatcher.run_once(now)
        for name, count in (("delivered", result.delivered), ("retried", result.retried),
                            ("dead", result.dead)):
            stats.dispatched[name] = stats.dispatched.get(name, 0) + count
        stats.disabled.update(result.disabled)
        if result.claimed == 0:
            return


def run_live(live: LiveRun, *, events: str | None, follow: bool, once: bool,
             clock: Callable[[], int], lateness: int, dispatcher: Dispatcher,
             quarantine: Quarantine, batch: int, tick: float, stop: Stopper,
             profiles: Path | None = None, max_future: int | None = None,
             records: Callable[[Callable[[], None]], Iterable[Record | BadRecord]] | None = None,
             max_wait: float | None = None) -> LiveStats:
    """Apply events (resuming after the stored position), advance time, dispatch.

    `records`, given the loop's idle step, replaces reading the file `events`, which then
    only names the source (`sopkit serve` reads its inbox, a record's `line` its seq).

    An event more than `max_future` seconds ahead of `clock()` is quarantined, so a typo'd
    year cannot move the clock past every later event. A .gz input that ends early raises
    InputError after the lines before the break are committed.

    Commits: whenever the input has nothing more to read (so at a low rate each record is
    committed as soon as it is applied), and under a backlog after `batch` records or, with
    `max_wait`, once the oldest uncommitted record was read that many seconds ago, whichever
    comes first (group commit: one transaction, one disk sync, for many records).
    """
    rt = live.runtime
    rt.lateness = live.lateness = lateness  # a late event (up to this) is applied at the clock
    stats = LiveStats()
    if profiles is not None and live.fresh:
        for item in read_records(profiles):
            if isinstance(item, BadRecord):
                quarantine.add(str(profiles), item.line, item.reason, item.raw, item.kind)
                continue
            try:
                rt.add_profile(item.data)
            except EventError as exc:
                quarantine.add(str(profiles), item.line, str(exc), item.data, exc.kind)
        live.commit([])
    if events == "-":
        # stdin has no position to resume at: the producer resends from where it stopped,
        # and events older than the stored clock are quarantined as out of order
        live.offset = 0
    elif events is not None and live.source not in (None, "-", events) and live.offset:
        raise UsageError(f"this store was reading {live.source} (line {live.offset}); "
                         f"to switch to {events}, use a new --store")
    pending: list[Action] = []
    position = live.offset
    since = 0
    first = 0.0  # when the oldest record not yet committed was read (time.monotonic)

    def flush(due_by: int | None = None) -> None:
        """Commit; with `due_by`, hand the rows due by then to the dispatcher (drain next)."""
        nonlocal pending, since
        stats.rows_new += live.commit(pending, position, events,
                                      dispatcher=None if due_by is None else dispatcher,
                                      due_by=due_by)
        stats.commits += 1
        pending = []
        since = 0

    def idle() -> None:
        """Nothing to read: commit what was read, let time pass, deliver what is due."""
        now = clock()
        moves = rt.now_ts is None or now - lateness > rt.now_ts
        if since:  # when time passes next, which may take long, its rows are claimed in
            flush(None if moves else now)  # the drain; else they are leased now: no claim
        if moves:
            pending.extend(rt.advance_ts(now - lateness))
            rt._late_floor = rt.now_ts  # the system clock moved it: kept with the commit
            flush(now)
        drain(live, dispatcher, now, stats)

    if events is not None:
        items = records(idle) if records is not None else \
            records_from(events, follow=follow, stop=stop, poll=tick, idle=idle)
        try:
            for item in items:
                line = item.line
                if isinstance(item, BadRecord) and item.kind == TRUNCATED:
                    continue  # read again, whole, from the complete file: the position stays
                if line <= live.offset:
                    stats.events_skipped += 1
                    continue
                stats.events_read += 1
                if isinstance(item, BadRecord):
                    quarantine.add(events, line, item.reason, item.raw, item.kind)
                else:
                    try:
                        event = rt.parse_event(item.data)
                        ahead = too_far_ahead(rt.calendar, event[2], clock(), max_future)
                        if ahead is not None:
                            raise EventError(ahead, "too far in the future")
                        pending.extend(rt.apply(event))
                        stats.events_applied += 1
                    except EventError as exc:
                        quarantine.add(events, line, str(exc), item.data, exc.kind)
                position = max(position, line)
                if not since:
                    first = time.monotonic()
                since += 1
                if since >= batch or (max_wait is not None
                                      and time.monotonic() - first >= max_wait):
                    now = clock()
                    flush(now)
                    drain(live, dispatcher, now, stats)
                if stop():
                    break
        except InputError:
            flush()  # what was read before the break stays applied, its position committed
            raise
        flush()
    while True:
        idle()
        if once or stop():
            break
        time.sleep(tick)
    stats.quarantined = quarantine.count
    stats.customers = live.customer_count()
    stats.outbox = live.store.counts()
    return stats


@dataclass
class HandoverLine:
    """One customer of a staff hand-over, and whether the successor has them yet."""

    customer_id: str
    from_owner: str
    to: str | None
    outbox: str
    platform: str
    taken_over: bool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def handover_status(store: Store, channels: Mapping[str, Any]) -> list[HandoverLine]:
    """Every hand-over the store recorded, with the far side's word where its channel has
    TransferResults (WeCom's transfer_result), asked once per (channel, from, to).

    A customer counts as taken over when its row was delivered and, on such a channel, the
    channel says the transfer is done (WeCom: 接替完毕). Anything else is listed as not yet.
    """
    rows = sorted((r for r in store.rows(None) if r.kind == "reassign"),
                  key=lambda r: (r.created_at, r.customer_id))
    asked: dict[tuple[str, str, str], list[OutboxRow]] = {}
    for row in rows:
        body = row.message.get("body", {})
        if row.channel and body.get("to") and \
                isinstance(channels.get(row.channel), TransferResults):
            group = (row.channel, str(body.get("from_owner") or ""), str(body["to"]))
            asked.setdefault(group, []).append(row)
    outcomes: dict[str, TransferOutcome] = {}
    for (name, source, to), group_rows in asked.items():
        outcomes.update(zip((r.key for r in group_rows),
                            _transfer_outcomes(channels[name], source, to, group_rows),
                            strict=True))
    lines: list[HandoverLine] = []
    for row in rows:
        body = row.message.get("body", {})
        to = body.get("to")
        done = row.status == "delivered"
        platform = "-"
        outcome = outcomes.get(row.key)
        if outcome is not None:
            platform = outcome.detail
            done = done and outcome.done
        lines.append(HandoverLine(row.customer_id, str(body.get("from_owner") or ""),
                                  None if to is None else str(to), row.status, platform, done))
    return lines


def _transfer_outcomes(channel: TransferResults, source: str, to: str,
                       rows: Sequence[OutboxRow]) -> list[TransferOutcome]:
    """The channel's word on each row's transfer; its error, on each row, if it fails."""
    try:
        outcomes = channel.transfer_outcomes(source, to,
                                             [Message.from_json(r.message) for r in rows])
    except Exception as exc:  # reported per customer; the other hand-overs still show
        return [TransferOutcome(False, f"transfer result not available: {exc}")] * len(rows)
    if len(outcomes) != len(rows):
        return [TransferOutcome(False, f"the channel answered {len(outcomes)} transfer "
                                f"outcomes for {len(rows)} customers")] * len(rows)
    return list(outcomes)
