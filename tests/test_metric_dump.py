"""Metric states stored as data (`dump_state` / `load_state`, `_runtime.metrics`): a state written
as JSON and read back carries on exactly as the one that never left memory."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopkit._runtime import codec as _codec
from sopkit._runtime import metrics as _metrics

T0 = 1_704_074_400  # 2024-01-01T10:00:00+08:00
KINDS = ("count", "sum", "avg", "max_count_per_key", "last", "days_since", "days_since_first",
         "days_until", "days_to_anniversary")
WINDOWED = ("count", "sum", "avg", "max_count_per_key")


def metric(kind: str, window: int | None) -> _metrics.Metric:
    field = {"sum": "amount", "avg": "amount", "last": "amount", "max_count_per_key": "sku"}
    return _metrics.build({"name": kind, "kind": kind, "event": "e", "field": field.get(kind),
                           "attribute": "birthday", "window": window})


def through_json(m: _metrics.Metric, state: Any) -> Any:
    """The state written as the store writes it (encode, JSON text) and read back."""
    text = json.dumps(_codec.encode(m.dump_state(state)), sort_keys=True)
    return m.load_state(_codec.decode(json.loads(text)))


def same(a: Any, b: Any) -> bool:
    """Equal, of one type and, for Decimals, with one exponent (str shows it)."""
    return type(a) is type(b) and str(a) == str(b)


AMOUNTS = st.one_of(
    st.integers(-500, 5000),
    st.builds(lambda c, e: Decimal(c).scaleb(e), st.integers(-10**6, 10**7), st.integers(-4, 2)),
    st.sampled_from([None, None, Decimal("-0.00"), Decimal("0E+3"),
                     Decimal("123456789012345678901234.5")]),  # too long to pack: rarely
)
KEYS = st.one_of(st.sampled_from(["a", "b", "洗发水"]), st.integers(0, 3),
                 st.sampled_from([Decimal("1.0"), Decimal("1.00"), Decimal("2")]),
                 st.dates(dt.date(2024, 1, 1), dt.date(2024, 1, 3)), st.none())
# ("event", gap, amount, key), ("burst", gap, amount, key, n): n events a second apart with
# amounts amount + 0, 1, 2 ..., or ("read", gap); a window of 10 s or of 300 s (long windows,
# over 64 events, keep the exact sums their crossing searches use)
STEPS = st.lists(st.one_of(
    st.tuples(st.just("event"), st.integers(0, 4), AMOUNTS, KEYS),
    st.tuples(st.just("burst"), st.integers(0, 4), AMOUNTS, KEYS, st.sampled_from([3, 70, 150])),
    st.tuples(st.just("read"), st.integers(0, 15)),
), max_size=60)


def events(step: tuple[Any, ...], now: int) -> list[tuple[int, dict[str, Any]]]:
    """The (ts, fields) of an event or burst step at `now`."""
    _, _, amount, key, *n = step
    return [(now + k, {"amount": None if amount is None else amount + k, "sku": key})
            for k in range(n[0] if n else 1)]
THRESHOLDS = st.lists(st.sampled_from([-100.0, 0.0, 1.5, 100.0, 1000.0, 2500.25, 1e5]),
                      min_size=1, max_size=3, unique=True)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=120, deadline=None)
@given(steps=STEPS, cut=st.integers(0, 60), window=st.sampled_from([10, 300, None]),
       thresholds=THRESHOLDS, boundaries=st.lists(st.integers(-1, 8), max_size=3))
def test_a_state_read_back_from_json_carries_on_as_the_original(
        kind: str, steps: list[tuple[Any, ...]], cut: int, window: int | None,
        thresholds: list[float], boundaries: list[int]) -> None:
    """dump -> JSON -> load gives a state whose values, wake-ups, departures and later events
    match the original's at every later time."""
    if kind == "max_count_per_key" and window is None:
        window = 10  # always windowed
    if kind not in WINDOWED:
        window = None
    m = metric(kind, window)
    profile = {"birthday": dt.date(1992, 2, 29)}
    state = m.new()
    now = T0
    cut %= len(steps) + 1
    for step in steps[:cut]:
        now += step[1]
        if step[0] != "read":
            for ts, fields in events(step, now):
                state = m.observe(state, ts, ts // 86_400, fields)
            now = ts
    copy = through_json(m, state)
    for step in [*steps[cut:], ("read", 400)]:
        now += step[1]
        if step[0] != "read":
            for ts, fields in events(step, now):
                state = m.observe(state, ts, ts // 86_400, fields)
                copy = m.observe(copy, ts, ts // 86_400, fields)
            now = ts
            continue
        today = now // 86_400
        assert same(m.value(copy, now, today, profile), m.value(state, now, today, profile))
        if window is None:
            continue
        assert m.next_change(copy) == m.next_change(state)
        assert m.next_crossing(copy, now, thresholds, boundaries) == \
            m.next_crossing(state, now, thresholds, boundaries)
        if kind != "count":
            departures = list(m.departures(state))
            assert [str(v) for v in m.departures(copy)] == [str(v) for v in departures]
        assert len(m.dump_state(state)["stamps"]) == len(state)  # only live events are written


def test_dump_shapes_are_plain_readable_data() -> None:
    """Each windowed kind writes the documented shape: live timestamps, values with their
    exponents, the running total with its own, keys as they came."""
    count, total, keyed = metric("count", 10), metric("sum", 10), metric("max_count_per_key", 10)
    states = [count.new(), total.new(), keyed.new()]
    for k, (amount, sku) in enumerate([(Decimal("5.00"), "a"), (3, "b"), (Decimal("0.125"), "a")]):
        fields = {"amount": amount, "sku": sku}
        states = [m.observe(s, T0 + 4 * k, 0, fields)
                  for m, s in zip((count, total, keyed), states, strict=True)]
    count.value(states[0], T0 + 10, 0, {})  # the first event (at T0) leaves
    total.value(states[1], T0 + 10, 0, {})
    keyed.value(states[2], T0 + 10, 0, {})
    assert _codec.encode(count.dump_state(states[0])) == {"stamps": [T0 + 4, T0 + 8]}
    assert _codec.encode(total.dump_state(states[1])) == {
        "stamps": [T0 + 4, T0 + 8], "values": [3, {"$dec": "0.125"}],
        "total": {"$dec": "3.125"}}
    assert keyed.dump_state(states[2]) == {"stamps": [T0 + 4, T0 + 8], "keys": ["b", "a"]}
    lifetime = metric("sum", None)
    state = lifetime.observe(lifetime.new(), T0, 0, {"amount": Decimal("1.20")})
    assert _codec.encode(lifetime.dump_state(state)) == {"total": {"$dec": "1.20"}, "count": 1}


@pytest.mark.parametrize(("kind", "window", "data"), [
    ("count", 10, {"stamps": [3, 1]}),
    ("count", 10, {"stamp": [1]}),
    ("count", None, "7"),
    ("sum", 10, {"stamps": [1, 2], "values": [1], "total": 1}),
    ("sum", 10, {"stamps": [1], "values": ["1"], "total": 1}),
    ("sum", None, {"total": "x", "count": 1}),
    ("max_count_per_key", 10, {"stamps": [1], "keys": [None]}),
    ("days_since", None, 1e-05),
    ("days_since", None, "739007"),
    ("days_to_anniversary", None, 0),
    ("days_until", None, {"x": 1}),
])
def test_damaged_data_is_refused_with_the_metric_named(kind: str, window: int | None,
                                                       data: Any) -> None:
    """Data that is not a state of the kind raises StateError naming the metric."""
    with pytest.raises(_codec.StateError, match=f"metric '{kind}' \\({kind}\\)"):
        metric(kind, window).load_state(data)
