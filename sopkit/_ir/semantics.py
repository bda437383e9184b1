"""Reference semantics of RuleIR conditions, as plain functions over a facts vector.

`facts[i]` is the value of slot i, or None when the fact is missing. The durable engine uses
`operand` for arithmetic it cannot express; tests use `holds` as the definition of truth.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def operand(node: Sequence[Any], facts: Sequence[Any]) -> Any:
    """The value of an operand; None if any slot it reads is missing, or on division by 0."""
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "slot":
        return facts[node[1]]
    left = operand(node[2], facts)
    right = operand(node[3], facts)
    if left is None or right is None:
        return None
    op = node[1]
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0:
        return None
    return left / right


def holds(cond: Sequence[Any], facts: Sequence[Any]) -> bool:
    """Whether a condition is true for these facts (a comparison with a missing fact is false)."""
    kind = cond[0]
    if kind == "cmp":
        left = operand(cond[2], facts)
        right = operand(cond[3], facts)
        if left is None or right is None:
            return False
        try:
            return bool(_CMP[cond[1]](left, right))
        except TypeError:
            return False
    if kind == "and":
        return all(holds(c, facts) for c in cond[1])
    if kind == "or":
        return any(holds(c, facts) for c in cond[1])
    if kind == "not":
        return not holds(cond[1], facts)
    return bool(kind == "true")


def boundaries(op: str, c: float) -> set[int]:
    """Whole values b such that `x op c` may differ between x = b and x = b + 1 (where a
    condition on a day-counting fact can flip: the IR's wake-ups)."""
    low, high = math.floor(c), math.ceil(c)
    if op in (">", "<="):
        return {low}
    if op in (">=", "<"):
        return {high - 1}
    return {low - 1, low} if low == high else set()  # == / != with a fraction never flip
