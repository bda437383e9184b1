"""The durable-rules backend: the only module in sopkit that imports `durable`.

Guards against the defects measured in durable-rules 2.0.28 (see docs/engines.md):
- one customer in the engine at a time, always under the fixed sid "0", and the session is
  deleted after each evaluation, so the 1,024-session cap and 32-bit sid-hash collisions
  (cust-462789 / cust-679192) cannot mix customers' facts;
- no `durable.engine.Host` at all: sopkit drives durable's C core (`durable_rules_engine`)
  directly, so no timer threads start, no wall-clock timers run, and no Python action code
  runs inside the engine (there is nothing for durable to swallow; its C errors raise). Each
  fired rule is read from the action queue and completed; this is 4-5x faster than Host;
- an always-true rule fires in every evaluation, so `delete_state` never meets a session
  where no action has completed (that crashes);
- rulesets are split so that each holds at most RULES_PER_RULESET rules (well below the
  512-rule hang, and below the 64 actions pending in one session that corrupt the heap) and
  its fact has at most FIELDS_PER_FACT fields (a fact of more than 255 properties cannot be
  stored);
- single-fact rules only (no joins); `$ex`/`$nex` are never used (`$nex` matches facts that
  have the field and fires repeatedly, endlessly through Host): a missing fact is a
  separate boolean field `n<i>`, and a comparison with another field also requires that
  field's `n<j>` to be false (durable reads a missing `$m` field as a value);
- arithmetic that durable cannot put on the left of a comparison is computed beforehand
  into a field `h<k>` with sopkit's own reference semantics (`_ir.operand`);
- an evaluation is a pure function of the fact each ruleset sees (the session is deleted
  after it), and a ruleset's rules are `and`/`or`/`not` over comparisons, so its answer
  follows from the outcome of each comparison: those are computed first (one compiled
  function, `native.compile_outcomes`) and durable-rules is asked only for a combination
  not among the last MEMO it answered (on CDNOW 296 asks for 706,976 evaluations);
- an engine no longer referenced deletes its rulesets (durable keeps them until told);
- durable cannot hold an infinite number (error 202): input values are range-checked when
  read (`_runtime._convert`), and a float that arithmetic overflowed is sent as the largest
  float (`_scalar`), a NaN result as a missing value.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import durable_rules_engine as _dre  # durable-rules' C core; it ships no type information

from sopkit._ir import semantics as _ir
from sopkit.engines.native import compile_outcomes

RULES_PER_RULESET = 60  # 64 actions pending in one session corrupt the heap
FIELDS_PER_FACT = 200  # a fact with more than 255 properties cannot be stored
SID = "0"
MEMO = 4096  # answers kept per ruleset, by comparison outcomes (cleared when full)
_INVERSE = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
_FLIP = {"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_DURABLE_OP = {"!=": "$neq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_names = itertools.count()


_INT64 = range(-(2**63), 2**63)


def _dumps(value: Any) -> str:
    """JSON as durable's parser reads it: floats never in exponent form (it rejects `1e-05`)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_dumps(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    if isinstance(value, float):
        text = repr(value)
        return format(Decimal(text), "f") if "e" in text or "E" in text else text
    return json.dumps(value, ensure_ascii=False)


_FLOAT_MAX = repr(sys.float_info.max)


def _scalar(value: Any) -> str:
    """`_dumps` of one fact value, with the common types first.

    Durable cannot hold an infinite number (asserting the fact fails with error 202); input
    values are range-checked when read, but arithmetic can still overflow a float, so an
    infinity is sent as the largest float, which compares the same with any finite value.
    """
    kind = type(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        text = repr(value)
        if "e" not in text and "n" not in text:  # not 1e-05, nan or inf
            return text
        if text in ("inf", "-inf"):
            return _dumps(float(text.replace("inf", _FLOAT_MAX)))
    return _dumps(value)


class _Lowering:
    """RuleIR conditions -> durable JSON expressions over one fact."""

    def __init__(self, slot_types: dict[int, str]) -> None:
        self.slot_types = slot_types
        self.null_flags: set[int] = set()
        self.hoisted: list[list[Any]] = []
        self.hoist_index: dict[str, int] = {}
        self.tests: list[list[Any]] = []
        self.value_slots: set[int] = set()

    def field_names(self) -> set[str]:
        """Every fact field the lowered conditions read (a value and its null flag each)."""
        return ({f"s{i}" for i in self.value_slots} | {f"n{i}" for i in self.null_flags}
                | {f"h{k}" for k in range(len(self.hoisted))}
                | {f"nh{k}" for k in range(len(self.hoisted))}
                | {f"t{k}" for k in range(len(self.tests))})

    def outside_durable(self, cond: list[Any]) -> bool:
        """Comparisons durable gets wrong: strings ordered (it orders their escaped JSON
        text) and integers beyond 64 bits (it clamps them)."""
        _, op, a, b = cond
        for node in (a, b):
            if node[0] == "const" and isinstance(node[1], int) and not isinstance(node[1], bool) \
                    and node[1] not in _INT64:
                return True
            if op not in ("==", "!=") and (
                    (node[0] == "const" and isinstance(node[1], str))
                    or (node[0] == "slot" and self.slot_types.get(node[1]) == "string")):
                return True
        return False

    def field(self, node: list[Any]) -> str | None:
        """The fact field holding an operand's value (None for constants)."""
        if node[0] == "slot":
            self.value_slots.add(node[1])
            return f"s{node[1]}"
        if node[0] == "arith":
            key = json.dumps(node)
            if key not in self.hoist_index:
                self.hoist_index[key] = len(self.hoisted)
                self.hoisted.append(node)
            return f"h{self.hoist_index[key]}"
        return None

    def null_test(self, node: list[Any]) -> dict[str, Any] | None:
        if node[0] == "slot":
            self.null_flags.add(node[1])
            return {f"n{node[1]}": True}
        if node[0] == "arith":
            return {f"n{self.field(node)}": True}
        return None

    def lower(self, cond: list[Any], negate: bool = False) -> dict[str, Any]:
        kind = cond[0]
        if kind in ("true", "false"):
            truth = (kind == "true") != negate
            return {"_k": 1 if truth else 0}
        if kind == "not":
            return self.lower(cond[1], not negate)
        if kind in ("and", "or"):
            op = kind if not negate else ("or" if kind == "and" else "and")
            parts = [self.lower(c, negate) for c in cond[1]]
            return parts[0] if len(parts) == 1 else {f"${op}": parts}
        _, op, a, b = cond
        if a[0] == "const" and b[0] == "const":
            return {"_k": 1 if _ir.holds(cond, []) != negate else 0}
        if self.outside_durable(cond):  # computed by sopkit beforehand, like arithmetic
            self.tests.append(cond)
            return {f"t{len(self.tests) - 1}": not negate}
        if a[0] == "const":
            op, a, b = _FLIP[op], b, a
        if negate:
            op = _INVERSE[op]
        left = self.field(a)
        assert left is not None
        right: Any = b[1] if b[0] == "const" else {"$m": self.field(b)}
        test = {left: right} if op == "==" else {_DURABLE_OP[op]: {left: right}}
        if not negate:
            if b[0] != "const":
                # durable compares with a missing `$m` field by reading uninitialised memory:
                # test that it is there first (durable's $and stops at the first false)
                present = {k: False for k in self.null_test(b) or {}}
                return {"$and": [present, test]}
            return test
        nulls = [n for n in (self.null_test(b), self.null_test(a)) if n is not None]
        return {"$or": [*nulls, test]} if nulls else test


@dataclass
class _Group:
    """One ruleset: its name, and the fields its facts need."""

    name: str
    value_slots: list[int]
    null_slots: list[int]
    hoisted: list[list[Any]]
    tests: list[list[Any]]
    # the payload's fixed text, written once: (slot, ',"s<slot>":') for each value slot,
    # and (slot, its null flag as true, as false)
    value_keys: list[tuple[int, str]] = field(init=False)
    null_texts: list[tuple[int, str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.value_keys = [(i, f',"s{i}":') for i in self.value_slots]
        self.null_texts = [(i, f',"n{i}":true', f',"n{i}":false') for i in self.null_slots]


def _pack(predicates: list[dict[str, Any]],
          slot_types: dict[int, str]) -> list[list[dict[str, Any]]]:
    """Split predicates into groups under both durable bounds (rules fired, fact fields)."""
    groups: list[list[dict[str, Any]]] = []
    fields: set[str] = set()
    for pred in predicates:
        trial = _Lowering(slot_types)
        trial.lower(pred["cond"])
        wanted = trial.field_names()
        if not groups or len(groups[-1]) >= RULES_PER_RULESET or \
                len(fields | wanted) > FIELDS_PER_FACT:
            groups.append([])
            fields = set()
        groups[-1].append(pred)
        fields |= wanted
    return groups


def _release(handles: list[int]) -> None:
    """Delete an engine's rulesets from durable-rules (its handles are then invalid)."""
    for handle in handles:
        with contextlib.suppress(Exception):  # a handle durable no longer knows
            _dre.delete_ruleset(handle)
    handles.clear()


class DurableEngine:
    """Evaluates a RuleIR's predicates with durable-rules, one customer at a time."""

    name = "durable"

    def __init__(self, ir: dict[str, Any]) -> None:
        self._groups: list[_Group] = []
        self._handles: list[int] = []
        # durable-rules keeps a ruleset until it is deleted: an engine dropped (a playbook
        # reloaded, a simulation over) gives its rulesets back, or a long-lived process
        # would grow by each one's rete network and reach durable's 131,072 handles
        weakref.finalize(self, _release, self._handles).atexit = False
        # per ruleset: the truth of each of its comparisons -> the predicates durable fired
        self._outcomes: list[Callable[[Sequence[object]], tuple[bool, ...]]] = []
        self._memos: list[dict[tuple[bool, ...], frozenset[int]]] = []
        self.definitions: dict[str, dict[str, Any]] = {}
        slot_types = {i: s["type"] for i, s in enumerate(ir.get("slots", []))}
        for members in _pack(ir["predicates"], slot_types) or [[]]:
            lowering = _Lowering(slot_types)
            rules = [(p["id"], lowering.lower(p["cond"])) for p in members]
            digest = hashlib.sha256(json.dumps(rules).encode()).hexdigest()[:12]
            name = f"sopkit_{digest}_{next(_names)}"
            chunk: dict[str, Any] = {"keep": {"all": [{"m": {"_k": 1}}]}}
            for pid, expr in rules:
                chunk[f"p{pid}"] = {"all": [{"m": expr}]}
            self.definitions[name] = chunk
            self._handles.append(_dre.create_ruleset(name, _dumps(chunk)))
            self._memos.append({})
            self._outcomes.append(compile_outcomes([p["cond"] for p in members]))
            self._groups.append(_Group(name, sorted(lowering.value_slots),
                                       sorted(lowering.null_flags), lowering.hoisted,
                                       lowering.tests))
        # each ruleset's (group, handle, memo, outcomes), as `evaluate` reads them
        self._parts = list(zip(self._groups, self._handles, self._memos, self._outcomes,
                               strict=True))

    @staticmethod
    def payload(group: _Group, facts: Sequence[object]) -> str:
        """The single durable fact one ruleset sees for a customer's facts vector, as JSON.

        Written field by field: building a dict and encoding it cost 3/4 of an evaluation.
        """
        out = ['{"sid":"' + SID + '","_k":1']
        for i, key in group.value_keys:
            value = facts[i]
            if value is not None:
                out += (key, _scalar(value))
        for i, null, present in group.null_texts:
            out.append(null if facts[i] is None else present)
        for k, node in enumerate(group.hoisted):
            value = _ir.operand(node, facts)
            if value is None or value != value:  # NaN (inf - inf) compares like a missing value
                out.append(f',"nh{k}":true')
            else:
                out.append(f',"h{k}":{_scalar(value)},"nh{k}":false')
        for k, cond in enumerate(group.tests):
            out.append(f',"t{k}":true' if _ir.holds(cond, facts) else f',"t{k}":false')
        out.append("}")
        return "".join(out)

    def evaluate(self, facts: Sequence[object]) -> frozenset[int]:
        if len(self._parts) == 1:  # one ruleset (most playbooks): its answer is the whole
            return self._answer(*self._parts[0], facts)
        fired: frozenset[int] = frozenset()
        for part in self._parts:
            fired |= self._answer(*part, facts)
        return fired

    def _answer(self, group: _Group, handle: int, memo: dict[tuple[bool, ...], frozenset[int]],
                outcomes: Callable[[Sequence[object]], tuple[bool, ...]],
                facts: Sequence[object]) -> frozenset[int]:
        """One ruleset's fired predicates: remembered by its comparisons' outcomes, or asked."""
        key = outcomes(facts)
        answer = memo.get(key)
        if answer is None:
            answer = frozenset(self.ask(handle, self.payload(group, facts)))
            if len(memo) >= MEMO:
                memo.clear()
            memo[key] = answer
        return answer

    @staticmethod
    def ask(handle: int, payload: str) -> tuple[int, ...]:
        """durable-rules' answer for one ruleset's fact: the predicates it fires."""
        fired: list[int] = []
        try:
            code, state = _dre.assert_fact(handle, payload)
            if code != 0:  # 0: actions are ready (the `keep` rule always matches)
                raise RuntimeError(f"durable-rules did not match the always-true rule "
                                   f"(code {code})")
            result = _dre.start_action_for_state(handle, state)
            while result:
                message: str = result[1]
                # the message is {"<rule name>": ...}; our rule names are plain ASCII
                rule = message[2 : message.index('"', 2)]
                if rule != "keep":
                    fired.append(int(rule[1:]))
                following = _dre.complete_and_start_action(handle, state)
                result = (None, following) if following else None
        except BaseException:
            with contextlib.suppress(Exception):  # keep the first error, not the cleanup's
                _dre.delete_state(handle, SID)
            raise
        _dre.delete_state(handle, SID)
        return tuple(fired)
