"""The per-customer states of windowed metrics (`_runtime.metrics`): compact arrays with a head.

A window keeps its events oldest first in arrays (`array('q')`, 8 bytes an event) so that a
million customers fit in memory. Events leave from the front, and deleting an array's front
moves everything behind it, so a window only advances its `head` past the events that left
and deletes them (compacts) once they are more than half the array, or the array is short
(`_SHORT` entries or fewer, where moving it costs next to nothing and a short window keeps
no dead entries at all). Every event is then added once, dropped once and moved at most a
bounded number of times: O(1) amortised, whatever the window holds.

A long sum or avg window (over 64 events) that a condition compares with constants also keeps
its values' prefix sums as exact ints (`Exact`, 8 bytes an event), so that the search for the
next crossing can bisect (a sum without refunds) or jump over departures that cannot cross
(`skipping_walk`) instead of walking the whole window at every event.
"""

from __future__ import annotations

from array import array
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any

_SHORT = 64  # arrays this short are compacted at every drop (no dead entries kept)

# A context that never rounds: scaleb in it only moves the exponent.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_COEFFICIENT = 2**55  # packed coefficients lie in [-2**55, 2**55), exponents in [-128, 128)


def pack(value: Any) -> int | None:
    """An int or Decimal as one int64, coefficient * 256 + exponent + 128; None if it won't fit."""
    if isinstance(value, int):
        coefficient, exponent = value, 0
    elif isinstance(value, Decimal) and value.is_finite():
        exponent = int(value.as_tuple().exponent)
        coefficient = int(value.scaleb(-exponent, EXACT))
    else:
        return None
    if -_COEFFICIENT <= coefficient < _COEFFICIENT and -128 <= exponent < 128:
        return coefficient * 256 + exponent + 128
    return None


def unpack(packed: int) -> int | Decimal:
    """The value `pack` packed, with its exponent; an int when that is 0, +0 for -0.

    Neither changes a sum: an int meets a Decimal total as the Decimal with exponent 0 would,
    and a zero's sign never shows in the total it is subtracted from.
    """
    coefficient, exponent = divmod(packed, 256)
    exponent -= 128
    return coefficient if exponent == 0 else Decimal(coefficient).scaleb(exponent, EXACT)


class Stamps:
    """A windowed count: the timestamps of its events, live from `head` on."""

    __slots__ = ("head", "stamps")

    def __init__(self) -> None:
        self.stamps = array("q")
        self.head = 0

    def __len__(self) -> int:
        return len(self.stamps) - self.head

    def add(self, ts: int) -> None:
        self.stamps.append(ts)

    def drop(self, n: int) -> None:
        self.head += n
        if self.head * 2 > len(self.stamps) or len(self.stamps) <= _SHORT:
            del self.stamps[:self.head]
            self.head = 0


class Sums:
    """The events of a sum/avg window and the running sum of their values.

    The total is kept as before: it starts at the int 0, each value is added when it arrives
    and subtracted when it leaves, so it has the type and Decimal exponent it always had, and
    reading it costs nothing. Only the stored values shrink: each packs into one int64 of an
    `array('q')` (16 bytes an event with its timestamp, against ~200 for a (ts, Decimal)
    tuple) and unpacks, when it leaves, to a value equal to it with the same exponent, so every
    step gives what the old window's did. That is exact by construction (scaling all values to
    one exponent and rebuilding the total would be exact only while no step rounds). A value
    that does not pack (a float, a coefficient past 55 bits, an exponent outside a byte) turns
    `values` into a plain list of the values, for good.

    `exact` is None, or, once a crossing search needed it on a long window, an `Exact`: the
    values' prefix sums as exact ints, so the total after any number of departures is known
    at once.
    """

    __slots__ = ("exact", "head", "stamps", "total", "values")

    def __init__(self) -> None:
        self.stamps = array("q")
        self.values: array[int] | list[Any] = array("q")
        self.total: Any = 0
        self.head = 0
        self.exact: Exact | None = None

    def __len__(self) -> int:
        return len(self.stamps) - self.head

    def add(self, ts: int, value: Any) -> None:
        self.total += value
        self.stamps.append(ts)
        values = self.values
        if isinstance(values, array):
            packed = pack(value)
            if packed is not None:
                values.append(packed)
                if self.exact is not None:
                    self.exact.add(packed)
                return
            self.values = values = [unpack(v) for v in values]
            self.exact = None
        values.append(value)

    def live_values(self) -> Any:
        """The packed (or, in a list, plain) values of the live events, oldest first."""
        return self.values[self.head:]

    def drop(self, n: int) -> None:
        values = self.values
        head = self.head
        total = self.total
        if isinstance(values, array):
            exact = self.exact
            for packed in values[head:head + n]:
                total -= unpack(packed)
                if packed < 0 and exact is not None:
                    exact.negatives -= 1
        else:
            for value in values[head:head + n]:
                total -= value
        self.total = total
        self.head = head = head + n
        if head * 2 > len(values) or len(values) <= _SHORT:
            self.compact()

    def compact(self) -> None:
        """Forget the entries before `head`."""
        head = self.head
        if head:
            if self.exact is not None:
                self.exact.rebase(head)
            del self.values[:head]
            del self.stamps[:head]
            self.head = 0

    def exact_sums(self) -> Exact | None:
        """The `Exact` sums of the values (array values only), kept up to date from now on;
        None if they outgrow 64 bits."""
        values = self.values
        if self.exact is None and isinstance(values, array):
            self.compact()
            exact = Exact()
            for packed in values:
                exact.add(packed)
            self.exact = exact
        return None if self.exact is None or self.exact.prefix is None else self.exact

    def departed(self, exact: Exact, i: int) -> int:
        """The exact sum of the live values up to position i (head - 1: none), * 10**-scale."""
        prefix = exact.prefix
        assert prefix is not None
        return (prefix[i] if i >= 0 else 0) - (prefix[self.head - 1] if self.head else 0)


class Exact:
    """A long sum window's values as exact ints at one scale (times 10**scale): `prefix[i]`,
    the sum of the values up to position i of the window's arrays (None once a sum outgrows
    int64), `low` and `high`, bounds of every live value, and `negatives`, how many live
    values are below 0."""

    __slots__ = ("high", "low", "negatives", "prefix", "scale")

    def __init__(self) -> None:
        self.prefix: array[int] | None = array("q")
        self.scale = 0
        self.low = self.high = 0
        self.negatives = 0

    def add(self, packed: int) -> None:
        coefficient, exponent = divmod(packed, 256)
        exponent -= 128
        if coefficient < 0:
            self.negatives += 1
        if exponent < self.scale:
            factor = 10 ** (self.scale - exponent)
            self.scale = exponent
            self.low *= factor
            self.high *= factor
            if self.prefix is not None:
                try:
                    self.prefix = array("q", [p * factor for p in self.prefix])
                except OverflowError:
                    self.prefix = None
        value = coefficient * 10 ** (exponent - self.scale)
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        prefix = self.prefix
        if prefix is not None:
            try:
                prefix.append((prefix[-1] if prefix else 0) + value)
            except OverflowError:
                self.prefix = None

    def rebase(self, head: int) -> None:
        """Drop the first `head` prefix sums, the rest then counting from 0."""
        prefix = self.prefix
        if prefix is not None:
            base = prefix[head - 1]
            self.prefix = array("q", [p - base for p in prefix[head:]])


class Keys:
    """The events of a max_count_per_key window: timestamps, their keys, each key's count, and
    `tally[c - 1]`, how many keys have the count c, for c up to the largest count (never 0 at
    the end), so that the largest count is `len(tally)` at no cost."""

    __slots__ = ("counts", "head", "keys", "stamps", "tally")

    def __init__(self) -> None:
        self.stamps = array("q")
        self.keys: list[Any] = []
        self.counts: dict[Any, int] = {}
        self.tally: list[int] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.stamps) - self.head

    def add(self, ts: int, key: Any) -> None:
        self.stamps.append(ts)
        self.keys.append(key)
        counts = self.counts
        tally = self.tally
        count = counts.get(key, 0) + 1
        counts[key] = count
        if count > 1:
            tally[count - 2] -= 1
        if count > len(tally):
            tally.append(1)
        else:
            tally[count - 1] += 1

    def drop(self, n: int) -> None:
        counts = self.counts
        tally = self.tally
        head = self.head
        keys = self.keys
        for key in keys[head:head + n]:
            count = counts[key]
            tally[count - 1] -= 1
            if count > 1:
                tally[count - 2] += 1
                counts[key] = count - 1
            else:
                del counts[key]
            if count == len(tally) and not tally[-1]:
                tally.pop()
        self.head = head = head + n
        if head * 2 > len(keys) or len(keys) <= _SHORT:
            del keys[:head]
            del self.stamps[:head]
            self.head = 0


def exact_float(coefficient: int, exponent: int) -> float:
    """float(coefficient * 10**exponent), correctly rounded like float() of that Decimal."""
    if exponent >= 0:
        return float(coefficient * 10**exponent)
    return float(coefficient / 10**-exponent)  # int / int rounds correctly


def frame(state: Sums, exact: Exact) -> tuple[int, int, int] | None:
    """(total, scale, factor): the running total as an int times 10**scale and the factor
    that brings `exact`'s values to that scale, when taking the live values away one by one
    from the total never rounds; None when a step might.

    Ints never round. A Decimal step rounds only past 28 digits at the smaller exponent of
    its two operands, and every total on the way is within the live values' absolute sum of
    the current one, so it is enough that the current total plus that bound fits in 28
    digits at the smallest exponent.
    """
    total = state.total
    exponent = 0 if isinstance(total, int) else int(total.as_tuple().exponent)
    scale = min(exponent, exact.scale)
    factor = 10 ** (exact.scale - scale)
    now = total * 10**-scale if isinstance(total, int) else int(total.scaleb(-scale, EXACT))
    if not isinstance(total, int):
        reach = max(-exact.low, exact.high) * factor * len(state)
        if abs(now) + reach >= 10**28:
            return None
    return now, scale, factor


def skipping_walk(metric: Any, state: Sums, exact: Exact, framed: tuple[int, int, int],
                  now: int, thresholds: list[float], boundaries: list[int]) -> int | None:
    """`Metric.next_crossing` (sopkit._runtime.metrics) of a long sum (with refunds) or avg window,
    skipping departures that cannot move the value across any constant.

    Each live value lies in [low, high], so k departures move a sum by at most k * max(|low|,
    |high|) and the average's distance to a constant c, times the events left, by at most k *
    max(|low - c|, |high - c|). While that keeps the value clear of every constant by more
    than 2**-40 of its size (far more than the 28-digit division and the float comparison
    can blur), the walk jumps; near a constant it steps and compares as the plain walk does,
    at the last event of each timestamp, with the value computed the plain walk's way from
    the exact total (no step of that walk rounds: `_frame`).
    """
    assert metric.window is not None
    average = metric.kind == "avg"
    total, scale, factor = framed
    stamps = state.stamps
    head, end = state.head, len(stamps)
    n = end - head
    low, high = exact.low * factor, exact.high * factor
    unit = 10**-scale  # 1 in the units of `total`
    reach = max(-low, high)
    if average:
        size = abs(total - state.departed(exact, end - 1) * factor) + reach
    else:
        size = abs(total) + n * reach
    ratios = [float(c).as_integer_ratio() for c in thresholds]
    spans = [max(abs(low * d - c * unit), abs(high * d - c * unit)) if average else reach * d
             for c, d in ratios]

    def value(remaining: int, left: int) -> Any:
        if not average:
            return remaining if isinstance(state.total, int) else \
                Decimal(remaining).scaleb(scale, EXACT)
        return None if left == 0 else Decimal(remaining).scaleb(scale, EXACT) / left

    start = metric.position(metric.value(state, now, 0, {}), thresholds, boundaries)
    i, left, remaining = head - 1, n, total
    while left:
        jump = left - 1 if average else left
        for (c, d), span in zip(ratios, spans, strict=True):
            gap = remaining * d - c * unit * (left if average else 1)
            margin = (((abs(c) * unit + size * d) * (left if average else 1)) >> 40) + 1
            if abs(gap) <= margin:
                jump = 0
                break
            if span:
                jump = min(jump, (abs(gap) - margin - 1) // span)
        if jump > 1:
            i += jump
            left -= jump
            remaining = total - state.departed(exact, i) * factor
            continue
        i += 1
        left -= 1
        remaining = total - state.departed(exact, i) * factor
        if i < end - 1 and stamps[i + 1] == stamps[i]:
            continue
        if metric.position(value(remaining, left), thresholds, boundaries) != start:
            return int(stamps[i] + metric.window)
    return None
