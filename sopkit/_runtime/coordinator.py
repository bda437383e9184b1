"""The population coordinator: the one clock, and what looks at every customer at once.

`Coordinator.advance_ts` is the only place virtual time moves. Up to an instant it runs, in
order: the wake-ups due (customers', by time then customer id, through the per-customer
core), the population refits (RFM breakpoints, CLV parameters: population facts the core
reads until the next refit), and campaign firings (after the customers' own wake-ups at the
same instant). A staff member's departure hands their customers over (离职继承), and staff
task capacity is shared by every customer through the policy state.
"""

from __future__ import annotations

import datetime as dt
import heapq
from typing import Any

from sopkit._ir.types import ClvIR, PlaybookIR, RfmIR
from sopkit._lang.clock import Calendar
from sopkit._runtime import clvfacts as _clvfacts
from sopkit._runtime.core import CustomerCore
from sopkit._runtime.firings import CampaignPlan
from sopkit._runtime.inputs import STAFF_DEPARTED
from sopkit._runtime.records import Action, CustomerState
from sopkit._runtime.wakequeue import CLV_REFIT, RFM_REFIT
from sopkit._stats import rfm as _rfm

HANDOVER_RULE = "handover"  # the rule name on the records a hand-over makes
_RFM_ANCHOR = dt.date(2024, 1, 1).toordinal()  # a Monday: "7d" refits every Monday


class Coordinator:
    """Drives the clock over a population of customers (see the module's docstring)."""

    def __init__(self, ir: PlaybookIR, calendar: Calendar, core: CustomerCore) -> None:
        self.ir = ir
        self.calendar = calendar
        self.core = core
        self.population = core.population
        self.customers = core.population.customers
        self.pk = f"{ir['playbook']}:{ir['version']}"
        self.now_ts: int | None = None
        self.unstarted: list[str] = []  # customers known before the clock started
        self.staff_event_ids: dict[str, int] | None = None  # staff_departed events' ids
        self._rfm: RfmIR | None = ir.get("rfm")
        self.rfm_next: int | None = None  # the next refit instant, once the clock started
        self._clv: ClvIR | None = ir.get("clv")
        self.clv_next: int | None = None
        self.clv_models: Any = core.clv_models
        # scheduled campaigns (群发): global wake-ups after customers' own (firings.py)
        self.campaign_plan = CampaignPlan(core)

    def wake(self, cs: CustomerState) -> None:
        """Evaluate a customer at the current time (a new profile), or when the clock starts."""
        if self.now_ts is None:
            self.unstarted.append(cs.customer_id)
        else:
            self.core.queue.push(cs, self.now_ts)

    def restart(self, rfm: tuple[Any, int | None], clv: tuple[Any, int | None]) -> None:
        """Continue from a saved clock: the fits in force, their next refits, the firings."""
        self.population.rfm_breaks, self.rfm_next = rfm
        queue = self.core.queue
        if self._rfm is not None and self.rfm_next is not None:
            queue.add(self.rfm_next, RFM_REFIT)
        self.population.clv_params, self.clv_next = clv
        if self._clv is not None and self.clv_next is not None:
            queue.add(self.clv_next, CLV_REFIT)
        if self.now_ts is not None:  # every firing due by the saved clock has run
            self.campaign_plan.start(self.now_ts, inclusive=False)

    def advance_ts(self, ts: int) -> list[Action]:
        """Move the clock to `ts` (unix seconds), running everything due by then in order:
        wake-ups and refits due by the next campaign firing, then that firing, and so on."""
        out: list[Action] = []
        if self.now_ts is None or self.unstarted:
            starting = self.now_ts is None
            start = ts if self.now_ts is None else self.now_ts
            self.now_ts = start
            for customer_id in self.unstarted:
                cs = self.core.lookup(customer_id)
                if cs is not None:  # not evicted since
                    self.core.queue.push(cs, start)
            self.unstarted.clear()
            if starting:
                self.campaign_plan.start(start, inclusive=True)
        queue = self.core.queue
        if self._rfm is not None and self.rfm_next is None:
            self.rfm_next = self.next_refit(self.now_ts, self._rfm["every"])
            queue.add(self.rfm_next, RFM_REFIT)
        if self._clv is not None and self.clv_next is None:
            self.clv_next = self.next_refit(self.now_ts, self._clv["every"])
            queue.add(self.clv_next, CLV_REFIT)
        firings = self.campaign_plan.heap
        # stored customers due (a source), into the queue
        load_due = self.core.load_due if self.core.stored_wakes is not None else None
        tick = self.core.tick
        customers = self.customers
        times = queue.times
        while True:
            # refits and customers' wake-ups due by the next campaign firing run first (at
            # the same instant too); each instant's ids in order (refits sort first)
            bound = firings[0][0] if firings and firings[0][0] <= ts else ts
            while True:
                if load_due is not None:
                    load_due(bound)
                if not times or times[0] > bound:
                    break
                when = times[0]
                for customer_id in queue.take(when):
                    if customer_id == RFM_REFIT:
                        self.now_ts = when
                        out.extend(self.rfm_refit(when))
                        continue
                    if customer_id == CLV_REFIT:
                        self.now_ts = when
                        out.extend(self.clv_refit(when))
                        continue
                    cs = customers.get(customer_id)
                    if cs is None or cs.wake_at != when:
                        continue  # superseded by a later schedule, or evicted
                    cs.wake_at = None
                    self.now_ts = when
                    out.extend(tick(cs, when, None))
            if not firings or firings[0][0] > ts:
                break
            when, index = heapq.heappop(firings)
            self.now_ts = when
            out.extend(self.campaign_plan.fire(index, when))
            firings = self.campaign_plan.heap
        self.now_ts = max(self.now_ts, ts)
        return out

    def quiet_until(self) -> int:
        """`advance_ts(ts)` only moves the clock for a `ts` before this instant: nothing
        (a wake-up, a refit, a firing, a stored customer) may be due by then. A lower bound;
        below any instant when that cannot be told (before the clock starts)."""
        never = -(1 << 62)
        if self.now_ts is None or self.unstarted or self.core.stored_wakes is not None or \
                (self._rfm is not None and self.rfm_next is None) or \
                (self._clv is not None and self.clv_next is None):
            return never
        first, firings = self.core.queue.first(), self.campaign_plan.heap
        quiet = first if first is not None else 1 << 62
        return min(quiet, firings[0][0]) if firings else quiet

    def pass_to(self, ts: int) -> None:
        """`advance_ts(ts)` for a `ts` before `quiet_until()`: the clock moves, no more."""
        self.now_ts = ts if self.now_ts is None else max(self.now_ts, ts)

    def next_refit(self, after: int, every: int) -> int:
        """The first refit instant after `after`: a day start every `every` seconds' days."""
        step = max(1, every // 86400)
        day = self.calendar.day_index(after) + 1
        day += (_RFM_ANCHOR - day) % step
        return self.calendar.day_start(day)

    def rfm_refit(self, now: int) -> list[Action]:
        """Recompute the population's breakpoints; re-evaluate the customers they re-score."""
        today = self.calendar.day_index(now)
        rfm_values = self.core.facts.rfm_values
        values = {cid: rfm_values(cs, now, today) for cid, cs in self.customers.items()}
        found = self.rfm_fit([v for v in values.values() if v is not None])
        if found[0] is not None and found[1] is not None and found[2] is not None:
            self.population.rfm_breaks = (found[0], found[1], found[2])
        out: list[Action] = []
        breaks = self.population.rfm_breaks
        if self.core.facts.plan.rfm and breaks is not None:
            for customer_id in sorted(self.customers):
                cs = self.customers[customer_id]
                if _rfm.scores(values[customer_id], breaks) != cs.rfm:
                    out.extend(self.core.tick(cs, now, None))
        self.rfm_next = self.next_refit(now, self._rfm["every"] if self._rfm else 86400)
        self.core.queue.add(self.rfm_next, RFM_REFIT)
        return out

    def rfm_fit(self, bought: list[tuple[float, float, float]]) -> list[_rfm.Breaks | None]:
        """The breakpoints of each measure over these customers' values (a partitioned run
        gathers every partition's: sopkit/_offline/partition.py)."""
        return [_rfm.breakpoints([v[k] for v in bought]) for k in range(3)]

    def clv_fit(self, ids: list[str], rows: list[tuple[float, float, float, float]]
                ) -> list[_clvfacts.Facts] | None:
        """Refit on these customers' rows (in customer-id order) and set the parameters in
        force (kept when a fit fails); each row's facts, None before any fit."""
        assert self._clv is not None
        fitted = _clvfacts.fit(self.clv_models, rows, self._clv["amount"] is not None)
        if fitted is not None:
            self.population.clv_params = fitted
        params = self.population.clv_params
        if params is None:
            return None
        horizon = self._clv["horizon"] / (7 * 86400)
        return _clvfacts.facts_of(self.clv_models, params, rows, horizon)

    def handover_scope(self, staff: str, team: list[str], least_loaded: bool
                       ) -> tuple[list[str], dict[str, int]]:
        """The customers `staff` owns (by id) and, for least_loaded, each team member's
        customers: the population's (a partitioned run gathers every partition's)."""
        owned: list[str] = []
        load: dict[str, int] = {}
        for cs in self.core.everyone():  # by customer id; stored ones read in pages
            if cs.owner == staff:
                owned.append(cs.customer_id)
            elif least_loaded and cs.owner is not None and cs.owner in team:
                load[cs.owner] = load.get(cs.owner, 0) + 1
        return owned, load

    def clv_refit(self, now: int) -> list[Action]:
        """Refit the [clv] models on every customer's purchases so far; rescore everyone."""
        assert self._clv is not None
        today = self.calendar.day_index(now)
        ids = sorted(cid for cid, cs in self.customers.items() if cs.purchases is not None)
        rows = [_clvfacts.rft(self.customers[cid].purchases or [], today) for cid in ids]
        new = self.clv_fit(ids, rows)
        out: list[Action] = []
        if new is not None:
            for customer_id, facts in zip(ids, new, strict=True):
                cs = self.customers[customer_id]
                if facts != cs.clv:
                    cs.clv = facts
                    if self.core.facts.plan.clv:
                        out.extend(self.core.tick(cs, now, None))
        self.clv_next = self.next_refit(now, self._clv["every"])
        self.core.queue.add(self.clv_next, CLV_REFIT)
        return out

    def handover(self, now: int, staff: str, to: str | None) -> list[Action]:
        """Give every customer `staff` owns to a successor (离职继承); record each move.

        Customers move in customer-id order. A customer no successor can be found for keeps
        the departed owner and gets a `suppressed` record saying why, so none goes missing.
        """
        spec = self.ir.get("handover") or {}
        team = [t for t in spec.get("team", []) if t != staff]
        named = spec.get("successors", {}).get(staff) if spec.get("policy") == "named" else None
        least_loaded = spec.get("policy") == "least_loaded"
        if to is None and named is None and team:  # the team shares them out
            owned, load = self.handover_scope(staff, team, least_loaded)
        else:
            owned, load = self.handover_scope(staff, [], False)
        channel = spec.get("channel")
        out: list[Action] = []
        for turn, customer_id in enumerate(owned):
            successor = to or named
            if successor is None and team:
                if least_loaded:
                    successor = min(team, key=lambda t: (load.get(t, 0), team.index(t)))
                    load[successor] = load.get(successor, 0) + 1
                else:
                    successor = team[turn % len(team)]
            cs = self.core.lookup(customer_id)  # held, or read from the store and held
            if cs is None:  # another partition's: it counts in the turns and loads above
                continue
            details: dict[str, Any] = {"from_owner": staff, "to": successor}
            if channel:
                details["channel"] = channel
            if successor is None:
                details["reason"] = ("no successor: send 'to' on the staff_departed event or "
                                     "declare [handover] with a team")
                status = "suppressed"
            else:
                cs.owner = successor
                status = "planned"
            key = f"{self.pk}:{HANDOVER_RULE}:{customer_id}:{staff}:{now}"
            out.append(Action(self.calendar.format(now), customer_id, HANDOVER_RULE,
                              "reassign", status, f"event:{STAFF_DEPARTED}", key, details,
                              {"owner": staff}, now))
            if successor is not None:
                out.extend(self.core.tick(cs, now, None))  # rules may read the owner
        return out
