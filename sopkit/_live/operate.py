"""What the operate commands and `sopkit serve`'s operate endpoints share: one implementation.

`sopkit outbox retry`, `campaign preview --store`, `dry-run`, `handover status` and
`explain` (over a served store's kept inbox) call these plain functions, and so do
`POST /v1/outbox/{id}/retry`, `GET /v1/campaigns/{name}/preview`, `GET /v1/dry-run`,
`GET /v1/handover` and `GET /v1/customers/{id}/timeline`. They take a store and return plain
data; masking and printing stay with the caller. A refusal is a UsageError: `NotFound`
(HTTP 404) or `Conflict` (HTTP 409), else a bad argument (HTTP 400); the CLI exits 2.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sopkit import _json  # json.loads, exactly, faster
from sopkit._errors import UsageError, did_you_mean
from sopkit._io import Record
from sopkit._live.dispatch import expiry
from sopkit._live.inbox import HISTORY, HISTORY_FROM, SOURCE, Inbox
from sopkit._live.loop import (
    HandoverLine,
    LiveRun,
    backfill,
    build_channels,
    handover_status,
    mirror_rows,
    stored_clock,
)
from sopkit._live.outbox import outbox_rows
from sopkit._live.store import OutboxRow, Store
from sopkit._mask import mask, mask_key
from sopkit._offline.drive import LATENESS
from sopkit._playbook.load import LoadedPlaybook
from sopkit._runtime.campaigns import (
    Preview,
    audience_sizes,
    past_one_offs,
    preview,
    results,
    store_runtime,
    stored_customers,
)
from sopkit._runtime.runtime import Runtime
from sopkit.channels._capabilities import close_all


def would_dispatch(live: LiveRun, now: int) -> tuple[list[OutboxRow], int]:
    """What a dispatcher would do at `now`: due outbox rows, then wake-ups' new rows.

    A row that would go out keeps its status (`pending`/`leased`); one the dispatcher would
    settle unsent says so: `expired`, `suppressed` (consent withdrawn) or `backfilled`
    (due before --send-from), with the reason. Nothing is written: the runtime advanced
    here is thrown away. Also returns how many rows are pending for later.
    """
    rt = live.runtime
    stored = live.store.rows("pending") + live.store.rows("leased")
    due = [r for r in stored if r.due_at <= now and (r.lease_until or 0) <= now]
    later = sum(1 for r in stored if r.due_at > now)
    fresh: list[OutboxRow] = []
    if rt.now_ts is None or now > rt.now_ts:
        known = {r.key for r in stored}
        rows = backfill(outbox_rows(rt, rt.advance_ts(now))
                        + mirror_rows(live.loaded, rt, live.tag_log, live.mirrors),
                        live.send_from, rt)
        for row in rows:
            if row.key in known or row.status not in ("pending", "backfilled"):
                continue
            if row.due_at <= now:
                fresh.append(row)
            else:
                later += 1
    for row in due + fresh:
        if row.status == "backfilled":
            continue
        verdict = expiry(row, now) or live.screen_consent(row, now)
        if verdict is not None:
            row.status, row.reason = verdict
    due.sort(key=lambda r: (r.due_at, r.key))
    fresh.sort(key=lambda r: (r.due_at, r.key))
    return due + fresh, later


def history_incomplete(store: Store) -> None:
    """Records the served history no longer holds everything (`run --events` feeds others)."""
    if store.get_meta(HISTORY) == "yes" or store.get_meta(HISTORY_FROM):
        store.commit({}, {HISTORY: "no", HISTORY_FROM: ""}, [])


class NotFound(UsageError):
    """What was asked for does not exist (HTTP 404)."""


class Conflict(UsageError):
    """It exists, but its state does not allow this (HTTP 409)."""


def parse_at(loaded: LoadedPlaybook, text: str, what: str = "--at") -> int:
    """An ISO 8601 instant (the playbook's timezone unless it has an offset) as unix seconds."""
    from sopkit._lang.clock import Calendar

    try:
        return Calendar(loaded.model.playbook.timezone).parse(text)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not an ISO 8601 date or time") from None


def utc(seconds: int | None, sep: str = "T") -> str:
    """Unix seconds as UTC: ISO 8601 with Z, or (sep=" ") plain for tables headed UTC."""
    if seconds is None:
        return ""
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return when.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + ("Z" if sep == "T" else "")


# ---- outbox retry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Retried:
    """Dead rows put back to pending: how many, due when, and whether on a replay clock."""

    count: int
    due: int
    replay: bool

    def text(self) -> str:
        if not self.count:
            return "no dead rows to retry"
        when = (f"due at the store's replay clock {utc(self.due)} (`run --clock`)"
                if self.replay else "due now")
        return (f"requeued {self.count} dead row{'s' if self.count != 1 else ''}: pending, "
                f"{when} (the dispatcher of `sopkit run` sends them)")

    def to_json(self) -> dict[str, Any]:
        return {"requeued": self.count, "due_at": self.due, "due": utc(self.due),
                "replay_clock": self.replay}


def retry_dead(store: Store, ids: Sequence[int] | None, wall: Any = time.time,
               see: str = "`sopkit outbox list --status dead`") -> Retried:
    """Put dead rows (the `ids`, or every dead row) back to pending, due now, attempts reset.

    "Now" is the store's replay clock when its loop runs on `--clock`, else `wall()`. NotFound
    if one of the ids is no row, Conflict if one is not dead: then nothing is requeued."""
    if ids:
        found = {row.id: row for row in store.rows(ids=list(ids))}
        missing = [i for i in sorted(set(ids)) if i not in found]
        wrong = [f"row {i} does not exist" if i not in found else
                 f"row {i} is {found[i].status}, not dead"
                 for i in sorted(set(ids)) if i not in found or found[i].status != "dead"]
        if wrong:
            error = NotFound if missing else Conflict
            raise error("; ".join(wrong) + f": nothing was requeued (only dead rows can be "
                        f"retried; see {see})")
    replay = stored_clock(store)
    due = replay if replay is not None else int(wall())
    return Retried(store.requeue(list(ids) if ids else None, "dead", due), due,
                   replay is not None)


# ---- campaign preview ----------------------------------------------------------------------


def check_campaign(loaded: LoadedPlaybook, name: str) -> None:
    """NotFound naming the nearest campaign when the playbook declares none called `name`."""
    names = [c.name for c in loaded.model.campaigns]
    if name not in names:
        hint = did_you_mean(name, names) or ("the playbook declares no [[campaigns]]"
                                             if not names else "")
        raise NotFound(f"unknown campaign '{name}'" + (f"; {hint}" if hint else ""))


def preview_stored(loaded: LoadedPlaybook, store: Store, name: str, when: int, sample: int,
                   engine: str = "native") -> tuple[Preview, Runtime]:
    """Who campaign `name` would reach at `when` over a live store's customers (streamed),
    and each variant's message; with the runtime (its `engine_notice`)."""
    check_campaign(loaded, name)
    runtime = store_runtime(loaded, store, engine)
    return preview(runtime, name, when, stored_customers(store, runtime), sample), runtime


def shown(data: Any, unmasked: bool) -> Any:
    """`data` as a user sees it: phone numbers and e-mails masked unless asked for in full."""
    return data if unmasked else mask(data)


# ---- dry-run -------------------------------------------------------------------------------


def past_campaigns(runtime: Runtime) -> list[str]:
    """Notices for one-off campaigns already behind a restored store's clock."""
    if runtime.now_ts is None:
        return []
    return [f"notice: campaign '{name}' (at {at_text}) is before the store's clock "
            f"{runtime.calendar.format(runtime.now_ts)}: it fired already, or never will"
            for name, at_text in past_one_offs(runtime, runtime.now_ts)]


@dataclass
class DryRun:
    """What would be dispatched at `now` from a store's state; nothing is written."""

    runtime: Runtime
    now: int
    replay: bool  # `now` is the store's replay clock (`run --clock`)
    rows: list[OutboxRow]
    later: int
    upcoming: list[tuple[int, Any]]
    sizes: dict[str, int]
    notices: list[str] = field(default_factory=list)

    @property
    def sending(self) -> list[OutboxRow]:
        return [r for r in self.rows if r.status in ("pending", "leased")]

    def items(self, unmasked: bool) -> Iterator[dict[str, Any]]:
        """One object per row (would go out, or be settled unsent), then per campaign
        firing due within the window: `sopkit dry-run --output jsonl`'s lines."""
        for row in self.rows:
            yield {"key": row.key if unmasked else mask_key(row.key, row.customer_id),
                   "due_at": row.due_at, "status": row.status,
                   "source": "outbox" if row.id is not None else "wake-up",
                   "reason": row.reason, "message": shown(row.message, unmasked)}
        for when, campaign in self.upcoming:
            yield {"source": "campaign", "campaign": campaign.name,
                   "firing": self.runtime.calendar.format(when),
                   "channels": campaign.channels, "audience_now": self.sizes[campaign.name]}


def dry_run(loaded: LoadedPlaybook, store: Store, at: int | None, window: int,
            engine: str = "durable", wall: Any = time.time, given: str = "--at") -> DryRun:
    """Due rows and the wake-ups' new rows at `at` (default: the store's replay clock, else
    `wall()`), and the campaign firings due within `window` seconds after it. `given` names
    the option (or parameter) that sets `at`, in the notice of a replay clock."""
    live = LiveRun(loaded, store, engine=engine)
    rt = live.runtime
    notices = past_campaigns(rt)
    replay = stored_clock(store) if at is None else None
    now = replay if replay is not None else at if at is not None else int(wall())
    if replay is not None:
        notices.append(f"notice: this store runs on a replay clock (`run --clock`): showing "
                       f"{rt.calendar.format(replay)}; give {given} for another time")
    rows, later = would_dispatch(live, now)
    upcoming = rt.campaign_plan.upcoming(now + 1, now + window) if window else []
    sizes = audience_sizes(rt, max(now, rt.now_ts or now)) if upcoming else {}
    return DryRun(rt, now, replay is not None, rows, later, upcoming, sizes, notices)


# ---- handover status -----------------------------------------------------------------------


def handover(loaded: LoadedPlaybook, store: Store,
             environ: Mapping[str, str]) -> list[HandoverLine]:
    """Every hand-over the store recorded and whether the successor has the customer (asks
    the hand-over's channel, e.g. WeCom, once per pair of staff)."""
    spec = loaded.model.handover
    only = {spec.channel} if spec is not None and spec.channel else set()
    channels = build_channels(loaded, environ, only)
    try:
        return handover_status(store, channels)
    finally:
        close_all(channels)


def campaign_results(loaded: LoadedPlaybook, store: Store, names: Sequence[str],
                     environ: Mapping[str, str], *, fetch: bool = True) -> tuple[Any, Any]:
    """`sopkit campaign results` for the campaigns `names`: per firing and channel, outbox rows
    by status and how many were sent (with `fetch`, the campaigns' channels, e.g. WeCom, are
    built from `environ` and asked for their send results), and who was sent to."""
    used = {str(channel) for c in loaded.model.campaigns if c.name in names
            for a in c.actions if (channel := getattr(a, "channel", None))}
    channels = build_channels(loaded, environ, used) if fetch else {}
    try:
        return results(store, list(names), channels, fetch=fetch)
    finally:
        close_all(channels)


# ---- timeline ------------------------------------------------------------------------------


def timeline(loaded: LoadedPlaybook, records: Iterable[Record], customer: str, *,
             at: int | None, send_from: int | None, engine: str = "native",
             lateness: int = LATENESS) -> list[Any]:
    """`sopkit explain`'s entries for one customer over `records` (a served store's kept
    inbox, in the order the loop applied them) up to `at`; NotFound if the records never
    name the customer."""
    from sopkit._lang.clock import Calendar
    from sopkit._offline.explain import explain

    cal = Calendar(loaded.model.playbook.timezone)
    try:
        return explain(loaded, records, customer, engine=engine, lateness=lateness,
                       at=None if at is None else cal.format(at),
                       send_from=None if send_from is None else cal.format(send_from))
    except UsageError as exc:  # the times are ours: only the customer can be unknown
        raise NotFound(str(exc).replace("the events or profiles",
                                        "the store's kept history")) from None


PAGE = 1000  # inbox rows read at a time for a timeline


def refused(quarantine: Path | None) -> set[int]:
    """The inbox rows the served loop quarantined (late, a repeated event_id, ...), by seq:
    the quarantine file's lines from the inbox."""
    if quarantine is None or not quarantine.exists():
        return set()
    found: set[int] = set()
    with quarantine.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:  # a line cut short by a crash: not one of ours to skip
                continue
            if isinstance(item, dict) and item.get("source") == SOURCE and \
                    isinstance(item.get("line"), int):
                found.add(item["line"])
    return found


def kept_history(inbox: Inbox, upto: int, skip: set[int]) -> Iterator[Record]:
    """The kept inbox rows up to seq `upto` (applied), as records in the order applied;
    rows quarantined at ingest or by the loop (`skip`) were never applied and are left out."""
    after = 0
    while True:
        rows = inbox.read(after, PAGE)
        for row in rows:
            if row.seq > upto:
                return
            after = row.seq
            if row.reason is None and row.seq not in skip:
                yield Record(row.seq, _json.loads(row.record))
        if len(rows) < PAGE:
            return


@dataclass(frozen=True)
class Timeline:
    """A customer's timeline from a served store's kept history, and how far back it goes."""

    customer: str
    as_of: int | None
    complete: bool  # the kept history holds every record the store's state came from
    since: int | None  # else: it holds every applied record from then on (None: unknown)
    entries: list[Any]

    def to_json(self, loaded: LoadedPlaybook, unmasked: bool) -> dict[str, Any]:
        """GET /v1/customers/{id}/timeline's answer; `explain --store --output json`'s."""
        from sopkit._lang.clock import Calendar
        from sopkit._mask import mask_text

        cal = Calendar(loaded.model.playbook.timezone)
        return {"customer_id": self.customer if unmasked else mask_text(self.customer),
                "as_of": None if self.as_of is None else cal.format(self.as_of),
                "history_complete": self.complete,
                "history_from": None if self.since is None else cal.format(self.since),
                "entries": [shown(e.to_json(), unmasked) for e in self.entries]}


def kept(store: Store) -> bool:
    """Whether the store's last `sopkit serve` kept the applied records (`--history`)."""
    return store.get_meta(HISTORY) in ("yes", "no")


def served_timeline(loaded: LoadedPlaybook, store: Store, history: Iterable[Record],
                    customer: str, *, at: int | None, engine: str = "native") -> Timeline:
    """`timeline` over a served store's kept `history` (`kept_history`), up to `at` (default:
    the store's clock), with the store's go-live instant and how complete the history is,
    late events applied as the loop last applied them (its `--lateness`, kept in the store)."""
    now = store_runtime(loaded, store, engine).now_ts if at is None else at
    complete = store.get_meta(HISTORY) == "yes"
    since = store.get_meta(HISTORY_FROM)
    send_from = store.get_meta("send_from")
    late = store.get_meta("lateness")
    lateness = int(late) if late and late.isdigit() else LATENESS
    entries = timeline(loaded, history, customer, at=now,
                       send_from=int(send_from) if send_from else None, engine=engine,
                       lateness=lateness)
    return Timeline(customer, now, complete, None if complete or not since else int(since),
                    entries)
