"""Facts: what a customer's condition reads, as the vector of slot values the engine sees.

`FactReader` sorts the slots predicates read by where their values come from, once, and fills
a customer's vector at an instant: built-ins, profile, metrics (time-relative ones computed
for the instant), scores, tags, and the RFM and CLV facts given the population's fits in
force. Rules (the core) and campaign audiences (firings) share it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sopkit._ir.types import PlaybookIR, SlotIR
from sopkit._playbook.names import CLV_FACTS
from sopkit._runtime import fillcode as _fillcode
from sopkit._runtime import metrics as _metrics
from sopkit._runtime.holidays import Holidays
from sopkit._runtime.population import Population
from sopkit._runtime.records import CustomerState
from sopkit._stats import rfm as _rfm

_CLV_NAMES = CLV_FACTS  # p_alive, expected_purchases, p_no_purchase, expected_spend
_RFM_NAMES = tuple(_rfm.FACTS)  # rfm_r, rfm_f, rfm_m, rfm_segment: the order of the scores
Event = tuple[str, dict[str, Any]]  # an event's type and fields, as a rule sees it


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """The slots a set of predicates reads, sorted by where their values come from:
    (slot, name) built-ins, (slot, attribute, convert) profile, (slot, metric, convert, how)
    metrics (`how`: `Metric.reading`), (slot, score) scores, (slot, tag) tags, (slot, list
    attribute, item) contains, (slot, index) RFM and CLV facts."""

    builtin: list[tuple[int, str]]
    profile: list[tuple[int, str, bool]]
    metric: list[tuple[int, int, bool, int]]
    score: list[tuple[int, int]]
    tag: list[tuple[int, str]]
    contains: list[tuple[int, str, Any]]
    rfm: list[tuple[int, int]]
    clv: list[tuple[int, int]]

    def only(self, reads: set[int]) -> SlotPlan:
        """The part of the plan for these slots (a campaign audience's)."""
        return SlotPlan(*([x for x in getattr(self, name) if x[0] in reads]
                          for name in self.__slots__))



class FactReader:
    """Fills facts vectors for one playbook's slots (see the module's docstring)."""

    def __init__(self, ir: PlaybookIR, metrics: list[_metrics.Metric],
                 population: Population, holidays: Holidays | None = None) -> None:
        self.ir = ir
        self.holidays = holidays or Holidays()
        self.slots = ir["slots"]
        self.metrics = metrics
        self.population = population
        self.rfm_metrics: tuple[int, int, int] | None = None
        rfm = ir.get("rfm")
        if rfm is not None:
            index = {m.name: k for k, m in enumerate(metrics)}
            self.rfm_metrics = (index[rfm["recency"]], index[rfm["frequency"]],
                                index[rfm["monetary"]])
        self._prepare()

    def _prepare(self) -> None:
        """Sort the slots that predicates read by where their value comes from, once."""
        needed = sorted({s for p in self.ir["predicates"] for s in p["reads"]})
        convert = {"decimal", "date"}
        slots = self.slots
        metric_of = {spec["slot"]: k for k, spec in enumerate(self.ir["metrics"])}
        score_of = {sc["slot"]: k for k, sc in enumerate(self.ir["scores"])}

        def source(name: str) -> list[int]:
            return [i for i in needed if slots[i]["source"] == name]

        self.plan = SlotPlan(
            builtin=[(i, slots[i]["name"]) for i in source("builtin")],
            profile=[(i, slots[i]["name"][8:], slots[i]["type"] in convert)
                     for i in source("profile")],
            # counts and day metrics are ints already; sums, averages and `last` may need
            # converting
            metric=[(i, metric_of[i], self.metrics[metric_of[i]].kind in ("sum", "avg", "last"),
                     self.metrics[metric_of[i]].reading()) for i in source("metric")],
            score=[(i, score_of[i]) for i in source("score")],
            tag=[(i, slots[i]["name"][4:]) for i in source("tag")],
            contains=[(i, slots[i]["list"][8:], slots[i]["value"]) for i in source("contains")],
            rfm=[(i, _RFM_NAMES.index(slots[i]["name"])) for i in source("rfm")],
            clv=[(i, _CLV_NAMES.index(slots[i]["name"])) for i in source("clv")],
        )
        self.event_slots: dict[str, list[tuple[int, str, bool]]] = {}
        for i in source("event"):
            self.event_slots.setdefault(slots[i]["event"], []).append(
                (i, slots[i]["field"], slots[i]["type"] in convert))
        # the plan's vector filled by code made for it (fillcode.py)
        self._fill = self._compiled(self.plan)
        self._refresh = self._compiled(self.plan, refresh_only=True)

    def _compiled(self, plan: SlotPlan, refresh_only: bool = False) -> _fillcode.Fill:
        return _fillcode.compile_fill(plan, self.metrics, self.holidays.is_workday,
                                      engine_value, refresh_only=refresh_only)

    def facts(self, cs: CustomerState, now: int, today: int,
               event: tuple[str, dict[str, Any]] | None) -> list[Any]:
        """The facts vector the engine sees: slot values, None where missing.

        Profile, metric and event facts cannot change within one tick; `_refresh` updates
        the ones rules and derived facts can change (stage, owner, scores, tags).
        """
        facts: list[Any] = [None] * len(self.slots)
        self._fill(facts, cs, now, today)
        if self.plan.rfm:
            self._rfm(facts, cs, now, today, self.plan, record_rfm=True)
        if event is not None:
            fields = event[1]
            for i, fname, conv in self.event_slots.get(event[0], ()):
                value = fields.get(fname)
                facts[i] = engine_value(value) if conv and value is not None else value
        return facts

    def filler(self, plan: SlotPlan) -> _fillcode.Fill:
        """The function that sets the facts the plan's slots hold (all but event fields) for
        a customer at an instant: a part of this reader's plan (a campaign audience's),
        made once by its user."""
        fill = self._compiled(plan)
        if not plan.rfm:
            return fill

        def fill_rfm(facts: list[Any], cs: CustomerState, now: int, today: int) -> None:
            fill(facts, cs, now, today)
            self._rfm(facts, cs, now, today, plan, record_rfm=False)

        return fill_rfm

    def _rfm(self, facts: list[Any], cs: CustomerState, now: int, today: int,
             plan: SlotPlan, record_rfm: bool) -> None:
        """The RFM facts against the population's current breakpoints."""
        scored = self.rfm_scores(cs, now, today)
        if record_rfm:
            cs.rfm = scored
        for i, k in plan.rfm:
            facts[i] = None if scored is None else scored[k]

    def rfm_values(self, cs: CustomerState, now: int,
                    today: int) -> tuple[float, float, float] | None:
        """The customer's recency, frequency and monetary value now; None before a purchase."""
        assert self.rfm_metrics is not None
        r, f, m = self.rfm_metrics
        recency = self.metrics[r].value(cs.metrics[r], now, today, cs.profile)
        if recency is None:
            return None
        frequency = self.metrics[f].value(cs.metrics[f], now, today, cs.profile)
        money = self.metrics[m].value(cs.metrics[m], now, today, cs.profile)
        return float(recency), float(frequency or 0), float(money or 0)

    def rfm_scores(self, cs: CustomerState, now: int,
                    today: int) -> tuple[int, int, int, str] | None:
        breaks = self.population.rfm_breaks
        if breaks is None:
            return None
        return _rfm.scores(self.rfm_values(cs, now, today), breaks)

    def refresh(self, facts: list[Any], cs: CustomerState, today: int) -> None:
        """Update the facts a round can change: built-ins, scores and tags."""
        self._refresh(facts, cs, today, today)

    def builtin(self, cs: CustomerState, name: str, today: int) -> Any:
        """A built-in fact's value (dates as day ordinals)."""
        if name == "stage":
            return cs.stage
        if name == "owner":
            return cs.owner
        if name == "customer_id":
            return cs.customer_id
        if name == "is_workday":
            return self.holidays.is_workday(today)
        if name == "is_holiday":
            return not self.holidays.is_workday(today)
        return today

    def why(self, cs: CustomerState, reads: list[int], facts: list[Any]) -> dict[str, Any]:
        """The facts a condition read (slot numbers `reads`): names and values (dates as
        YYYY-MM-DD), tags as a list. Rules and campaign audiences share it."""
        out: dict[str, Any] = {}
        for s in reads:
            slot = self.slots[s]
            if slot["source"] == "tag":
                out["tags"] = sorted(cs.tags)
            else:
                out[slot.get("label", slot["name"])] = display(slot, facts[s])
        return out


def engine_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.date):
        return value.toordinal()
    return value


def display(slot: SlotIR, value: Any) -> Any:
    if value is not None and slot["type"] == "date":
        return dt.date.fromordinal(value).isoformat()
    return value
