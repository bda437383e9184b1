"""The wake-up queue drops the entries later schedules replaced, and that changes nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

import sopkit
from sopkit._runtime import wakequeue as _wakequeue

ROOT = Path(__file__).resolve().parent.parent


def _history() -> list[dict[str, str]]:
    """200 customers buying every 9 days for two months, in time order."""
    start = dt.datetime(2024, 3, 1, 10, 0)
    events = [
        {"customer_id": f"c{n:03d}", "type": "purchase", "amount": f"{20 + n % 50}.50",
         "quantity": "1", "ts": (start + dt.timedelta(days=9 * k, minutes=n)).isoformat()}
        for k in range(7) for n in range(200)
    ]
    return sorted(events, key=lambda e: (e["ts"], e["customer_id"]))


def _replay(heap_limit: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], int]:
    """The records of the history, and the queue's size when its last event was applied."""
    rt = sopkit.Runtime(sopkit.load_playbook(ROOT / "playbooks/retail.toml"), engine="native")
    monkeypatch.setattr(_wakequeue, "HEAP_SLACK", min(heap_limit, 4096))
    rt.core.queue.limit = heap_limit  # 0: compact as soon as the heap doubles; huge: never
    lines = []
    for record in _history():
        lines += [json.dumps(a.to_json(), ensure_ascii=False, sort_keys=True)
                  for a in rt.ingest(record)]
    entries = rt.core.queue.size
    lines += [json.dumps(a.to_json(), ensure_ascii=False, sort_keys=True)
              for a in rt.advance("2025-01-01T00:00:00")]
    return lines, entries


def test_compacting_the_heap_keeps_every_wakeup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compacting at every push gives the same records as never compacting, and leaves at
    most one entry per customer (plus refits) instead of the replaced ones."""
    compacted, small = _replay(0, monkeypatch)
    kept, large = _replay(10**9, monkeypatch)
    assert compacted == kept
    assert len(compacted) > 1000  # the churn rules ran: guides, recalls, dormancy
    assert small <= 2 * 200 + 2  # at most twice the live wake-ups: one per customer
    assert large > small  # without compaction, replaced entries pile up
