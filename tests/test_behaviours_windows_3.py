"""Window states (sopkit/_runtime/windows.py), seed-23 sample: memory after a window empties."""

from __future__ import annotations

import datetime as dt
import tracemalloc
from pathlib import Path

import pytest

import sopkit

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def _at(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, SHANGHAI).isoformat()

PLAYBOOK = """
[playbook]
name = "busy_till"
timezone = "Asia/Shanghai"

[events.order]
amount = "decimal"

[metrics]
orders_1d = { kind = "KIND", event = "order", field = "amount", window = "1d" }

[[rules]]
name = "regular"
when = "orders_1d > 1000000"
actions = [{ type = "task", note = "{{ customer_id }}" }]
"""


@pytest.mark.parametrize("kind", ["count", "sum"])
def test_a_window_whose_orders_all_left_keeps_no_memory_for_them(tmp_path: Path,
                                                                  kind: str) -> None:
    """A till sending 5,000 orders in one morning, then one the next day and one the day
    after: the 1-day window holds one order, and the memory the 5,000 took is given back
    (not kept as dead entries while the customer stays quiet)."""
    text = PLAYBOOK.replace("KIND", kind).replace(', field = "amount"' if kind == "count"
                                                  else "\0", "")
    path = tmp_path / "busy_till.toml"
    path.write_text(text, encoding="utf-8")
    rt = sopkit.Runtime(sopkit.load_playbook(path), engine="native")
    t0 = 1_733_968_800  # 2024-12-12T10:00:00+08:00
    rt.ingest({"customer_id": "c1", "type": "order", "ts": _at(t0 - 86_400), "amount": "1"})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in range(5_000):
            rt.ingest({"customer_id": "c1", "type": "order", "ts": _at(t0 + k // 10),
                       "amount": "2.5"})
        peak = tracemalloc.get_traced_memory()[0]
        for day in (1, 2):
            rt.ingest({"customer_id": "c1", "type": "order", "ts": _at(t0 + day * 86_400),
                       "amount": "3"})
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert rt.state("c1").metrics["orders_1d"] == (1 if kind == "count" else 3)
    assert peak - before > 40_000  # the 5,000 orders took room while they were in
    assert after - before < 30_000  # and gave it back once they left
