"""The compact states of windowed metrics (sopkit._runtime.metrics): exact, picklable and small."""

from __future__ import annotations

import pickle
import sys
from collections import Counter
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sopkit._runtime import metrics as _metrics

DAY = 86_400
T0 = 1_704_074_400  # 2024-01-01T10:00:00+08:00
WINDOW = 10  # seconds: short, so that random gaps often land exactly on its edge


def metric(kind: str, field: str | None = None, window: int = WINDOW) -> _metrics.Metric:
    return _metrics.build({"name": kind, "kind": kind, "event": "e", "field": field,
                           "attribute": None, "window": window})


def decimal(coefficient: int, places: int) -> Decimal:
    return Decimal(coefficient).scaleb(-places)


def exponent(value: Any) -> int:
    return int(Decimal(value).as_tuple().exponent)


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """sys.getsizeof of obj and, once each, everything it holds (slots, items, keys, values)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple):
        size += sum(deep_size(item, seen) for item in obj)
    for name in getattr(type(obj), "__slots__", ()):
        size += deep_size(getattr(obj, name), seen)
    return size


# A value: mostly an int or a Decimal of 0-4 places; now and then one that does not pack (a
# coefficient past 55 bits), a negative zero or no value at all.
SMALL_DECIMALS = st.builds(decimal, st.integers(-10**6, 10**6), st.integers(0, 4))
VALUES = st.one_of(
    st.integers(-1000, 1000),
    SMALL_DECIMALS,
    SMALL_DECIMALS,
    st.one_of(st.builds(decimal, st.integers(10**17, 10**18), st.integers(0, 4)),
              st.sampled_from([Decimal("-0"), Decimal("-0.00"), None])),
)
# ("event", gap, value, key) or ("read", gap): gaps in seconds from the previous step.
STEPS = st.lists(st.one_of(
    st.tuples(st.just("event"), st.integers(0, 6), VALUES, st.sampled_from(["a", "b", None])),
    st.tuples(st.just("read"), st.integers(0, 12)),
), max_size=60)


@settings(max_examples=400, deadline=None)
@given(steps=STEPS)
def test_windows_match_a_brute_force_over_the_events(steps: list[tuple[Any, ...]]) -> None:
    """count, sum, avg and max_count_per_key windows equal a recomputation from the raw events."""
    count, total, avg, keyed = (metric("count"), metric("sum", "amount"), metric("avg", "amount"),
                                metric("max_count_per_key", "sku"))
    states = {m.kind: m.new() for m in (count, total, avg, keyed)}
    events: list[tuple[int, Any, Any]] = []
    now = T0
    for step in steps:
        now += step[1]
        if step[0] == "event":
            _, _, value, key = step
            events.append((now, value, key))
            fields = {"amount": value, "sku": key}
            for m in (count, total, avg, keyed):
                states[m.kind] = m.observe(states[m.kind], now, 0, fields)
            continue
        live = [(ts, value, key) for ts, value, key in events if now - ts < WINDOW]
        values = [value for _, value, _ in live if value is not None]
        seen = [value for _, value, _ in events if value is not None]
        if any(isinstance(value, Decimal) for value in seen):
            # the running total has the smallest exponent of any value it ever took in
            smallest = min([0] + [exponent(value) for value in seen])
            expected: Any = sum(values, Decimal(0).scaleb(smallest))
        else:
            expected = sum(values)
        got = total.value(states["sum"], now, 0, {})
        assert type(got) is type(expected)
        assert got == expected and str(got) == str(expected)
        mean = avg.value(states["avg"], now, 0, {})
        assert mean == (Decimal(expected) / len(values) if values else None)
        assert str(mean) == str(Decimal(expected) / len(values) if values else None)
        keys = Counter(key for _, _, key in live if key is not None)
        assert count.value(states["count"], now, 0, {}) == len(live)
        assert keyed.value(states["max_count_per_key"], now, 0, {}) == max(keys.values(),
                                                                              default=0)
        assert count.next_change(states["count"]) == (live[0][0] + WINDOW if live else None)
        sums = [ts for ts, value, _ in live if value is not None]
        assert total.next_change(states["sum"]) == (sums[0] + WINDOW if sums else None)
        with_key = [ts for ts, _, key in live if key is not None]
        assert keyed.next_change(states["max_count_per_key"]) == (
            with_key[0] + WINDOW if with_key else None)


def test_sum_keeps_the_exponent_through_eviction() -> None:
    """A windowed sum keeps the smallest exponent it took in after that value leaves."""
    m = metric("sum", "amount")
    state = m.new()
    for ts, amount in ((T0, Decimal("5.00")), (T0 + 1, Decimal("1")), (T0 + 2, Decimal("0.125"))):
        state = m.observe(state, ts, 0, {"amount": amount})
    assert str(m.value(state, T0 + 2, 0, {})) == "6.125"
    assert str(m.value(state, T0 + WINDOW + 2, 0, {})) == "0.000"
    assert m.next_change(state) is None


def test_sum_subtracts_each_value_with_its_own_exponent() -> None:
    """Once the running sum has rounded, a leaving value's own exponent shows; it is kept."""
    m = metric("sum", "amount")
    amounts = [Decimal("5.00"), Decimal("1E+40"), Decimal("-1E+40")]
    state = m.new()
    for ts, amount in enumerate(amounts, T0):
        state = m.observe(state, ts, 0, {"amount": amount})
    assert str(m.value(state, T0 + 2, 0, {})) == "0E+13"  # 5.00 + 1E+40 rounded to 28 digits
    assert str(m.value(state, T0 + WINDOW, 0, {})) == "-5.00"  # 0E+13 - 5.00, not - 5
    assert str(m.value(state, T0 + WINDOW + 2, 0, {})) == "0E+13"  # -5.00 - 1E+40 rounds again


def test_sum_of_ints_stays_an_int() -> None:
    """A windowed sum of int values is an int, also once every value has left."""
    m = metric("sum", "quantity")
    state = m.observe(m.new(), T0, 0, {"quantity": 3})
    assert m.value(state, T0, 0, {}) == 3
    assert type(m.value(state, T0 + WINDOW, 0, {})) is int


def test_sum_rounds_as_the_running_decimal_sum_did() -> None:
    """Where the 28-digit running Decimal sum rounds, the window rounds the same way."""
    m = metric("sum", "amount")
    state = m.new()
    state = m.observe(state, T0, 0, {"amount": Decimal("1E-30")})
    state = m.observe(state, T0 + 1, 0, {"amount": Decimal("5")})
    assert str(m.value(state, T0 + WINDOW, 0, {})) == str(
        Decimal("1E-30") + Decimal("5") - Decimal("1E-30"))  # 5.000000000000000000000000000


def test_unpackable_value_keeps_the_window_exact() -> None:
    """A value that does not pack into 64 bits moves the window to a list and changes no result."""
    m = metric("sum", "amount")
    state = m.new()
    huge = Decimal("123456789012345678901234.5")
    for ts, amount in ((T0, Decimal("0.10")), (T0 + 1, huge), (T0 + 2, 7)):
        state = m.observe(state, ts, 0, {"amount": amount})
    assert m.value(state, T0 + 2, 0, {}) == Decimal("0.10") + huge + 7
    assert str(m.value(state, T0 + WINDOW, 0, {})) == "123456789012345678901241.50"
    assert str(m.value(state, T0 + WINDOW + 2, 0, {})) == "0.00"


def test_states_survive_a_pickle_round_trip() -> None:
    """Every windowed state, packed or not, pickles and carries on exactly as the original."""
    metrics = [metric("count"), metric("sum", "amount"), metric("avg", "amount"),
               metric("max_count_per_key", "sku")]
    for amounts in ([Decimal("1.5"), 2, Decimal("0.25")], [Decimal("1.5"), Decimal(10**30)]):
        for m in metrics:
            state = m.new()
            for k, amount in enumerate(amounts):
                state = m.observe(state, T0 + 3 * k, 0, {"amount": amount, "sku": "abc"[k % 2]})
            copy = pickle.loads(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            assert type(copy) is type(state)
            for now in (T0 + WINDOW, T0 + WINDOW + 3, T0 + 3 * WINDOW):
                assert m.next_change(copy) == m.next_change(state)
                assert str(m.value(copy, now, 0, {})) == str(m.value(state, now, 0, {}))
                fields = {"amount": Decimal("0.001"), "sku": "a"}
                state, copy = m.observe(state, now, 0, fields), m.observe(copy, now, 0, fields)


def test_twenty_event_windows_stay_small() -> None:
    """Windows of 20 events take well under 1 KB each, several times less than before."""
    amounts = [Decimal(f"{17 * k + 3}.{k:02d}") for k in range(20)]  # distinct, as in real data
    # deep_size (walking deques too) before this layout -> now, in bytes: count 1400 -> 280,
    # sum 4958 -> 720, max_count_per_key 3373 -> 998 (CPython 3.11, 64-bit)
    budgets = {"count": 400, "sum": 1024, "max_count_per_key": 1200}
    for kind, budget in budgets.items():
        m = metric(kind, "amount" if kind == "sum" else "sku", window=365 * DAY)
        state = m.new()
        for k, amount in enumerate(amounts):
            state = m.observe(state, T0 + 9 * k * DAY, 0, {"amount": amount, "sku": "abc"[k % 3]})
        assert m.next_change(state) == T0 + 365 * DAY  # all 20 still in the window
        assert deep_size(state) < budget, kind


# Long windows (over 64 events): bursts of orders a second apart, refunds among them.
LONG_STEPS = st.lists(st.tuples(
    st.integers(0, 40),  # gap before the burst, seconds
    st.integers(1, 120),  # orders in the burst
    st.one_of(st.integers(-300, 900), SMALL_DECIMALS),  # the first amount
    st.integers(-50, 50),  # the step between amounts
    st.sampled_from([1, 2, 5, 40]),  # distinct SKUs in the burst
), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(bursts=LONG_STEPS, reads=st.lists(st.integers(0, 200), min_size=1, max_size=4),
       thresholds=st.lists(st.integers(-2000, 30000).map(lambda v: v / 4), min_size=1,
                           max_size=3, unique=True),
       boundaries=st.lists(st.integers(-1, 60), min_size=1, max_size=3, unique=True))
def test_long_window_crossing_searches_agree_with_the_plain_walk(
        bursts: list[tuple[int, int, Any, int, int]], reads: list[int],
        thresholds: list[float], boundaries: list[int]) -> None:
    """The crossing searches of long windows (bisection, skipping, from both ends) find the
    instant the plain departure-by-departure walk finds."""
    window = 600
    metrics = [metric("sum", "amount", window), metric("avg", "amount", window),
               metric("max_count_per_key", "sku", window)]
    states = [m.new() for m in metrics]
    now = T0
    for gap, n, first, step, skus in bursts:
        now += gap
        for k in range(n):
            fields = {"amount": first + k * step, "sku": k % skus}
            states = [m.observe(s, now + k, 0, fields)
                      for m, s in zip(metrics, states, strict=True)]
        now += n
        for m, state in zip(metrics, states, strict=True):
            for later in sorted(reads):
                at = now + later
                assert m.next_crossing(state, at, thresholds, boundaries) == \
                    _metrics.Metric.next_crossing(m, state, at, thresholds, boundaries), m.kind
        now += max(reads)  # time only moves on


def test_long_window_crosses_at_its_first_or_last_departure() -> None:
    """A long sum standing on a constant crosses when its first event leaves, one above it
    when its last does; an average keeps its side until the window empties."""
    for kind in ("sum", "avg"):
        m = metric(kind, "amount", window=1000)
        state = m.new()
        for k in range(100):
            state = m.observe(state, T0 + k, 0, {"amount": Decimal("10.0")})
        now = T0 + 100
        first, last = T0 + 1000, T0 + 99 + 1000
        # a sum reaching the constant crosses too: 10.0 once 99 have left
        for limit, crossing in ((1000.0, first), (999.5, first), (0.5, last), (10.0, last - 1)):
            expected = crossing if kind == "sum" else last
            assert m.next_crossing(state, now, [limit], []) == expected, (kind, limit)
