"""What the read endpoints of `sopkit serve` answer: a customer, the outbox, the quarantine.

Each reads the store on the HTTP side's own connections (never the loop's runtime), so a
read sees what the loop last committed. Personal data (phone numbers, e-mails, in ids,
profiles and messages) is masked unless the caller may see it (docs/http.md#pii).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sopkit._io import Record
from sopkit._live.inbox import Inbox
from sopkit._live.openstore import open_store
from sopkit._live.operate import kept_history, refused
from sopkit._live.store import STATUSES, Store
from sopkit._mask import mask, mask_key, mask_text
from sopkit._playbook.load import LoadedPlaybook
from sopkit._runtime.runtime import Runtime, json_value

MAX_ROWS = 1000
"""The most rows one GET /v1/outbox or /v1/quarantine answers."""


class Reads:
    """The read side: a store connection (outbox rows) and the inbox's (customer state)."""

    def __init__(self, loaded: LoadedPlaybook, store: Store, inbox: Inbox,
                 quarantine: Path | None, url: str | None = None) -> None:
        self.loaded = loaded
        self.store = store
        self.inbox = inbox
        self.quarantine = quarantine
        self.url = url  # the store's URL: the operate endpoints open a connection each
        self._lock = threading.Lock()

    @contextmanager
    def opened(self) -> Iterator[Store]:
        """A connection of the request's own (long reads, or a write): closed afterwards."""
        store = open_store(self.url, create=False) if self.url else None
        if store is None:
            with self._lock:
                yield self.store
            return
        try:
            yield store
        finally:
            store.close()

    def refused(self) -> set[int]:
        """The inbox rows the loop quarantined, by seq (`operate.refused`)."""
        return refused(self.quarantine)

    def history(self, upto: int) -> Iterator[Record]:
        """The kept inbox rows up to seq `upto`, as applied (`operate.kept_history`)."""
        return kept_history(self.inbox, upto, self.refused())

    def customer(self, customer_id: str, unmasked: bool) -> dict[str, Any] | None:
        """Facts, tags, stage, scores, profile and pending actions; None if unknown."""
        blob, clock = self.inbox.customer_state(customer_id)
        if blob is None:
            return None
        runtime = Runtime(self.loaded, engine="native")  # read-only: only this customer
        runtime.restore(None if clock is None else clock.encode(), [(customer_id, blob)])
        view = runtime.state(customer_id)
        with self._lock:
            rows = [r for status in ("pending", "leased")
                    for r in self.store.rows(status, customer_id=customer_id)]
        rows.sort(key=lambda r: (r.due_at, r.id or 0))
        cal = runtime.calendar
        out: dict[str, Any] = {
            "customer_id": view.customer_id, "owner": view.owner, "stage": view.stage,
            "tags": sorted(view.tags), "facts": view.metrics, "scores": view.scores,
            "profile": {k: json_value(v, exact=True) for k, v in view.profile.items()},
            "as_of": None if runtime.now_ts is None else cal.format(runtime.now_ts),
            "delayed_rules": view.pending,
            "pending_actions": [{"id": r.id, "key": r.key, "rule": r.rule, "kind": r.kind,
                                 "channel": r.channel, "status": r.status,
                                 "due": cal.format(r.due_at)} for r in rows]}
        if unmasked:
            return out
        shown: dict[str, Any] = mask(out)
        shown["customer_id"] = mask_text(customer_id)
        for action in shown["pending_actions"]:
            action["key"] = mask_key(action["key"], customer_id)
        return shown

    def outbox(self, status: str | None, customer_id: str | None, limit: int,
               unmasked: bool) -> list[dict[str, Any]]:
        """Outbox rows by id, as `sopkit outbox list --output jsonl` prints them."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status '{status}'; one of {', '.join(STATUSES)}")
        with self._lock:
            rows = self.store.rows(status, customer_id=customer_id, limit=limit)
        out = [row.to_json() for row in rows]
        if unmasked:
            return out
        shown = []
        for row in out:
            key = mask_key(row["key"], row["customer_id"])
            item: dict[str, Any] = mask(row)
            item["key"] = key
            item["customer_id"] = mask_text(row["customer_id"])
            shown.append(item)
        return shown

    def quarantined(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` quarantined records (the file holds them masked)."""
        if self.quarantine is None or not self.quarantine.exists():
            return []
        with self.quarantine.open(encoding="utf-8") as lines:
            last = deque(lines, maxlen=limit)
        return [json.loads(line) for line in last if line.strip()]
