"""Conditions as terms for the linter: negation normal form, the values a conjunction of
comparisons allows (VSet), and the sound reasoning over them (unsatisfiable, implies,
conflict). Sound, not complete: what it reports surely holds."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sopkit._lang import expr as e
from sopkit._playbook import models as m
from sopkit._playbook.names import scope_names

_INTEGER_METRICS = frozenset({"count", "days_since", "days_since_first", "days_until",
                              "days_to_anniversary", "max_count_per_key"})


@dataclass(frozen=True)
class VSet:
    """A set of values: an interval, cut to a finite `allowed` set if any, minus `excluded`.

    Discrete sets (integers, dates as day numbers) keep closed integer bounds.
    """

    lo: Any = None
    lo_open: bool = False
    hi: Any = None
    hi_open: bool = False
    allowed: frozenset[Any] | None = None
    excluded: frozenset[Any] = frozenset()
    discrete: bool = False

    def contains(self, v: Any) -> bool:
        if self.allowed is not None and v not in self.allowed:
            return False
        if v in self.excluded:
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            return False
        return not (self.discrete and isinstance(v, float) and not v.is_integer())

    def meet(self, other: VSet) -> VSet:
        lo, lo_open = self.lo, self.lo_open
        if other.lo is not None and (lo is None or other.lo > lo or
                                     (other.lo == lo and other.lo_open)):
            lo, lo_open = other.lo, other.lo_open
        hi, hi_open = self.hi, self.hi_open
        if other.hi is not None and (hi is None or other.hi < hi or
                                     (other.hi == hi and other.hi_open)):
            hi, hi_open = other.hi, other.hi_open
        if self.allowed is None:
            allowed = other.allowed
        elif other.allowed is None:
            allowed = self.allowed
        else:
            allowed = self.allowed & other.allowed
        return VSet(lo, lo_open, hi, hi_open, allowed, self.excluded | other.excluded,
                    self.discrete or other.discrete)

    def _points(self, limit: int = 1000) -> list[Any] | None:
        """Every member, if there are finitely many (and not too many) to list."""
        if self.allowed is not None:
            return sorted((v for v in self.allowed if self.contains(v)), key=repr)
        if self.discrete and self.lo is not None and self.hi is not None:
            if self.hi - self.lo + 1 > limit:
                return None
            return [v for v in range(int(self.lo), int(self.hi) + 1) if self.contains(v)]
        return None

    def is_empty(self) -> bool:
        points = self._points()
        if points is not None:
            return not points
        if self.lo is None or self.hi is None:
            return False  # unbounded: infinitely many values, finitely many excluded
        if self.lo > self.hi:
            return True
        if self.lo == self.hi:
            return self.lo_open or self.hi_open or self.lo in self.excluded
        return False  # a real interval with room in it

    def subset_of(self, other: VSet) -> bool:
        """True only if every member is surely in `other`."""
        if self.is_empty():
            return True
        points = self._points()
        if points is not None:
            return all(other.contains(v) for v in points)
        if other.allowed is not None:
            return False
        if other.lo is not None:
            if self.lo is None or self.lo < other.lo:
                return False
            if self.lo == other.lo and other.lo_open and not self.lo_open:
                return False
        if other.hi is not None:
            if self.hi is None or self.hi > other.hi:
                return False
            if self.hi == other.hi and other.hi_open and not self.hi_open:
                return False
        return all(not self.contains(v) for v in other.excluded)


def _discrete_bounds(op: str, c: Any) -> VSet:
    """`x op c` over integers, with closed integer bounds."""
    if op == ">":
        return VSet(lo=math.floor(c) + 1, discrete=True)
    if op == ">=":
        return VSet(lo=math.ceil(c), discrete=True)
    if op == "<":
        return VSet(hi=math.ceil(c) - 1, discrete=True)
    return VSet(hi=math.floor(c), discrete=True)  # "<="


def _compare_set(op: str, c: Any, discrete: bool) -> VSet:
    if op == "==":
        if discrete and isinstance(c, float) and not c.is_integer():
            return VSet(allowed=frozenset(), discrete=True)
        return VSet(allowed=frozenset({c}), discrete=discrete)
    if op == "!=":
        return VSet(excluded=frozenset({c}), discrete=discrete)
    if discrete:
        return _discrete_bounds(op, c)
    return {">": VSet(lo=c, lo_open=True), ">=": VSet(lo=c), "<": VSet(hi=c, hi_open=True),
            "<=": VSet(hi=c)}[op]


_NEGATE = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclass(frozen=True)
class Lit:
    """`name` is present and in `values`; or, when `present` is False, missing or in it."""

    name: str
    values: VSet
    present: bool
    text: str = field(compare=False)
    pos: int = field(compare=False)


@dataclass(frozen=True)
class Opaque:
    """A part of a condition the analysis does not look into (equal only to its own text)."""

    text: str
    pos: int = field(compare=False)


@dataclass(frozen=True)
class Junction:
    op: str  # "and" | "or"
    items: tuple[Term, ...]
    pos: int = field(compare=False)


Term = Lit | Opaque | Junction


def unparse(node: e.Node) -> str:
    """A condition AST as condition text (normalised spacing and parentheses)."""
    if isinstance(node, e.Const):
        if node.type == "string":
            return '"' + str(node.value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if node.type == "bool":
            return "true" if node.value else "false"
        if isinstance(node.value, dt.date):
            return node.value.isoformat()
        return str(node.value)
    if isinstance(node, e.Name):
        return node.dotted
    if isinstance(node, e.ListLit):
        return "[" + ", ".join(unparse(x) for x in node.items) + "]"
    if isinstance(node, e.Neg):
        return "-" + _wrap(node.operand)
    if isinstance(node, e.Arith):
        return f"{_wrap(node.left)} {node.op} {_wrap(node.right)}"
    if isinstance(node, e.Compare):
        return f"{unparse(node.left)} {node.op} {unparse(node.right)}"
    if isinstance(node, e.In):
        return f"{unparse(node.item)} {'not in' if node.negated else 'in'} " \
               f"{unparse(node.container)}"
    if isinstance(node, e.BoolOp):
        return f" {node.op} ".join(_wrap(x) for x in node.operands)
    if isinstance(node, e.Not):
        return "not " + _wrap(node.operand)
    return "?"  # pragma: no cover - the parser makes nothing else


def _wrap(node: e.Node) -> str:
    text = unparse(node)
    return f"({text})" if isinstance(node, e.BoolOp | e.Arith | e.Compare | e.In) else text


def start(node: e.Node) -> int:
    """The offset where a node's text begins (a comparison's own `pos` is its operator)."""
    if isinstance(node, e.Compare | e.Arith):
        return start(node.left)
    if isinstance(node, e.In):
        return start(node.item)
    if isinstance(node, e.BoolOp):
        return start(node.operands[0])
    return node.pos


class Terms:
    """Turns condition ASTs into terms, knowing each name's type."""

    def __init__(self, pb: m.Playbook, event: str | None = None) -> None:
        self.types = scope_names(pb, event)
        self.discrete = {name for name, kind in self.types.items() if kind == "date"}
        for name, metric in pb.metrics.items():
            whole_field = metric.kind in ("sum", "last") and metric.event and metric.field \
                and pb.events.get(metric.event, {}).get(metric.field) == "int"
            if metric.kind in _INTEGER_METRICS or whole_field:
                self.discrete.add(name)
        self.discrete.update(f"profile.{a}" for a, kind in pb.profile.items() if kind == "int")
        if event is not None:
            self.discrete.update(f"event.{f}" for f, kind in pb.events.get(event, {}).items()
                                 if kind == "int")

    def term(self, node: e.Node, positive: bool = True) -> Term:
        """`node` (negated unless `positive`) with `not` pushed down to the comparisons."""
        if isinstance(node, e.Not):
            return self.term(node.operand, not positive)
        if isinstance(node, e.BoolOp):
            op = node.op if positive else ("or" if node.op == "and" else "and")
            items: list[Term] = []
            for operand in node.operands:
                item = self.term(operand, positive)
                if isinstance(item, Junction) and item.op == op:
                    items.extend(item.items)  # a and (b and c) is one chain
                else:
                    items.append(item)
            return Junction(op, tuple(items), start(node))
        text = unparse(node) if positive else "not " + _wrap(node)
        lit = self._literal(node)
        if lit is None:
            return Opaque(text, start(node))
        name, values, present, domain = lit
        if not positive:
            values, present = _complement(values, domain), not present
        return Lit(name, values, present, text, start(node))

    def _literal(self, node: e.Node) -> tuple[str, VSet, bool, VSet | None] | None:
        """(name, values, needs presence, the name's whole domain if finite) or None."""
        booleans = VSet(allowed=frozenset({True, False}))
        if isinstance(node, e.Name) and self.types.get(node.dotted) == "bool":
            return node.dotted, VSet(allowed=frozenset({True})), True, booleans
        if isinstance(node, e.In):
            container = node.container
            if isinstance(container, e.Name) and container.dotted == "tags" and \
                    isinstance(node.item, e.Const):
                held = VSet(allowed=frozenset({not node.negated}))
                return f"tag:{node.item.value}", held, True, booleans  # never missing
            if isinstance(container, e.ListLit) and isinstance(node.item, e.Name):
                name = node.item.dotted
                members: set[Any] = set()
                for element in container.items:
                    found = self._constant(element)
                    if found is None:
                        return None
                    members.add(found[0])
                discrete = name in self.discrete
                if node.negated:
                    return name, VSet(excluded=frozenset(members), discrete=discrete), False, \
                        None
                return name, VSet(allowed=frozenset(members), discrete=discrete), True, None
            if isinstance(container, e.Name) and isinstance(node.item, e.Const):
                name = f"{container.dotted}∋{node.item.value}"
                return name, VSet(allowed=frozenset({not node.negated})), not node.negated, \
                    booleans
            return None
        if isinstance(node, e.Compare):
            left, op, right = node.left, node.op, node.right
            if not isinstance(left, e.Name):
                left, right, op = right, left, _FLIP[op]
            if not isinstance(left, e.Name):
                return None
            name = left.dotted
            found = self._constant(right)
            if found is None:
                return None
            (value,) = found
            kind = self.types.get(name)
            if kind == "string" and op not in ("==", "!="):
                return None  # string order is not analysed
            values = _compare_set(op, value, name in self.discrete)
            if kind == "bool":
                return name, values.meet(booleans), True, booleans
            return name, values, True, None
        return None

    def _constant(self, node: e.Node) -> tuple[Any] | None:
        """(the constant `node` stands for,) with dates as day numbers; None if not one."""
        if isinstance(node, e.Neg) and isinstance(node.operand, e.Const) and \
                isinstance(node.operand.value, int | float) and \
                not isinstance(node.operand.value, bool):
            return (-node.operand.value,)
        if not isinstance(node, e.Const):
            return None
        if isinstance(node.value, dt.date):
            return (node.value.toordinal(),)
        return (node.value,)


def _complement(values: VSet, domain: VSet | None) -> VSet:
    """The values not in `values`, for the shapes one comparison gives."""
    if domain is not None and domain.allowed is not None:
        return VSet(allowed=frozenset(v for v in domain.allowed if not values.contains(v)))
    if values.allowed is not None and values.lo is None and values.hi is None:
        return VSet(excluded=values.allowed, discrete=values.discrete)
    if values.excluded and values.allowed is None and values.lo is None and values.hi is None:
        return VSet(allowed=values.excluded, discrete=values.discrete)
    if values.lo is not None and values.hi is None:
        if values.discrete:
            return VSet(hi=values.lo - 1, discrete=True)
        return VSet(hi=values.lo, hi_open=not values.lo_open)
    if values.hi is not None and values.lo is None:
        if values.discrete:
            return VSet(lo=values.hi + 1, discrete=True)
        return VSet(lo=values.hi, lo_open=not values.hi_open)
    return VSet(allowed=frozenset())  # pragma: no cover - no comparison gives another shape


def _literals(items: Iterable[Term]) -> dict[str, list[Lit]]:
    by_name: dict[str, list[Lit]] = {}
    for item in items:
        if isinstance(item, Lit):
            by_name.setdefault(item.name, []).append(item)
    return by_name


def _conjoin(lits: list[Lit]) -> tuple[VSet, bool]:
    values = VSet()
    for lit in lits:
        values = values.meet(lit.values)
    return values, any(lit.present for lit in lits)


def conflict(items: Iterable[Term]) -> list[Lit]:
    """The literals on one name that cannot all hold together, or [] if none are found."""
    for lits in _literals(items).values():
        values, present = _conjoin(lits)
        if present and values.is_empty():
            if len(lits) > 1:  # the smallest set that still conflicts, for the message
                for lit in lits:
                    rest = [x for x in lits if x is not lit]
                    if rest and conflict(rest):
                        return conflict(rest)
            return lits
    return []


def unsatisfiable(term: Term) -> bool:
    """True only if the term can never be true."""
    if isinstance(term, Lit):
        return term.present and term.values.is_empty()
    if isinstance(term, Opaque):
        return False
    if term.op == "or":
        return all(unsatisfiable(x) for x in term.items)
    return bool(conflict(term.items)) or any(unsatisfiable(x) for x in term.items)


def implies(a: Term, b: Term) -> bool:
    """True only if every customer state where `a` holds makes `b` hold too."""
    if a == b or unsatisfiable(a):
        return True
    if isinstance(a, Junction) and a.op == "or":
        return all(implies(x, b) for x in a.items)
    if isinstance(b, Junction):
        if b.op == "and":
            return all(implies(a, y) for y in b.items)
        if any(implies(a, y) for y in b.items):
            return True
    if isinstance(a, Junction) and a.op == "and" and any(implies(x, b) for x in a.items):
        return True
    if not isinstance(b, Lit):
        return False
    items = a.items if isinstance(a, Junction) and a.op == "and" else (a,)
    lits = _literals(items).get(b.name, [])
    if not lits:
        return False
    values, present = _conjoin(lits)
    if b.present and not present:
        return False  # `a` allows the fact to be missing, which makes `b` false
    return values.subset_of(b.values)
