"""Window states (sopkit/_runtime/windows.py), seed-23 sample: memory given back, huge sums."""

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


WHALES = """
[playbook]
name = "whales"
timezone = "Asia/Shanghai"

[events.order]
amount = "decimal"

[metrics]
spend_7d = { kind = "sum", event = "order", field = "amount", window = "7d" }

[[rules]]
name = "back_under"
when = "spend_7d <= 700000000000000"
actions = [{ type = "task", note = "{{ customer_id }}" }]
"""


def _whale(path: Path) -> tuple[sopkit.Runtime, list[sopkit.Action]]:
    rt = sopkit.Runtime(sopkit.load_playbook(path), engine="native")
    out = []
    for k, amount in enumerate(["10000000000000.00"] * 100 + ["-0.01", "0.04"]):
        out += rt.ingest({"customer_id": "c1", "type": "order", "amount": amount,
                          "ts": f"2024-03-01T{10 + k // 60:02d}:{k % 60:02d}:00"})
    return rt, out


def test_a_huge_sum_with_a_refund_wakes_when_it_compares_equal_to_the_constant(
        tmp_path: Path) -> None:
    """100 orders of 10 trillion yuan a minute, a 0.01 refund and a 0.04 order: when the 30th
    order leaves, 700 trillion and 3 fen remain, which conditions (comparing numbers as
    floats) read as exactly 700 trillion, so `<= 700000000000000` fires then, at 10:29, as an
    event at that instant would find it true (not a minute later, when the next one leaves)."""
    path = tmp_path / "whales.toml"
    path.write_text(WHALES, encoding="utf-8")
    rt, out = _whale(path)
    out += rt.advance("2024-03-20T00:00:00")
    assert [(a.rule, a.time) for a in out] == [
        ("back_under", "2024-03-01T10:00:00+08:00"),  # the first order: 10 trillion
        ("back_under", "2024-03-08T10:29:00+08:00"),
    ]
    probe, _ = _whale(path)
    probe.advance("2024-03-08T10:28:59")  # a second before: 29 orders have left
    assert probe.state("c1").metrics["spend_7d"] == 710_000_000_000_000  # as a float
