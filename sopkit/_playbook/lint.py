"""Lints: mistakes a valid playbook can still hold. `sopkit check --strict` reports them.

Each finding is a warning Problem with a location, a message and a suggestion. The checks:

- `never-true`: an `and` chain whose comparisons with constants contradict each other;
- `shadowed-stage`: a stage whose `when` never decides, because an earlier stage holds
  whenever it does;
- `overlapping-rules`: two rules on the same trigger with the same condition, or sending
  the same template on the same channel when both can hold;
- `no-cap`: a channel that send/webhook actions use and no `[policy]` cap covers;
- `wecom-limit`: rules that can send one customer more WeCom 客户群发 messages than WeCom
  lets them receive;
- `sms-length`: an SMS template longer than 3 segments once rendered;
- `wecom-group`: a campaign sending on WeCom with a template that differs from customer to
  customer, so each customer needs a group-message task of their own;
- `plain-http`: a channel URL with http:// to a host other than this machine.

The condition analysis is sound, not complete: it reports only what surely holds, over the
condition language's own semantics (a comparison that reads a missing fact is false, `not`
negates it; docs/playbook.md, missing facts).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sopkit._errors import Problem
from sopkit._lang import expr as e
from sopkit._lang.templates import _parse as parse_template
from sopkit._playbook import models as m
from sopkit._playbook.load import LoadedPlaybook
from sopkit._playbook.source import KeyPath
from sopkit._playbook.validate import scope_names

CODES = ("never-true", "shadowed-stage", "overlapping-rules", "no-cap", "wecom-limit",
         "sms-length", "wecom-group", "plain-http")
# placeholders that are the same for every customer of one WeCom group-message task
_PER_TASK = frozenset({"today", "now", "owner"})

# WeCom 客户联系 企业群发 (externalcontact/add_msg_template): "每位客户/每个客户群每月最多可
# 接收条数为当月天数" (as many a month as the month has days), and an enterprise may lower it
# to 7 a week or 1 a day. Source: https://developer.work.weixin.qq.com/document/path/92135
# (updated 2025-11-17). Older documents said 4 a month.
WECOM_SOURCE = "developer.work.weixin.qq.com/document/path/92135"
WECOM_MONTH_DAYS = (28, 29, 30, 31)
DAY = 86400

# SMS: 70 characters fit one message of UCS-2 text (any Chinese); a longer text is sent in
# parts of 67. GSM 7-bit text (plain ASCII, roughly) fits 160, or parts of 153.
SMS_MAX_SEGMENTS = 3
_GSM = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMN"
           "OPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
PLACEHOLDER_CHARS = 10  # a placeholder without a default is counted as this many characters

_INTEGER_METRICS = frozenset({"count", "days_since", "days_since_first", "days_until",
                              "days_to_anniversary", "max_count_per_key"})


@dataclass(frozen=True)
class Finding:
    """A lint finding: its code (one of CODES) and the warning to show."""

    code: str
    problem: Problem


def lint(loaded: LoadedPlaybook) -> list[Problem]:
    """Every lint warning of a valid playbook, in file order."""
    return [f.problem for f in findings(loaded)]


def findings(loaded: LoadedPlaybook) -> list[Finding]:
    """Every lint finding of a valid playbook, in file order (file, line, column)."""
    found = list(_Linter(loaded).run())
    unique = {(f.problem.location.file, f.problem.location.line, f.problem.location.column,
               f.problem.message): f for f in found}
    return [unique[k] for k in sorted(unique)]


# ---- value sets: what values of one name a conjunction of comparisons allows --------------


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


# ---- terms: a condition in negation normal form -------------------------------------------


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


# ---- reasoning over terms -----------------------------------------------------------------


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


# ---- the linter ---------------------------------------------------------------------------


class _Linter:
    def __init__(self, loaded: LoadedPlaybook) -> None:
        self.loaded = loaded
        self.pb = loaded.model
        self.origins = loaded.origins

    def warn(self, code: str, path: KeyPath, message: str, suggestion: str,
             offset: int | None = None) -> Finding:
        where = (self.origins.locate(path) if offset is None
                 else self.origins.locate_value(path, offset))
        return Finding(code, Problem(where, message, suggestion, severity="warning"))

    def run(self) -> Iterator[Finding]:
        yield from self.never_true()
        yield from self.shadowed_stages()
        yield from self.overlapping_rules()
        yield from self.caps()
        yield from self.wecom_limit()
        yield from self.sms_length()
        yield from self.wecom_group()
        yield from self.plain_http()

    def plain_http(self) -> Iterator[Finding]:
        from sopkit._playbook.channel_check import plain_http

        for path, where, host in plain_http(self.loaded):
            yield Finding("plain-http", Problem(
                where, f"'{path[-1]}' sends to {host} over plain http://: messages and "
                "customer data cross the network unencrypted", "use https://, or a host on "
                "this machine (127.0.0.1, localhost) behind a TLS proxy", severity="warning"))

    # -- conditions

    def conditions(self) -> Iterator[tuple[KeyPath, str, str | None]]:
        for sname, score in self.pb.scores.items():
            for i, factor in enumerate(score.factors):
                yield ("scores", sname, "factors", i, "when"), factor.when, None
        for tname, tag in self.pb.tags.items():
            if tag.when is not None:
                yield ("tags", tname, "when"), tag.when, None
        for i, stage in enumerate(self.pb.stages):
            if stage.when is not None:
                yield ("stages", i, "when"), stage.when, None
        for i, rule in enumerate(self.pb.rules):
            if rule.when is not None:
                yield ("rules", i, "when"), rule.when, rule.on
            if rule.cancel_if is not None:
                yield ("rules", i, "cancel_if"), rule.cancel_if, None

    def term(self, text: str, event: str | None = None) -> Term:
        return Terms(self.pb, event).term(e.parse(text))

    def never_true(self) -> Iterator[Finding]:
        for path, text, event in self.conditions():
            yield from self._dead(path, self.term(text, event))

    def _dead(self, path: KeyPath, term: Term) -> Iterator[Finding]:
        if isinstance(term, Junction):
            if term.op == "and":
                lits = conflict(term.items)
                if lits:
                    shown = " and ".join(f"`{lit.text}`" for lit in lits)
                    name = lits[0].name
                    why = (f"a customer cannot both hold and lack tag '{name[4:]}'"
                           if name.startswith("tag:") else f"no value of {name} meets "
                           f"{'both' if len(lits) == 2 else 'all of them'}")
                    yield self.warn(
                        "never-true", path, f"this can never be true: {shown} ({why})",
                        "check the numbers and the operators; did you mean `or`?",
                        offset=lits[0].pos)
                    return
            for item in term.items:
                yield from self._dead(path, item)
        elif isinstance(term, Lit) and term.present and term.values.is_empty():
            yield self.warn("never-true", path, f"this can never be true: `{term.text}`",
                            "a list after `in` needs at least one value", offset=term.pos)

    # -- stages

    def shadowed_stages(self) -> Iterator[Finding]:
        stages = self.pb.stages
        targets = {a.stage for r in self.pb.rules for a in r.actions
                   if isinstance(a, m.SetStageAction)}
        terms = [self.term(s.when) if s.when is not None else None for s in stages]
        for j, later in enumerate(stages):
            term_j = terms[j]
            if term_j is None or unsatisfiable(term_j):
                continue
            for i in range(j):
                earlier = stages[i]
                term_i = terms[i]
                if term_i is None:
                    if later.name in targets:  # otherwise `check` reports it as an error
                        yield self.warn(
                            "shadowed-stage", ("stages", j, "when"),
                            f"stage '{later.name}' is never chosen by its `when`: stage "
                            f"'{earlier.name}' above it has no `when` and always holds; only "
                            "set_stage actions reach it",
                            f"move '{earlier.name}' last, or drop this `when`")
                    break
                if implies(term_j, term_i):
                    same = term_j == term_i
                    yield self.warn(
                        "shadowed-stage", ("stages", j, "when"),
                        f"stage '{later.name}' can never be chosen by its `when`: "
                        + (f"stage '{earlier.name}' above it has the same condition"
                           if same else
                           f"whenever `{later.when}` holds, `{earlier.when}` of stage "
                           f"'{earlier.name}' above it holds too")
                        + ", and the first stage that holds wins",
                        f"move '{later.name}' above '{earlier.name}', or narrow "
                        f"'{earlier.name}'s condition")
                    break

    # -- rules

    def overlapping_rules(self) -> Iterator[Finding]:
        rules = self.pb.rules
        terms = [self.term(r.when, r.on) if r.when is not None else None for r in rules]
        for j, later in enumerate(rules):
            trigger = f"on '{later.on}'" if later.on else "on entry"
            for i in range(j):
                earlier = rules[i]
                if earlier.on != later.on:
                    continue
                if terms[i] == terms[j] and _timing(earlier) == _timing(later):
                    key = "when" if later.when is not None else "on"
                    yield self.warn(
                        "overlapping-rules", ("rules", j, key),
                        f"rules '{earlier.name}' and '{later.name}' fire {trigger} with the "
                        "same condition and the same cooldown, max_times and delay: they "
                        "always fire together",
                        "merge their actions into one rule, or make the conditions differ")
                    break
                shared = _same_sends(earlier, later)
                if shared is None:
                    continue
                a, b = terms[i], terms[j]
                both: Term = Junction("and", tuple(t for t in (a, b) if t is not None), 0)
                if unsatisfiable(both):
                    continue  # never both at once
                index, channel, template = shared
                yield self.warn(
                    "overlapping-rules", ("rules", j, "actions", index, "template"),
                    f"rules '{earlier.name}' and '{later.name}' both send template "
                    f"'{template}' on channel '{channel}' {trigger}: a customer who meets "
                    "both conditions gets it twice",
                    "make the conditions exclusive, or keep one of the two rules")
                break

    # -- caps and platform limits

    def _sending(self) -> dict[str, list[tuple[int, int]]]:
        """Channel -> (rule index, action index) of each send/webhook action on it."""
        out: dict[str, list[tuple[int, int]]] = {}
        for i, rule in enumerate(self.pb.rules):
            for j, action in enumerate(rule.actions):
                if isinstance(action, m.SendAction | m.WebhookAction):
                    out.setdefault(action.channel, []).append((i, j))
        return out

    def caps(self) -> Iterator[Finding]:
        covered = policy_caps(self.pb)
        for channel, uses in sorted(self._sending().items()):
            if channel in covered or None in covered:
                continue
            names = sorted({self.pb.rules[i].name for i, _ in uses})
            users = (f"rule {names[0]}" if len(names) == 1 else
                     f"rules {', '.join(names[:-1])} and {names[-1]}")
            yield self.warn(
                "no-cap", ("channels", channel),
                f"no [policy] cap covers channel '{channel}' (used by {users}): what one "
                "customer receives on it is limited only by each rule's cooldown and max_times",
                "add a [policy] cap for this channel, e.g. at most 2 messages a week per "
                "customer")

    def wecom_limit(self) -> Iterator[Finding]:
        caps = policy_caps(self.pb)
        for channel, uses in sorted(self._sending().items()):
            spec = self.pb.channels.get(channel)
            if spec is None or spec.type != "wecom":
                continue
            limits = caps.get(channel, []) + caps.get(None, [])
            if any(_within_wecom(c) for c in limits):  # one cap that holds is enough
                continue
            rules = sorted({i for i, _ in uses})
            unbounded = [i for i in rules if _at_most(self.pb.rules[i], DAY) is None]
            for i in unbounded:
                rule = self.pb.rules[i]
                yield self.warn(
                    "wecom-limit", ("rules", i, "name"),
                    f"nothing limits how often rule '{rule.name}' sends on WeCom channel "
                    f"'{channel}' (no cooldown, no max_times); WeCom 客户群发 delivers a "
                    "customer at most as many messages a month as the month has days (28 in "
                    f"February; {WECOM_SOURCE}) and drops the rest",
                    "set cooldown = \"1d\" or more, or max_times, or add a [policy] cap")
            if unbounded:
                continue
            for days in WECOM_MONTH_DAYS:
                counts = [(i, _at_most(self.pb.rules[i], days * DAY) or 0) for i in rules]
                total = sum(n for _, n in counts)
                if total <= days:
                    continue
                alone = [(i, n) for i, n in counts if n > days]
                for i, n in alone:
                    rule = self.pb.rules[i]
                    yield self.warn(
                        "wecom-limit", ("rules", i, "cooldown"),
                        f"rule '{rule.name}' can send one customer {n} messages in a "
                        f"{days}-day month on WeCom channel '{channel}' (cooldown "
                        f"{rule.cooldown}); WeCom 客户群发 delivers at most {days} "
                        f"({WECOM_SOURCE}) and drops the rest",
                        "set cooldown = \"1d\" or more, or add a [policy] cap")
                if not alone:
                    shown = ", ".join(f"{self.pb.rules[i].name} {n}" for i, n in counts)
                    yield self.warn(
                        "wecom-limit", ("channels", channel),
                        f"rules on WeCom channel '{channel}' can send one customer {total} "
                        f"messages in a {days}-day month ({shown}); WeCom 客户群发 delivers "
                        f"at most {days} ({WECOM_SOURCE}) and drops the rest",
                        "lengthen cooldowns, or add a [policy] cap for this channel")
                break

    def sms_length(self) -> Iterator[Finding]:
        seen: set[tuple[str, tuple[tuple[str, Any], ...]]] = set()
        for rule in self.pb.rules:
            for action in rule.actions:
                if not isinstance(action, m.SendAction):
                    continue
                spec = self.pb.channels.get(action.channel)
                template = self.pb.templates.get(action.template)
                if spec is None or spec.type != "sms" or template is None:
                    continue
                params = tuple(sorted(action.params.items()))
                if (action.template, params) in seen:
                    continue
                seen.add((action.template, params))
                text = rough_render(template.text, action.params)
                length, segments, per = sms_segments(text)
                if segments > SMS_MAX_SEGMENTS:
                    yield self.warn(
                        "sms-length", ("templates", action.template, "text"),
                        f"template '{action.template}' (sent by rule '{rule.name}' on SMS "
                        f"channel '{action.channel}') is about {length} characters once "
                        f"rendered: {segments} SMS segments of {per}, more than "
                        f"{SMS_MAX_SEGMENTS}",
                        f"shorten it to {SMS_MAX_SEGMENTS * per} characters or fewer (the "
                        "signature counts too), or send a link")


    def wecom_group(self) -> Iterator[Finding]:
        for i, campaign in enumerate(self.pb.campaigns):
            for j, action in enumerate(campaign.actions):
                spec = self.pb.channels.get(getattr(action, "channel", ""))
                if not isinstance(action, m.SendAction) or spec is None or \
                        spec.type != "wecom":
                    continue
                used: list[tuple[KeyPath, str]] = [
                    (("campaigns", i, "actions", j, "template"), action.template)]
                used += [(("campaigns", i, "actions", j, "variants", name, "template"),
                          content.template) for name, content in action.variants.items()
                         if content.template]
                for path, name in used:
                    template = self.pb.templates.get(name)
                    if template is None:
                        continue
                    texts = [template.text, template.title or ""]
                    personal = [n for text in texts for _, n, _ in parse_template(text)
                                if not n.startswith("params.") and n not in _PER_TASK]
                    if personal:
                        yield self.warn(
                            "wecom-group", path,
                            f"campaign '{campaign.name}' sends template '{name}' on WeCom "
                            f"channel '{action.channel}', and its {{{{ {personal[0]} }}}} "
                            "differs from customer to customer: a WeCom group-message task "
                            "carries one text, so each customer gets a task of their own and "
                            "the owner confirms them one by one",
                            "keep per-customer placeholders out of WeCom campaign texts "
                            "(params, today, now and owner are the same for a whole task)")


def _timing(rule: m.Rule) -> tuple[str | None, int | None, str | None, str | None]:
    return rule.cooldown, rule.max_times, rule.delay, rule.cancel_if


def _same_sends(a: m.Rule, b: m.Rule) -> tuple[int, str, str] | None:
    """(action index in b, channel, template) of a send both rules make, or None."""
    sends = {(x.channel, x.template) for x in a.actions if isinstance(x, m.SendAction)}
    for j, action in enumerate(b.actions):
        if isinstance(action, m.SendAction) and (action.channel, action.template) in sends:
            return j, action.channel, action.template
    return None


def _at_most(rule: m.Rule, period: int) -> int | None:
    """The most times a rule can fire for one customer within `period` seconds (None: any)."""
    most: int | None = None
    if rule.cooldown is not None:
        most = math.ceil(period / m.parse_duration(rule.cooldown))
    if rule.max_times is not None:
        most = rule.max_times if most is None else min(most, rule.max_times)
    return most


def _within_wecom(cap: tuple[int, int]) -> bool:
    """A cap (count, seconds) that keeps a customer within WeCom's monthly limit."""
    count, seconds = cap
    return math.ceil(28 * DAY / seconds) * count <= 28


def policy_caps(pb: m.Playbook) -> dict[str | None, list[tuple[int, int]]]:
    """Channel (None: every channel) -> its `[[policy.caps]]` as (max, window in seconds)."""
    out: dict[str | None, list[tuple[int, int]]] = {}
    for cap in pb.policy.caps:
        out.setdefault(cap.channel, []).append((cap.max, m.parse_duration(cap.per)))
    return out


def rough_render(text: str, params: Mapping[str, Any]) -> str:
    """A template with params filled in, other placeholders at their default or 10 chars."""
    for raw, name, default in parse_template(text):
        if name.startswith("params.") and name[7:] in params:
            value = params[name[7:]]
            shown = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            shown = default if default is not None else "X" * PLACEHOLDER_CHARS
        text = text.replace(raw, shown, 1)
    return text


def sms_segments(text: str) -> tuple[int, int, int]:
    """(characters, segments, characters per segment) of an SMS text."""
    gsm = all(ch in _GSM for ch in text)
    single, part = (160, 153) if gsm else (70, 67)
    length = len(text)
    if length <= single:
        return length, 1, single
    return length, math.ceil(length / part), part
