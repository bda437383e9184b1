"""When a condition on a day-counting fact can next change: the wake-up scheduler's
question (core.py asks it per customer and cached answer).

A fact such as `days_since_purchase` or `days_to_birthday` changes every day, but a
condition on it flips only where the comparisons it takes part in differ: `boundaries`
(from the IR's wake-ups) name those values, `next_day_crossing` turns them into the next
day ordinal, and `slot_atoms` collects a fact's comparisons so that a day on which none of
them flips (a days_to_anniversary's jump back up) is not a wake-up.
"""

from __future__ import annotations

import functools
from typing import Any

from sopkit._runtime.metrics import DaysSince, DaysToAnniversary, DaysUntil, Metric

Atoms = tuple[tuple[str, float], ...]  # every comparison of a fact with a constant: (op, c)

_ATOM_OPS: dict[str, Any] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


@functools.lru_cache(maxsize=1 << 10)
def atoms_hold(atoms: Atoms, value: int | None) -> tuple[bool, ...]:
    """Each comparison's result for this value (one that reads a missing value is false);
    cached: a fact's comparisons are few and its values are day counts."""
    return tuple(value is not None and bool(_ATOM_OPS[op](value, c)) for op, c in atoms)


def next_day_crossing(metric: Metric, state: Any, profile: dict[str, Any], today: int,
                      boundaries: list[int], any_day: bool,
                      atoms: Atoms | None = None) -> int | None:
    """The next day ordinal after `today` on which a condition on this metric may flip.

    A boundary b means a comparison may differ between the values b and b + 1: a metric
    counting up (days_since) crosses it on the day it reaches b + 1, one counting down
    (days_until, days_to_anniversary) on the day it reaches b.

    `atoms`, when given, are all the comparisons conditions make with the metric (each
    against a constant; nothing else reads it). A days_to_anniversary jumps from 0 back up
    on the day after the anniversary, across boundaries, yet `== 3` is false on both sides
    of that jump: the jump day is a wake-up only if some comparison differs between the
    value 0 and the value after the jump, or no other crossing is left to wake on. Skipping
    it is exact: up to the anniversary the boundaries list every day a comparison can flip
    (one a day, counting down to 0); after the jump the value counts down again from a
    value whose comparisons equal those of 0, and the next anniversary's boundary days
    (listed too) are the first days they can differ again.
    """
    if any_day:
        has_value = metric.value(state, 0, today, profile) is not None
        return today + 1 if has_value else None
    if isinstance(metric, DaysSince):
        anchor = metric.anchor(state, profile)
        if anchor is None:
            return None
        later = [b + 1 for b in boundaries if b + 1 > today - anchor]
        return anchor + min(later) if later else None
    if isinstance(metric, DaysUntil):
        date = profile.get(metric.attribute or "")
        if date is None:
            return None
        target = date.toordinal()
        earlier = [b for b in boundaries if b < target - today]
        return target - max(earlier) if earlier else None
    if isinstance(metric, DaysToAnniversary):
        birth = profile.get(metric.attribute or "")
        if birth is None:
            return None
        now_anniv = metric.anniversary(birth, today)
        if now_anniv is None:
            return None
        after = metric.anniversary(birth, now_anniv + 1)
        days: list[int] = []
        longest = metric.longest
        for anniv in (now_anniv, after):
            if anniv is not None:
                days.extend(anniv - b for b in boundaries
                            if 0 <= b <= longest and anniv - b > today)
        jumped = None if after is None else after - (now_anniv + 1)
        if not days or atoms is None or atoms_hold(atoms, 0) != atoms_hold(atoms, jumped):
            days.append(now_anniv + 1)  # the value jumps from 0 back up the day after
        return min(days)
    return today + 1


def slot_atoms(predicates: list[Any], slot: int) -> Atoms | None:
    """Every comparison the predicates make between `slot` and a number, as (op, c) with
    the slot on the left; None if the slot is read any other way (in arithmetic, against
    another fact or a non-number), when its comparisons alone do not decide the predicates."""
    atoms: set[tuple[str, float]] = set()

    def reads(node: list[Any]) -> bool:
        if node[0] == "slot":
            return bool(node[1] == slot)
        return node[0] == "arith" and (reads(node[2]) or reads(node[3]))

    def walk(cond: list[Any]) -> bool:
        kind = cond[0]
        if kind in ("and", "or"):
            return all(walk(c) for c in cond[1])
        if kind == "not":
            return walk(cond[1])
        if kind != "cmp":
            return True
        _, op, a, b = cond
        for x, y, flipped in ((a, b, False), (b, a, True)):
            if reads(x):
                if x[0] != "slot" or y[0] != "const" or isinstance(y[1], bool) or \
                        not isinstance(y[1], int | float) or reads(y):
                    return False
                atoms.add((_FLIP[op] if flipped else op, y[1]))
        return True

    if not all(walk(p["cond"]) for p in predicates):
        return None
    return tuple(sorted(atoms))


_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
