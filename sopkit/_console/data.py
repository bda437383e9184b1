"""What the console pages show, read from the served store; and the few things it changes.

Retry, the timeline, campaign preview and results, and hand-over status call the library
functions the CLI and the /v1 operate endpoints call (sopkit._live.operate, ...).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sopkit._errors import Problem
from sopkit._lang.clock import Calendar
from sopkit._live.store import STATUSES, OutboxRow
from sopkit._mask import mask, mask_key, mask_text
from sopkit._serve.reads import Reads
from sopkit._serve.service import ServedLoop

DEAD_SHOWN = 100  # dead letters listed on the overview
CHART_DAYS = 30  # the overview's chart of rows per day due
CHART_REUSE = 20  # the chart's numbers are reused for this many times the query took
UPCOMING_DAYS = 30
UPCOMING_SHOWN = 12


@dataclass
class Console:
    """What the console reads from: the served loop and the HTTP side's read connections."""

    loop: ServedLoop
    reads: Reads
    wall: Callable[[], float] = time.time
    _chart: tuple[int, float, dict[str, Any]] | None = field(default=None, init=False,
                                                             repr=False)

    @property
    def calendar(self) -> Calendar:
        return Calendar(self.reads.loaded.model.playbook.timezone)

    def when(self, ts: int | None) -> str:
        return "" if ts is None else self.calendar.format(ts)

    def now(self) -> int:
        """The served loop's clock (fixed with `serve --clock`, else the system clock)."""
        return self.loop.options.clock()

    # ---- overview ---------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """Events in and quarantined, actions by status and channel, depths and lag."""
        loop, inbox = self.loop, self.reads.inbox
        waiting, oldest = inbox.waiting(loop.position)
        by_channel = inbox.outbox_counts_by_channel()
        statuses = [s for s in STATUSES if any(s in row for row in by_channel.values())]
        with loop.counters.lock:
            accepted = sum(loop.counters.accepted.values())
        totals = {s: sum(row.get(s, 0) for row in by_channel.values()) for s in STATUSES}
        return {
            "events_in": accepted, "quarantined": loop.jail.count, "inbox_depth": waiting,
            "loop_lag": max(int(self.wall()) - oldest, 0) if oldest else 0,
            "alive": loop.alive(), "position": loop.position,
            "outbox_depth": totals["pending"] + totals["leased"],
            "statuses": statuses, "by_channel": by_channel, "totals": totals}

    def by_day(self) -> dict[str, Any]:
        """Outbox rows per channel and status by the playbook day they are due, over the
        last 30 playbook days (today, by the served clock, the last), for the chart; read
        again once the last reading is CHART_REUSE times its own duration old."""
        from sopkit._console.chart import by_day

        pb = self.reads.loaded.model.playbook
        hours, minutes = (int(x) for x in pb.day_starts.split(":"))
        cal = Calendar(pb.timezone, hours * 60 + minutes)
        today = cal.day_index(self.now())
        kept = self._chart
        if kept is not None and kept[0] == today and time.monotonic() < kept[1]:
            return kept[2]
        days = range(today - CHART_DAYS + 1, today + 1)
        began = time.monotonic()
        found = self.reads.inbox.outbox_by_day([cal.day_start(d) for d in
                                                range(days[0], today + 2)])
        ended = time.monotonic()
        chart = {**by_day([dt.date.fromordinal(d) for d in days], found),
                 "timezone": pb.timezone, "day_starts": pb.day_starts}
        # on a store where the query is slow, every tab's 5 s refresh would repeat it: the
        # numbers are kept for CHART_REUSE times what it took (a 5 ms query: 0.1 s)
        self._chart = (today, ended + (ended - began) * CHART_REUSE, chart)
        return chart

    def dead_letters(self, unmasked: bool) -> list[dict[str, Any]]:
        with self.reads._lock:  # the read connection is shared with the /v1 reads
            rows = self.reads.store.rows("dead", limit=DEAD_SHOWN)
        return [self._row(r, unmasked) for r in rows]

    def _row(self, row: OutboxRow, unmasked: bool) -> dict[str, Any]:
        note = row.last_error or row.reason or ((row.receipt or {}).get("detail") or "")
        shown = (lambda text: text) if unmasked else mask_text
        return {"id": row.id, "status": row.status, "due": self.when(row.due_at),
                "customer_id": shown(row.customer_id), "raw_customer_id": row.customer_id,
                "rule": row.rule, "kind": row.kind, "channel": row.channel or "",
                "attempts": row.attempts, "note": shown(str(note))}

    def quarantined(self, limit: int = 10) -> list[dict[str, Any]]:
        return self.reads.quarantined(limit)

    # ---- retry ------------------------------------------------------------------------------

    def retry(self, ids: list[int] | None) -> tuple[int, str]:
        """Put dead rows (these, or every one) back to pending, due now: (count, due).

        `sopkit outbox retry` (one implementation: sopkit._live.operate); ids that are not
        dead rows (any more) are left out, as a page may be stale.
        """
        from sopkit._live.operate import retry_dead

        with self.reads._lock:
            store = self.reads.store
            if ids:
                ids = [r.id for r in store.rows(ids=ids) if r.status == "dead" and r.id is not None]
                if not ids:
                    return 0, self.when(self.now())
            done = retry_dead(store, ids or None, self.now)
        self.loop.wake.set()
        return done.count, self.when(done.due)

    # ---- campaigns --------------------------------------------------------------------------

    def upcoming(self) -> list[dict[str, Any]]:
        """The next firings (30 days) with the audience each campaign reaches now."""
        from sopkit._runtime.campaigns import preview, store_runtime, stored_customers

        store = self.reads.store
        with self.reads._lock:
            runtime = store_runtime(self.reads.loaded, store, "native")
            now = max(self.now(), runtime.now_ts or 0)  # events may run ahead of --clock
            firings = runtime.campaign_plan.upcoming(now, now + UPCOMING_DAYS * 86400,
                                                     UPCOMING_SHOWN)
            reach: dict[str, int] = {}
            for _, campaign in firings:
                if campaign.name not in reach:
                    found = preview(runtime, campaign.name, now,
                                    stored_customers(store, runtime), 0)
                    reach[campaign.name] = found.audience
        return [{"campaign": c.name, "when": self.when(when), "iso": _iso(self.calendar, when),
                 "channels": ", ".join(c.channels), "reach": reach[c.name]}
                for when, c in firings]

    def preview(self, name: str, when: int, unmasked: bool) -> dict[str, Any]:
        """`sopkit campaign preview --store` at `when`: counts, a sample, each variant's
        rendered message."""
        from sopkit._live.operate import preview_stored

        with self.reads.opened() as store:
            found, _ = preview_stored(self.reads.loaded, store, name, when, 10, "native")
        data = found.to_json()
        return data if unmasked else dict(mask(data))

    # ---- hand-over --------------------------------------------------------------------------

    def handover(self, unmasked: bool) -> tuple[int, list[dict[str, Any]],
                                               list[dict[str, Any]]]:
        """`sopkit handover status` (operate.handover: asks WeCom for its transfer results):
        (customers handed over, each departing member with their customers, the customers
        not taken over yet)."""
        from sopkit._live.operate import handover

        with self.reads.opened() as store:
            lines = handover(self.reads.loaded, store, os.environ)
        staff: dict[str, dict[str, Any]] = {}
        everyone = [line.to_json() for line in lines]
        if not unmasked:
            for item in everyone:
                for key in ("customer_id", "from_owner", "to", "platform"):
                    if item.get(key):
                        item[key] = mask_text(str(item[key]))
        for item in everyone:
            counts = staff.setdefault(item["from_owner"], {
                "staff": item["from_owner"], "customers": 0, "waiting": 0, "lines": []})
            counts["customers"] += 1
            counts["waiting"] += 0 if item["taken_over"] else 1
            counts["lines"].append(item)
        return len(lines), list(staff.values()), [i for i in everyone if not i["taken_over"]]

    # ---- timeline ---------------------------------------------------------------------------

    def timeline(self, customer_id: str, unmasked: bool) -> dict[str, Any]:
        """`sopkit explain` for one customer over the served store's kept history, as
        GET /v1/customers/{id}/timeline gives it: {"kept": False} under `serve --no-history`,
        else {"kept", "complete" (the history reaches back to the store's start), "entries"}."""
        from sopkit._live import operate as op
        from sopkit._live.inbox import HISTORY

        if not self.loop.options.history:
            return {"kept": False, "complete": False, "entries": []}
        upto = self.loop.position
        with self.reads.opened() as store:
            try:
                found = op.served_timeline(self.reads.loaded, store, self.reads.history(upto),
                                           customer_id, at=None, engine="native")
            except op.NotFound:  # known to the store, but not to the kept records
                return {"kept": True, "complete": store.get_meta(HISTORY) == "yes",
                        "entries": []}
        data = found.to_json(self.reads.loaded, unmasked)
        return {"kept": True, "complete": found.complete, "entries": data["entries"]}

    # ---- campaign results -------------------------------------------------------------------

    def results(self, unmasked: bool) -> list[dict[str, Any]]:
        """`sopkit campaign results`: per past firing and channel, outbox rows by status and
        how many were sent (WeCom asked for its send results)."""
        from sopkit._live.operate import campaign_results

        loaded = self.reads.loaded
        with self.reads.opened() as store:
            found, _ = campaign_results(loaded, store, [c.name for c in loaded.model.campaigns],
                                        os.environ)
        out = []
        for item in found:
            data = item.to_json()
            data["firing"] = data["firing"][:16].replace("T", " ")
            data["rows"] = ", ".join(f"{k} {v}" for k, v in sorted(item.rows.items()))
            data["send_rate"] = "-" if item.send_rate is None else f"{item.send_rate:.0%}"
            data["errors"] = [e if unmasked else mask_text(e) for e in item.errors]
            out.append(data)
        return out

    # ---- playbook ---------------------------------------------------------------------------

    def playbook(self) -> dict[str, Any]:
        """The running version, what the store says it runs, its migrations."""
        loaded = self.reads.loaded
        with self.reads._lock:
            stored = self.reads.store.get_meta("playbook")
            history = json.loads(self.reads.store.get_meta("migrations") or "[]")
        for item in history:
            item["when"] = dt.datetime.fromtimestamp(item.get("wall", 0), dt.UTC).strftime(
                "%Y-%m-%d %H:%M UTC")
            item["changes"] = [{**c, "sample": [mask_text(str(s)) for s in c.get("sample", [])]}
                               for c in item.get("changes", [])]
        return {"name": loaded.name, "version": loaded.model.playbook.version,
                "path": str(loaded.path), "stored": stored or "",
                "migrations": list(reversed(history))}

    def findings(self) -> list[dict[str, Any]]:
        """What `sopkit check --strict` says of the running playbook, with file:line."""
        return [_problem(p) for p in strict_findings(self.reads.loaded)]


def strict_findings(loaded: Any) -> list[Problem]:
    """What `sopkit check --strict` says of a loaded (valid) playbook: the channel tables as
    `run` checks them, then the strict warnings."""
    from sopkit._playbook.calendar_check import strict_warnings
    from sopkit._playbook.channel_check import channel_problems

    return channel_problems(loaded) + strict_warnings(loaded, dt.date.today())


def _problem(p: Problem) -> dict[str, Any]:
    data = p.to_json()
    where = str(data.get("file") or "")
    if data.get("line"):
        where += f":{data['line']}"
    return {**data, "where": where}


def _iso(cal: Calendar, ts: int) -> str:
    """The local time for an <input type=datetime-local> (minutes)."""
    return cal.format(ts)[:16]


def masked_key(key: str, customer_id: str, unmasked: bool) -> str:
    return key if unmasked else mask_key(key, customer_id)
