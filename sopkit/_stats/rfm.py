"""RFM: recency, frequency and monetary value scored 1-5 against the customer population.

The population's breakpoints (the 20th, 40th, 60th and 80th percentiles of each measure over
every customer who has bought, linear interpolation between ranks as numpy and pandas do)
are recomputed on the playbook's schedule; a customer's scores are computed whenever the
customer is evaluated, from their own current values and the latest breakpoints:

- R = 5 minus the number of breakpoints the recency (days since the last purchase) exceeds:
  a recent buyer scores 5;
- F, M = 1 plus the number of breakpoints the value exceeds: the top fifth scores 5.

A measure is *high* when its score is 3 or more; the three highs and lows name one of the
eight classic segments (重要价值客户 ...), a fact (`rfm_segment`) and, unless the playbook says
`tags = false`, a tag of group `value`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

QUANTILES = (0.2, 0.4, 0.6, 0.8)
HIGH = 3

# (R high, F high, M high) -> segment
SEGMENTS: dict[tuple[bool, bool, bool], str] = {
    (True, True, True): "重要价值客户",
    (False, True, True): "重要保持客户",
    (True, False, True): "重要发展客户",
    (False, False, True): "重要挽留客户",
    (True, True, False): "一般价值客户",
    (False, True, False): "一般保持客户",
    (True, False, False): "一般发展客户",
    (False, False, False): "一般挽留客户",
}
SEGMENT_NAMES = tuple(SEGMENTS.values())
FACTS = {"rfm_r": "number", "rfm_f": "number", "rfm_m": "number", "rfm_segment": "string"}

Breaks = tuple[float, float, float, float]


def breakpoints(values: Sequence[float]) -> Breaks | None:
    """The 20/40/60/80th percentiles of `values` (linear interpolation); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    last = len(ordered) - 1
    out = []
    for q in QUANTILES:
        position = q * last
        low = math.floor(position)
        high = min(low + 1, last)
        out.append(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
    return out[0], out[1], out[2], out[3]


def score_high_is_good(value: float, breaks: Breaks) -> int:
    """1-5: one more for each breakpoint the value exceeds (frequency, monetary)."""
    return 1 + sum(1 for b in breaks if value > b)


def score_low_is_good(value: float, breaks: Breaks) -> int:
    """5-1: one less for each breakpoint the value exceeds (recency in days)."""
    return 5 - sum(1 for b in breaks if value > b)


def segment(r: int, f: int, m: int) -> str:
    """The classic segment of three scores."""
    return SEGMENTS[(r >= HIGH, f >= HIGH, m >= HIGH)]


def scores(values: tuple[float, float, float] | None,
           breaks: tuple[Breaks, Breaks, Breaks]) -> tuple[int, int, int, str] | None:
    """R, F, M and the segment of (recency, frequency, monetary); None before a purchase."""
    if values is None:
        return None
    r = score_low_is_good(values[0], breaks[0])
    f = score_high_is_good(values[1], breaks[1])
    m = score_high_is_good(values[2], breaks[2])
    return r, f, m, segment(r, f, m)
