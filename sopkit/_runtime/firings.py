"""Campaign firings (群发): scheduled sends to an audience, decided as of each firing instant.

A campaign fires at its `at` time, or at each time of its `every` schedule until `until`.
Firings are wake-ups kept in one global heap (`CampaignPlan`, driven by the coordinator): at
an instant, customers' own wake-ups run first, then firings in (time, file order). At a
firing, every known customer, in customer-id order, is looked at as of that instant
(time-relative metrics computed for it, windows emptied up to it) and the audience condition
is evaluated by an engine of the runtime's kind. The audience is decided for everyone before
any of the firing's actions run; then each member's actions go through the action path
rules use (`ActionPath`: variants, templates, the policy pipeline with consent, holdout,
quiet hours, caps shared with rules, task capacity). The idempotency key holds the firing
instant, so each customer gets at most one message per action per firing, also across
restarts of a live run.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from sopkit._ir.types import CampaignIR, PlaybookIR, SlotIR
from sopkit._lang.cron import Timing, timing
from sopkit._playbook.names import POLICY_ACTIONS as _POLICY_ACTIONS
from sopkit._runtime.actions import ActionPath
from sopkit._runtime.core import CustomerCore
from sopkit._runtime.facts import FactReader
from sopkit._runtime.observe import Observation, tag_changes
from sopkit._runtime.policy import held_out
from sopkit._runtime.records import Action, CustomerState
from sopkit.engines import create_engine

TRIGGER = "campaign"  # the `trigger` of every campaign action record


@dataclass
class FiringReport:
    """The reach of one firing: who was in the audience and what became of them.

    Customers are counted by the outcome of the campaign's first message or task action:
    `sent` will be delivered (now or, `deferred`, later), `capped` hit a frequency cap,
    `suppressed` were stopped otherwise (an opt-out), `held_out` are an experiment's
    holdout. `pilot` is how many of the audience the `sample` kept (all without one); the
    others are recorded with status `holdout` and a `pilot:` reason, counted in no column.
    """

    campaign: str
    time: str
    ts: int
    audience: int = 0
    pilot: int = 0
    sent: int = 0
    deferred: int = 0
    capped: int = 0
    suppressed: int = 0
    held_out: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "time": self.time, "audience": self.audience,
                "pilot": self.pilot, "sent": self.sent, "deferred": self.deferred,
                "capped": self.capped, "suppressed": self.suppressed,
                "held_out": self.held_out}

    def count(self, action: Action) -> None:
        status = action.status
        if status in ("planned", "deferred"):
            self.sent += 1
            self.deferred += status == "deferred"
        elif status == "holdout" and str(action.details.get("reason", "")).startswith("pilot:"):
            self.pilot -= 1  # outside the pilot's sample
        elif status == "holdout":
            self.held_out += 1
        elif status == "suppressed":
            if str(action.details.get("reason", "")).startswith("cap:"):
                self.capped += 1
            else:
                self.suppressed += 1


class Audience:
    """One campaign's audience condition, evaluated on a customer's state at an instant.

    The predicate is compiled into the playbook's IR like any other; here an engine of the
    runtime's kind evaluates just it, on just the facts it reads. Tags and a stage that the
    condition requires (top-level `and` parts) are checked on the state first, so a
    customer who cannot qualify costs no engine call; the engine decides every other one.
    """

    def __init__(self, ir: PlaybookIR, engine: str, facts: FactReader,
                 predicate: int) -> None:
        spec = ir["predicates"][predicate]
        self.pid = predicate
        self.text: str = spec["text"]
        self.reads: list[int] = spec["reads"]
        self.slots = ir["slots"]
        self.engine = create_engine(engine,
                                    {"slots": ir["slots"], "predicates": [spec]})
        reads = set(self.reads)
        self._size = len(ir["slots"])
        self._fill = facts.filler(facts.plan.only(reads))
        self._facts = facts
        self.required, self.forbidden, self.stage = _necessary(spec["cond"], self.slots)

    def facts(self, cs: CustomerState, now: int, today: int) -> list[Any]:
        """The facts vector for the slots this audience reads (None elsewhere)."""
        facts: list[Any] = [None] * self._size
        self._fill(facts, cs, now, today)
        return facts

    def evaluate(self, cs: CustomerState, now: int, today: int) -> list[Any] | None:
        """The facts that qualified the customer, or None when they are not in it."""
        tags = cs.tags
        if self.stage is not None and cs.stage != self.stage:
            return None
        for tag in self.required:
            if tag not in tags:
                return None
        for tag in self.forbidden:
            if tag in tags:
                return None
        facts = self.facts(cs, now, today)
        return facts if self.pid in self.engine.evaluate(facts) else None

    def why(self, cs: CustomerState, facts: list[Any]) -> dict[str, Any]:
        """What the condition read, by name (dates as YYYY-MM-DD), and the tags if any."""
        return self._facts.why(cs, self.reads, facts)


def _necessary(cond: list[Any], slots: list[SlotIR]
               ) -> tuple[list[str], list[str], str | None]:
    """Tags that must be held, tags that must not be, and the stage the condition needs:
    only from its top-level `and` parts, so each one is necessary for it to hold."""
    parts = cond[1] if cond[0] == "and" else [cond]
    required: list[str] = []
    forbidden: list[str] = []
    stage: str | None = None
    for part in parts:
        negated = part[0] == "not"
        test = part[1] if negated else part
        if test[0] != "cmp" or test[1] != "==" or test[2][0] != "slot" or test[3][0] != "const":
            continue
        slot, value = slots[test[2][1]], test[3][1]
        if slot["source"] == "tag" and value is True:
            (forbidden if negated else required).append(slot["name"][4:])
        elif slot["source"] == "builtin" and slot["name"] == "stage" and not negated \
                and isinstance(value, str):
            stage = value
    return required, forbidden, stage


class Campaign:
    """One compiled campaign: its timing, audience, experiment, pilot and actions."""

    def __init__(self, core: CustomerCore, spec: CampaignIR) -> None:
        ir = core.ir
        self.spec = spec
        self.path: ActionPath = core.actions
        self.name: str = spec["name"]
        self.index: int = spec["index"]
        holidays = core.facts.holidays
        self.timing: Timing = timing(ir["timezone"], spec["at"], spec["every"],
                                     spec["until"],
                                     lambda day: holidays.is_workday(day.toordinal()))
        self.audience = Audience(ir, core.engine.name, core.facts, spec["audience"])
        self.actions: list[dict[str, Any]] = spec["actions"]
        self.experiment: str | None = spec["experiment"]
        self.sample: float | None = spec["sample"]
        # what the policy pipeline and the experiment split read, as for a rule
        self.rule = {"name": self.name, "experiment": self.experiment, "sample": self.sample,
                     "kind": "campaign"}
        experiment = ir["experiments"].get(self.experiment or "")
        self.variants: list[str] = list(experiment["variants"] or []) if experiment else []
        primary = [i for i, a in enumerate(self.actions) if a["type"] in _POLICY_ACTIONS]
        self.primary = primary[0] if primary else None

    @property
    def channels(self) -> list[str]:
        return sorted({a["channel"] for a in self.actions if a.get("channel")})

    def in_pilot(self, customer_id: str) -> bool:
        """Whether a pilot (`sample`) keeps the customer: the same bucket as a rule's pilot."""
        return self.sample is None or held_out(f"pilot:{self.name}", self.sample, customer_id)

    def variant(self, customer_id: str) -> str | None:
        """The customer's arm of the campaign's experiment: 'holdout', a variant, or None."""
        return self.path.variant(self.rule, customer_id)

    def key(self, when: int, customer_id: str, index: int) -> str:
        return f"{self.path.pk}:campaign:{self.name}:{when}:{customer_id}:{index}"

    def execute(self, cs: CustomerState, when: int, facts: dict[str, Any], out: list[Action],
                variant: str | None = None, decide: bool = True) -> bool:
        """Carry out the actions for one member; True if one of them changed a fact.

        The customer's arm of the experiment (a variant or `holdout`) is recorded on each
        message and task, and a variant's own template and params replace the send's, as
        for a rule. `decide=False` (previews) renders `variant` without asking the policy
        pipeline, which would count the messages against caps and capacities.
        """
        return self.path.run(cs, when, self.rule, self.actions,
                             lambda i: self.key(when, cs.customer_id, i), TRIGGER, facts, out,
                             base={"firing": self.path.calendar.format(when)},
                             variant=variant, decide=decide)


class CampaignPlan:
    """A runtime's campaigns and their pending firings (a heap of (time, file index)).

    Nothing here is persisted: after a restore the next firings are the first ones after
    the restored clock, since every firing due by the clock ran before it was saved.
    """

    def __init__(self, core: CustomerCore) -> None:
        self.core = core
        self.campaigns = [Campaign(core, spec) for spec in core.ir.get("campaigns", ())]
        self.by_name = {c.name: c for c in self.campaigns}
        self.heap: list[tuple[int, int]] = []
        self.horizon: int | None = None  # no firing at or after this (previews)
        self._ids: list[str] = []

    def start(self, ts: int, *, inclusive: bool) -> None:
        """Schedule each campaign's first firing at (inclusive) or after `ts`."""
        self.heap = []
        for c in self.campaigns:
            self._push(c.timing.first_from(ts) if inclusive else c.timing.next_after(ts),
                       c.index)

    def _push(self, when: int | None, index: int) -> None:
        if when is not None and (self.horizon is None or when < self.horizon):
            heapq.heappush(self.heap, (when, index))

    def stop_before(self, ts: int) -> None:
        """Run no firing at or after `ts` (a preview at `ts` shows the audience before it)."""
        self.horizon = ts
        self.heap = [item for item in self.heap if item[0] < ts]
        heapq.heapify(self.heap)

    def upcoming(self, start: int, end: int, limit: int = 200) -> list[tuple[int, Campaign]]:
        """Firings in [start, end] by time then file order, at most `limit`."""
        found = [(when, c.index) for c in self.campaigns
                 for when in c.timing.between(start, end, limit)]
        return [(when, self.campaigns[i]) for when, i in sorted(found)[:limit]]

    def customer_ids(self) -> list[str]:
        """Every known customer id, sorted (cached: customers are never removed)."""
        customers = self.core.population.customers
        if len(self._ids) != len(customers):
            self._ids = sorted(customers)
        return self._ids

    def members(self, campaign: Campaign, when: int
                ) -> list[tuple[CustomerState, list[Any]]]:
        """The customers in the audience at `when`, in customer-id order, with their facts."""
        today = self.core.calendar.day_index(when)
        audience = campaign.audience
        out = []
        core = self.core
        if core.source is not None:  # stored customers too, read in pages, members held
            for cs in core.everyone():
                facts = audience.evaluate(cs, when, today)
                if facts is not None:
                    out.append((core.hold(cs), facts))
            return out
        customers = core.population.customers
        for cid in self.customer_ids():
            cs = customers[cid]
            facts = audience.evaluate(cs, when, today)
            if facts is not None:
                out.append((cs, facts))
        return out

    def fire(self, index: int, when: int) -> list[Action]:
        """Run one firing: decide the audience, then each member's actions, in id order."""
        campaign = self.campaigns[index]
        self._push(campaign.timing.next_after(when), index)
        core = self.core
        observers = core.observers
        members = self.members(campaign, when)
        report = FiringReport(campaign.name, core.calendar.format(when), when, len(members),
                              len(members))
        out: list[Action] = []
        for cs, facts in members:
            first = len(out)
            tags = frozenset(cs.tags)
            changed = campaign.execute(cs, when, campaign.audience.why(cs, facts), out)
            if campaign.primary is not None:
                report.count(out[first + campaign.primary])
            if observers.wants("member"):
                observers.emit(Observation("member", when, cs, actions=out[first:]))
            core.population.touched.add(cs.customer_id)
            if observers.wants("tag"):  # mirrored like a rule's tags
                tag_changes(observers, cs, tags, when)
            if changed:  # tags, stage or owner changed: rules see it at once
                out.extend(core.tick(cs, when, None))
        if observers.wants("firing"):
            observers.emit(Observation("firing", when, report=report))
        return out
