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

from typing import Any

from sopkit._ir.semantics import boundaries as _boundaries
from sopkit._ir.semantics import holds
from sopkit._ir.types import Cond, PlaybookIR, SlotIR
from sopkit._runtime.crossings import Atoms, slot_atoms
from sopkit._runtime.records import CustomerState

Limits = tuple[list[int], Atoms]  # the boundaries and comparisons of the conditions live now
Read = tuple[int, str, Any]  # a slot a guard reads: (slot, "tag" | "stage" | "score", tag or k)


class WakeGuards:
    """One day-counting fact's conditions: those always live (no guard) and the guarded ones,
    with the boundaries and comparisons each makes with the fact."""

    def __init__(self, always: tuple[set[int], set[tuple[str, float]]],
                 guarded: list[tuple[list[Cond], set[int], set[tuple[str, float]]]],
                 reads: set[Read]) -> None:
        self._always = always
        self._guarded = guarded
        self.reads = reads  # the slots the guards read

    def live(self, facts: list[Any]) -> int:
        """The guarded conditions none of whose guards is false for these facts (only the
        guards' slots filled), as a bit mask."""
        mask = 0
        for bit, (parts, _, _) in enumerate(self._guarded):
            if all(holds(part, facts) for part in parts):
                mask |= 1 << bit
        return mask

    def limits(self, mask: int) -> Limits:
        """The boundaries and comparisons of the conditions always live and those in `mask`
        (no boundaries: no crossing can change anything)."""
        bounds, atoms = set(self._always[0]), set(self._always[1])
        for bit, (_, more_bounds, more_atoms) in enumerate(self._guarded):
            if mask >> bit & 1:
                bounds |= more_bounds
                atoms |= more_atoms
        return sorted(bounds), tuple(sorted(atoms))


Live = tuple[int, list[int], Atoms]  # the live conditions' mask, boundaries, comparisons


class GuardTable:
    """The guards of every day-counting fact, answered once per set of tags, stage and (when a
    guard reads one) scores: tags are interned, so a customer's answer is a lookup."""

    def __init__(self, plans: list[WakeGuards | None], width: int) -> None:
        self._plans = plans
        self._width = width  # the IR's slot count: the facts vector's length
        self._reads = sorted(set().union(*(p.reads for p in plans if p is not None)))
        self._scores = any(kind == "score" for _, kind, _ in self._reads)
        self._memo: dict[tuple[Any, ...], tuple[Live | None, ...]] = {}

    def live(self, cs: CustomerState) -> tuple[Live | None, ...]:
        """Per fact (in `plans` order), the conditions live now; None: every crossing wakes."""
        key = (cs.tags, cs.stage, tuple(cs.scores)) if self._scores else (cs.tags, cs.stage)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= 4096:  # bounded: combinations of tags and stage are few
                self._memo.clear()
            facts: list[Any] = [None] * self._width  # the guards' slots, as the tick fills them
            for s, kind, arg in self._reads:
                facts[s] = arg in cs.tags if kind == "tag" else \
                    cs.stage if kind == "stage" else cs.scores[arg]
            answers: list[Live | None] = []
            for p in self._plans:
                if p is None:
                    answers.append(None)
                else:
                    mask = p.live(facts)
                    answers.append((mask, *p.limits(mask)))
            found = self._memo[key] = tuple(answers)
        return found


def table(ir: PlaybookIR, slots: list[int | None]) -> GuardTable | None:
    """The guard table of these slots (None: a slot that is not guarded); None when none is."""
    plans = [None if slot is None else plan(ir, slot) for slot in slots]
    if all(p is None for p in plans):
        return None
    return GuardTable(plans, len(ir["slots"]))


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
    guarded: list[tuple[list[Cond], set[int], set[tuple[str, float]]]] = []
    reads: set[Read] = set()
    for p in predicates:
        if slot not in p["reads"] or p["id"] in unread:
            continue
        atoms = slot_atoms([p], slot)
        if atoms is None:
            return None
        bounds = {b for op, c in atoms for b in _boundaries(op, c)}
        parts: list[Cond] = []
        for part in _conjuncts(p["cond"]):
            read = _guard(part, slots, score_of)
            if read is not None:
                parts.append(part)
                reads.add(read)
        if parts:
            guarded.append((parts, bounds, set(atoms)))
        else:
            always[0].update(bounds)
            always[1].update(atoms)
    if len(guarded) > 16:  # masks stay small; many guarded conditions: keep every wake-up
        return None
    return WakeGuards(always, guarded, reads)


def _conjuncts(cond: Cond) -> list[Cond]:
    """The parts of a condition that must each hold for it to hold (its top-level `and`)."""
    if cond[0] != "and":
        return [cond]
    return [part for c in cond[1] for part in _conjuncts(c)]


def _guard(part: Cond, slots: list[SlotIR], score_of: dict[int, int]) -> Read | None:
    """The slot a part reads when it is a guard: a comparison (possibly under `not`) of a
    tag, the stage or a score with a constant, each of which changes only in an evaluation;
    None for any other part. Its truth is `semantics.holds`'s, as at an evaluation."""
    test = part[1] if part[0] == "not" else part
    if test[0] != "cmp" or {test[2][0], test[3][0]} != {"slot", "const"}:
        return None
    s = test[2][1] if test[2][0] == "slot" else test[3][1]
    source, name = slots[s]["source"], slots[s]["name"]
    if source == "tag":
        return s, "tag", name[4:]
    if source == "builtin" and name == "stage":
        return s, "stage", None
    if source == "score" and s in score_of:
        return s, "score", score_of[s]
    return None
