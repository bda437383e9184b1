"""Lifetime averages and the wake-ups of windows with refunds and of max_count_per_key, as a
customer's messages show them (semantics.md "Metrics" and "Wake-ups")."""

from __future__ import annotations

from pathlib import Path

import sopkit

SEMANTICS = Path(__file__).parent / "data" / "semantics"


def _fired(actions: list[sopkit.Action]) -> list[tuple[str, str]]:
    return [(a.rule, a.time) for a in actions]


def test_lifetime_average_order_value_rises_over_and_falls_under_a_threshold() -> None:
    """`aov >= 100` (avg, no window) fires on the purchase that lifts the average to 100 or
    more and `aov < 100` on the one that lowers it again, with the average of every purchase."""
    rt = sopkit.Runtime(sopkit.load_playbook(SEMANTICS / "lifetime_avg.toml"), engine="native")
    seen = []
    for day, amount in ((1, "50"), (2, "170"), (3, "20"), (4, "240"), (5, "0.10")):
        actions = rt.ingest({"customer_id": "c1", "type": "purchase",
                             "ts": f"2024-03-{day:02d}T10:00:00", "amount": amount})
        seen.append((_fired(actions), rt.state("c1").metrics["aov"]))
    assert seen == [
        ([("small_baskets", "2024-03-01T10:00:00+08:00")], 50.0),  # 50 / 1
        ([("big_baskets", "2024-03-02T10:00:00+08:00")], 110.0),  # 220 / 2
        ([("small_baskets", "2024-03-03T10:00:00+08:00")], 80.0),  # 240 / 3
        ([("big_baskets", "2024-03-04T10:00:00+08:00")], 120.0),  # 480 / 4
        ([("small_baskets", "2024-03-05T10:00:00+08:00")], 96.02),  # 480.10 / 5
    ]
    assert rt.advance("2025-03-05T00:00:00") == []  # a lifetime average never ages


def _order(rt: sopkit.Runtime, ts: str, amount: str, sku: str = "x") -> list[sopkit.Action]:
    return rt.ingest({"customer_id": "c1", "type": "order", "ts": ts, "amount": amount,
                      "sku": sku})


def _runtime() -> sopkit.Runtime:
    return sopkit.Runtime(sopkit.load_playbook(SEMANTICS / "window_refunds.toml"),
                          engine="native")


def test_a_refund_leaving_the_window_raises_the_sum_at_that_instant() -> None:
    """A refund in a 7-day sum pulls it under 500; the instant the refund leaves, the sum
    jumps back over and `spend_7d >= 500` fires, then `< 150` fires as purchases leave."""
    rt = _runtime()
    actions = _order(rt, "2024-03-01T09:00:00", "-600", "r")  # refunds an order before it
    for k in range(100):  # 10 yuan a minute from 10:00: -600 + 10k
        actions += _order(rt, f"2024-03-01T{10 + k // 60:02d}:{k % 60:02d}:00", "10", f"s{k}")
    assert rt.state("c1").metrics["spend_7d"] == 400.0
    actions += rt.advance("2024-03-20T00:00:00")
    assert [a for a in _fired(actions) if a[0] in ("vip_week", "cooling_off")] == [
        ("cooling_off", "2024-03-01T11:00:00+08:00"),  # the 61st order: -600 + 610 = 10
        ("vip_week", "2024-03-08T09:00:00+08:00"),  # the refund leaves: 400 -> 1000
        ("cooling_off", "2024-03-08T11:25:00+08:00"),  # 86 orders have left: 1000 - 860
    ]


def test_refund_in_a_short_window_delays_the_sum_crossing() -> None:
    """With a few orders, too: the sum crosses 500 when the refund leaves, not before and not
    at the departure of the order that came before it."""
    rt = _runtime()  # one SKU an order: same_sku_7d wakes no one in between
    actions = _order(rt, "2024-03-01T10:00:00", "300", "a")
    actions += _order(rt, "2024-03-02T10:00:00", "-200", "b")  # 100
    actions += _order(rt, "2024-03-03T10:00:00", "350", "c")  # 450
    actions += _order(rt, "2024-03-04T10:00:00", "300", "d")  # 750: vip
    actions += rt.advance("2024-03-20T00:00:00")
    assert [a for a in _fired(actions) if a[0] in ("vip_week", "cooling_off")] == [
        ("cooling_off", "2024-03-02T10:00:00+08:00"),  # 100
        ("vip_week", "2024-03-04T10:00:00+08:00"),  # 750
        # 03-08 10:00 the 300 leaves: 450 (vip re-arms); 03-09 10:00 the refund leaves: 650
        ("vip_week", "2024-03-09T10:00:00+08:00"),
        # 03-10 10:00 the 350 leaves: 300; 03-11 10:00 the last 300 leaves: 0 (not > 0)
    ]


def test_max_count_per_key_falls_when_the_leading_keys_oldest_event_leaves() -> None:
    """Three of sku A, then three of sku B: the largest count stays 3 while A's orders leave
    and falls to 2 only when B's oldest leaves; `<= 2` fires exactly then."""
    rt = _runtime()
    actions = []
    for day, sku in ((1, "A"), (2, "A"), (3, "B"), (4, "A"), (5, "B"), (6, "B")):
        actions += _order(rt, f"2024-03-{day:02d}T10:00:00", "1", sku)
    actions += rt.advance("2024-03-20T00:00:00")
    assert [a for a in _fired(actions) if a[0].startswith("stockpil")] == [
        ("stockpile_over", "2024-03-01T10:00:00+08:00"),  # A: 1
        ("stockpiling", "2024-03-04T10:00:00+08:00"),  # A: 3
        ("stockpile_over", "2024-03-10T10:00:00+08:00"),  # A: 1, B: 2 (not 03-08, 03-09)
    ]


def test_max_count_per_key_in_a_long_window() -> None:
    """Seventy orders of distinct SKUs and three of X: the largest count falls from 3 to 2
    when X's first order leaves, sixty departures in, and not at the departures before it."""
    rt = _runtime()
    actions = []
    for k in range(73):
        sku = "X" if k in (60, 66, 72) else f"s{k}"
        actions += _order(rt, f"2024-03-01T{10 + k // 60:02d}:{k % 60:02d}:00", "1", sku)
    assert rt.state("c1").metrics["same_sku_7d"] == 3
    actions += rt.advance("2024-03-20T00:00:00")
    assert [a for a in _fired(actions) if a[0].startswith("stockpil")] == [
        ("stockpile_over", "2024-03-01T10:00:00+08:00"),
        ("stockpiling", "2024-03-01T11:12:00+08:00"),  # the third X
        ("stockpile_over", "2024-03-08T11:00:00+08:00"),  # the first X leaves
    ]
