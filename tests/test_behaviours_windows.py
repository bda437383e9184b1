"""Behaviours of the window states (sopkit._runtime.windows) that the mutation tests found unpinned:
long sums of whole amounts waking their customer, windows that stay small as events flow
through them for a long time, and stored window values outside what events carry."""

from __future__ import annotations

import tracemalloc
from decimal import Decimal
from pathlib import Path

import pytest

import sopkit
from sopkit._runtime import codec as _codec
from sopkit._runtime import metrics as _metrics

SEMANTICS = Path(__file__).parent / "data" / "semantics"
T0 = 1_704_074_400  # 2024-01-01T10:00:00+08:00


def test_a_long_sum_of_whole_amounts_wakes_its_customer_as_orders_leave() -> None:
    """100 orders of 10 yuan in a 7-day sum: over 500 at the 50th, under 150 at the instant
    the 86th leaves (a window over 64 events, searched by bisection)."""
    rt = sopkit.Runtime(sopkit.load_playbook(SEMANTICS / "window_refunds.toml"),
                        engine="native")
    actions = []
    for k in range(100):  # 10 yuan a minute from 10:00, one SKU each
        actions += rt.ingest({"customer_id": "c1", "type": "order", "amount": "10",
                              "ts": f"2024-03-01T{10 + k // 60:02d}:{k % 60:02d}:00",
                              "sku": f"s{k}"})
    assert rt.state("c1").metrics["spend_7d"] == 1000
    actions += rt.advance("2024-03-20T00:00:00")
    assert [(a.rule, a.time) for a in actions if a.rule in ("vip_week", "cooling_off")] == [
        ("cooling_off", "2024-03-01T10:00:00+08:00"),  # the first order: 10
        ("vip_week", "2024-03-01T10:49:00+08:00"),  # the 50th: 500
        ("cooling_off", "2024-03-08T11:25:00+08:00"),  # 86 have left: 140
    ]


@pytest.mark.parametrize(("kind", "field"), [
    ("count", None), ("sum", "amount"), ("avg", "amount"), ("max_count_per_key", "sku")])
def test_a_window_keeps_memory_for_what_it_holds_not_for_every_event_it_saw(
        kind: str, field: str | None) -> None:
    """A 1-day window fed an order a minute for 10 days holds 1,440 orders; its memory stops
    growing after the first days instead of growing with all 14,400 orders seen."""
    m = _metrics.build({"name": "w", "kind": kind, "event": "order", "field": field,
                        "attribute": None, "window": 86_400})
    state = m.new()
    tracemalloc.start()
    try:
        sizes = []
        for day in range(10):
            for minute in range(1440):
                ts = T0 + day * 86_400 + minute * 60
                state = m.observe(state, ts, 0, {"amount": minute % 7, "sku": minute % 5})
            if day in (1, 9):
                sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert len(state) == 1440
    assert sizes[1] - sizes[0] < 32_000  # the 11,520 orders that left, kept: >= 90 kB


def _sum_window() -> _metrics.Metric:
    return _metrics.build({"name": "spend", "kind": "sum", "event": "order", "field": "amount",
                           "attribute": None, "window": 100})


def test_a_stored_sum_window_holding_a_float_reads_back_and_lets_it_leave() -> None:
    """A stored window value that is a float (a documented state shape) is accepted, and the
    total loses exactly that value when it leaves."""
    m = _sum_window()
    state = m.load_state({"stamps": [T0, T0 + 50], "values": [0.5, 2], "total": 2.5})
    assert m.value(state, T0 + 99, 0, {}) == 2.5
    assert m.value(state, T0 + 100, 0, {}) == 2.0
    assert m.value(state, T0 + 150, 0, {}) == 0.0


@pytest.mark.parametrize("value", [Decimal("7E+127"), Decimal("7E+128"), Decimal("7E-128"),
                                   Decimal("7E-129"), Decimal("-3.5E+130")])
def test_a_stored_window_value_with_a_far_exponent_is_written_back_as_read(
        value: Decimal) -> None:
    """Stored window values of any exponent (beyond what events accept) come back from a
    dump exactly, with their exponent, and leave the total as they came."""
    m = _sum_window()
    state = m.load_state({"stamps": [T0], "values": [value], "total": value})
    dumped = _codec.encode(m.dump_state(state))
    assert dumped == {"stamps": [T0], "values": [{"$dec": str(value)}],
                      "total": {"$dec": str(value)}}
    assert m.value(state, T0 + 100, 0, {}) == 0


def _long_sum(values: list[str]) -> tuple[_metrics.Metric, object]:
    """A 1000-second sum window holding `values`, one a second from T0 (over 64 events: the
    crossing search uses the exact prefix sums)."""
    m = _metrics.build({"name": "spend", "kind": "sum", "event": "order", "field": "amount",
                        "attribute": None, "window": 1000})
    state = m.new()
    for k, value in enumerate(values):
        state = m.observe(state, T0 + k, 0, {"amount": Decimal(value)})
    return m, state


def test_a_long_sum_wakes_when_departures_bring_it_exactly_onto_a_constant() -> None:
    """70 orders of 1.0 then 0.3: `spend <= 0.3` holds the instant the 70th order leaves (the
    total is exactly 0.3), so the customer is woken then, not a second later."""
    m, state = _long_sum(["1.0"] * 70 + ["0.3"])
    assert m.next_crossing(state, T0 + 71, [0.3], []) == T0 + 69 + 1000


def test_a_long_sum_with_a_refund_wakes_exactly_onto_a_constant() -> None:
    """With a refund (-0.5) among 72 orders, `spend <= 0.1` wakes the customer the instant
    the total is exactly 0.1, not at the next departure (where it is already -0.5)."""
    m, state = _long_sum(["1.0"] * 70 + ["0.6", "-0.5"])
    assert m.next_crossing(state, T0 + 72, [0.1], []) == T0 + 69 + 1000


def test_a_long_average_is_not_woken_inside_a_second_whose_events_leave_together() -> None:
    """A 72-order average at exactly 10 whose two oldest orders (30 and -10) share a second:
    the 30 leaving alone would dip it under 10, but both leave together and it stays 10, so
    the next wake-up is when the window empties, not at that second."""
    m = _metrics.build({"name": "aov", "kind": "avg", "event": "order", "field": "amount",
                        "attribute": None, "window": 1000})
    state = m.new()
    for ts, amount in [(T0, 30), (T0, -10)] + [(T0 + k, 10) for k in range(1, 71)]:
        state = m.observe(state, ts, 0, {"amount": amount})
    assert m.value(state, T0 + 71, 0, {}) == 10
    assert m.next_crossing(state, T0 + 71, [10.0], []) == T0 + 70 + 1000
