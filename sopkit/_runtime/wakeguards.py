"""Guarded wake-ups: which of a day-counting fact's crossings can change anything for a
customer as they are now (the scheduler's question, core.py).

A fact such as `days_since_purchase` or `days_to_birthday` wakes its customer on each day a
comparison with it may flip (the IR's `boundaries`). A wake-up evaluation reads it only through
the conditions of entry rules (`when` of a rule without `on`), dynamic tags, stages, score
factors and `cancel_if`; campaign audiences are decided at their firings and event rules at
their events, so they never need a wake-up. Many of those conditions are a conjunction with a
part that does not depend on time: `days_to_birthday == 3 and stage != "dormant"`,
`days_since_purchase >= 90 and "复购客户" in tags`. Such a part (a *guard*) reads only the
customer's tags, stage or scores, which change only in an evaluation (and a campaign's actions,
after which the customer is evaluated too), and every evaluation schedules again. So while a
guard is false, its condition is false whatever the fact's value, and the comparisons it makes
need no wake-up: `WakeGuards.limits` gives the boundaries (and comparisons) of the conditions
that are live now, and none when no condition is, so such a crossing is not evaluated.

Exact by construction: a skipped day is one on which every condition that reads the fact and
whose comparisons could flip that day is false through a guard both then and at the last
evaluation, and every other condition reads nothing that changed, so the evaluation would
change no tag, stage, score, rule arming or pending action and write no record. Only what is
sure is used: a guard is a top-level `and` part comparing a tag, the stage or a score with a
constant (possibly under `not`); a fact read in any other way (arithmetic, against another fact,
any day) keeps every wake-up; and a playbook whose conditions read RFM facts keeps them all,
since each evaluation records the RFM scores the rules saw (the refit compares against them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sopkit._ir.semantics import boundaries as _boundaries
from sopkit._ir.types import Cond, PlaybookIR, SlotIR
from sopkit._runtime.crossings import Atoms, slot_atoms
from sopkit._runtime.records import CustomerState

Check = Callable[[CustomerState], bool]  # a guard's truth for the customer as they are now
Limits = tuple[list[int], Atoms]  # the boundaries and comparisons of the conditions live now

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b), "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b), "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b), ">=": lambda a, b: bool(a >= b),
}
_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


class WakeGuards:
    """One day-counting fact's conditions: those always live (no guard) and the guarded ones,
    with the boundaries and comparisons each makes with the fact."""

    def __init__(self, always: tuple[set[int], set[tuple[str, float]]],
                 guarded: list[tuple[list[Check], set[int], set[tuple[str, float]]]],
                 reads_scores: bool) -> None:
        self._always = always
        self._guarded = guarded
        self.reads_scores = reads_scores  # a guard compares a score (else tags and stage)
        self._limits: dict[int, Limits] = {}  # by mask of the guarded conditions live

    def live(self, cs: CustomerState) -> int:
        """The guarded conditions none of whose guards is false now, as a bit mask."""
        mask = 0
        for bit, (checks, _, _) in enumerate(self._guarded):
            for check in checks:
                if not check(cs):
                    break
            else:
                mask |= 1 << bit
        return mask

    def limits(self, mask: int) -> Limits:
        """The boundaries and comparisons of the conditions always live and those in `mask`
        (no boundaries: no crossing can change anything)."""
        found = self._limits.get(mask)
        if found is None:
            bounds, atoms = set(self._always[0]), set(self._always[1])
            for bit, (_, more_bounds, more_atoms) in enumerate(self._guarded):
                if mask >> bit & 1:
                    bounds |= more_bounds
                    atoms |= more_atoms
            found = self._limits[mask] = (sorted(bounds), tuple(sorted(atoms)))
        return found


Live = tuple[int, list[int], Atoms]  # the live conditions' mask, boundaries, comparisons


class GuardTable:
    """The guards of every day-counting fact, answered once per set of tags, stage and (when a
    guard reads one) scores: tags are interned, so a customer's answer is a lookup."""

    def __init__(self, plans: list[WakeGuards | None], scores: bool) -> None:
        self._plans = plans
        self._scores = scores
        self._memo: dict[tuple[Any, ...], tuple[Live | None, ...]] = {}

    def live(self, cs: CustomerState) -> tuple[Live | None, ...]:
        """Per fact (in `plans` order), the conditions live now; None: every crossing wakes."""
        key = (cs.tags, cs.stage, tuple(cs.scores)) if self._scores else (cs.tags, cs.stage)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= 4096:  # bounded: combinations of tags and stage are few
                self._memo.clear()
            answers: list[Live | None] = []
            for p in self._plans:
                if p is None:
                    answers.append(None)
                else:
                    mask = p.live(cs)
                    answers.append((mask, *p.limits(mask)))
            found = self._memo[key] = tuple(answers)
        return found


def table(ir: PlaybookIR, slots: list[int | None]) -> GuardTable | None:
    """The guard table of these slots (None: a slot that is not guarded); None when none is."""
    plans = [None if slot is None else plan(ir, slot) for slot in slots]
    if all(p is None for p in plans):
        return None
    return GuardTable(plans, any(p.reads_scores for p in plans if p is not None))


def plan(ir: PlaybookIR, slot: int) -> WakeGuards | None:
    """The guards of the conditions a wake-up evaluation reads `slot` through; None when a
    crossing must always wake (the slot read otherwise than compared with a number, or the
    playbook's conditions read RFM facts)."""
    slots = ir["slots"]
    predicates = ir["predicates"]
    if any(slots[s]["source"] == "rfm" for p in predicates for s in p["reads"]):
        return None
    unread = {r["predicate"] for r in ir["rules"] if r["on"] is not None}
    unread |= {c["audience"] for c in ir.get("campaigns", [])}
    score_of = {sc["slot"]: k for k, sc in enumerate(ir["scores"])}
    always: tuple[set[int], set[tuple[str, float]]] = (set(), set())
    guarded: list[tuple[list[Check], set[int], set[tuple[str, float]]]] = []
    reads_scores = False
    for p in predicates:
        if slot not in p["reads"] or p["id"] in unread:
            continue
        atoms = slot_atoms([p], slot)
        if atoms is None:
            return None
        bounds = {b for op, c in atoms for b in _boundaries(op, c)}
        found = [g for part in _conjuncts(p["cond"])
                 if (g := _guard(part, slots, score_of)) is not None]
        checks = [check for check, _ in found]
        reads_scores |= any(score for _, score in found)
        if checks:
            guarded.append((checks, bounds, set(atoms)))
        else:
            always[0].update(bounds)
            always[1].update(atoms)
    if len(guarded) > 16:  # masks stay small; many guarded conditions: keep every wake-up
        return None
    return WakeGuards(always, guarded, reads_scores)


def _conjuncts(cond: Cond) -> list[Cond]:
    """The parts of a condition that must each hold for it to hold (its top-level `and`)."""
    if cond[0] != "and":
        return [cond]
    return [part for c in cond[1] for part in _conjuncts(c)]


def _guard(part: Cond, slots: list[SlotIR], score_of: dict[int, int]
           ) -> tuple[Check, bool] | None:
    """The part's truth now when it compares a tag, the stage or a score with a constant
    (each changes only in an evaluation), and whether it reads a score; None for any other
    part."""
    negated: bool = part[0] == "not"
    test = part[1] if negated else part
    if test[0] != "cmp":
        return None
    _, op, a, b = test
    if a[0] == "const" and b[0] == "slot":
        a, b, op = b, a, _FLIP[op]
    if a[0] != "slot" or b[0] != "const":
        return None
    slot = slots[a[1]]
    const = b[1]
    cmp = _CMP[op]
    get: Callable[[CustomerState], Any]
    if slot["source"] == "tag":
        tag = slot["name"][4:]

        def get(cs: CustomerState) -> Any:
            return tag in cs.tags
    elif slot["source"] == "builtin" and slot["name"] == "stage":
        def get(cs: CustomerState) -> Any:
            return cs.stage
    elif slot["source"] == "score" and a[1] in score_of:
        k = score_of[a[1]]

        def get(cs: CustomerState) -> Any:
            return cs.scores[k]
    else:
        return None

    def check(cs: CustomerState) -> bool:
        value = get(cs)
        if value is None:  # a comparison with a missing fact is false (semantics.holds)
            return negated
        try:
            return cmp(value, const) != negated
        except TypeError:
            return negated
    return check, slot["source"] == "score"
