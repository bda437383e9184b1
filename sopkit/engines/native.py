"""The native backend: RuleIR conditions compiled once into Python closures.

It is the oracle the durable backend is tested against and the fast path. Nothing here
evaluates text: each IR node becomes a small closure over slot indexes and constants, with
sopkit's semantics (a comparison that reads a missing fact is false; `not` negates; division
by zero is a missing value), the same as `sopkit._ir.holds`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

Facts = Sequence[Any]
Value = Callable[[Facts], Any]
Test = Callable[[Facts], bool]

_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def _value(node: list[Any]) -> Value:
    kind = node[0]
    if kind == "const":
        constant = node[1]
        return lambda facts: constant
    if kind == "slot":
        index = node[1]
        return lambda facts: facts[index]
    op, left, right = node[1], _value(node[2]), _value(node[3])
    if op == "/":
        def divide(facts: Facts) -> Any:
            a, b = left(facts), right(facts)
            return None if a is None or b is None or b == 0 else a / b
        return divide
    fn = {"+": operator.add, "-": operator.sub, "*": operator.mul}[op]

    def arith(facts: Facts) -> Any:
        a, b = left(facts), right(facts)
        return None if a is None or b is None else fn(a, b)
    return arith


def _test(cond: list[Any]) -> Test:
    kind = cond[0]
    if kind == "true":
        return lambda facts: True
    if kind == "false":
        return lambda facts: False
    if kind == "not":
        inner = _test(cond[1])
        return lambda facts: not inner(facts)
    if kind in ("and", "or"):
        parts = [_test(c) for c in cond[1]]
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2:  # the common case, without a generator
            p, q = parts
            if kind == "and":
                return lambda facts: p(facts) and q(facts)
            return lambda facts: p(facts) or q(facts)
        if kind == "and":
            return lambda facts: all(part(facts) for part in parts)
        return lambda facts: any(part(facts) for part in parts)
    compare = _CMP[cond[1]]
    a, b = cond[2], cond[3]
    if a[0] == "slot" and b[0] == "const":  # the common case, kept short
        index, constant = a[1], b[1]

        def slot_vs_const(facts: Facts) -> bool:
            value = facts[index]
            return value is not None and bool(compare(value, constant))
        return slot_vs_const
    left, right = _value(a), _value(b)

    def general(facts: Facts) -> bool:
        x, y = left(facts), right(facts)
        return x is not None and y is not None and bool(compare(x, y))
    return general


class NativeEngine:
    """Evaluates a RuleIR's predicates with compiled Python closures."""

    name = "native"

    def __init__(self, ir: dict[str, Any]) -> None:
        self._tests = [(p["id"], _test(p["cond"])) for p in ir["predicates"]]

    def evaluate(self, facts: Sequence[object]) -> frozenset[int]:
        return frozenset([pid for pid, test in self._tests if test(facts)])
