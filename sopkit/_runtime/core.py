"""The per-customer core: one customer's state stepped through its events and wake-ups, given
the population facts in force (RFM breakpoints, CLV parameters: the coordinator's refits).

Order is part of the contract (docs/semantics.md): within one evaluation, scores settle
first, then tags, then the stage, then rules fire one at a time by priority (higher first)
and file order; a rule whose actions change a fact (tag, untag, set_stage, reassign) makes
everything re-evaluate before the next rule; a chain longer than MAX_ROUNDS raises
ChainError naming the rules and tags involved. After an evaluation the core computes the
next instant anything about the customer could change and queues a wake-up for it.
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Iterator, Mapping
from typing import Any

from sopkit._errors import ChainError
from sopkit._ir.types import ClvIR, PlaybookIR
from sopkit._lang.clock import Calendar
from sopkit._playbook.names import HOLIDAY_BUILTINS
from sopkit._runtime import clvfacts as _clvfacts
from sopkit._runtime import crossings as _crossings
from sopkit._runtime import metrics as _metrics
from sopkit._runtime import schedcode as _schedcode
from sopkit._runtime import wakeguards as _wakeguards
from sopkit._runtime.actions import ActionPath
from sopkit._runtime.facts import Event, FactReader
from sopkit._runtime.observe import Observation, Observers, tag_changes
from sopkit._runtime.population import Population
from sopkit._runtime.records import NO_TIME, Action, CustomerState, Pending
from sopkit._runtime.source import CustomerSource, StoredWakes
from sopkit._runtime.wakequeue import WakeQueue
from sopkit.engines import Engine

MAX_ROUNDS = 64
_LAST_DAY = dt.date.max.toordinal()
_NEVER = 1 << 62  # later than any timestamp the calendar can hold
_UNKNOWN = -(1 << 63)  # in CustomerState.wake_cache: not computed
_NONE = -(1 << 63) + 1  # in CustomerState.wake_cache: None
# scores, non-sticky and sticky dynamic tags holding, stage (CustomerCore._derived)
Derived = tuple[tuple[float, ...], frozenset[str], frozenset[str], str | None]
# entry rules to arm again, (rule, its predicate holds, its `on`) to look at in order, the
# derived facts and their scores as a list (CustomerCore._round_plan)
RoundPlan = tuple[list[int], list[tuple[int, bool, str | None]], Derived, list[float]]


class CustomerCore:
    """Steps one customer at a time (see the module's docstring)."""

    def __init__(self, ir: PlaybookIR, calendar: Calendar, engine: Engine,
                 metrics: list[_metrics.Metric], event_types: Mapping[str, Any],
                 facts: FactReader, actions: ActionPath, population: Population,
                 observers: Observers) -> None:
        self.ir = ir
        self.calendar = calendar
        self.engine = engine
        self.metrics = metrics
        self.facts = facts
        self.actions = actions
        self.population = population
        self.observers = observers
        self.queue = WakeQueue(population.customers)
        # where customers not held are read from (None: every customer is held)
        self.source: CustomerSource | None = None
        self.stored_wakes: StoredWakes | None = None
        self.rules = ir["rules"]
        self.metrics_by_event: dict[str, list[int]] = {}
        for etype in event_types:
            self.metrics_by_event[etype] = [
                k for k, metric in enumerate(metrics) if metric.matches(etype)]
        slot_metric = {spec["slot"]: k for k, spec in enumerate(ir["metrics"])}
        # (metric index or None for a built-in, boundaries, any, counts from an event,
        # is_workday / is_holiday rather than `today`)
        self.day_wakeups = [
            (slot_metric.get(w["slot"]), w["boundaries"], w["any"],
             w["slot"] in slot_metric and isinstance(
                 metrics[slot_metric[w["slot"]]], _metrics.DaysSince),
             name in HOLIDAY_BUILTINS)
            for name, w in ir["wakeups"].items()
        ]
        # a days_to_anniversary's comparisons, to skip the wake-up of a jump that flips none
        # (crossings.next_day_crossing); None: read otherwise too, every jump wakes
        self.day_atoms: list[_crossings.Atoms | None] = [
            _crossings.slot_atoms(ir["predicates"], w["slot"])
            if not w["any"] and w["slot"] in slot_metric and isinstance(
                metrics[slot_metric[w["slot"]]], _metrics.DaysToAnniversary) else None
            for w in ir["wakeups"].values()
        ]
        # the conditions reading each, with their guards: after an evaluation, the crossings
        # of conditions a false guard holds false are not woken (wakeguards.py); None: every
        # crossing wakes
        self.day_guards = _wakeguards.table(ir, [
            None if w["any"] or name in HOLIDAY_BUILTINS else w["slot"]
            for name, w in ir["wakeups"].items()])
        # windows that conditions read wake their customer when an event leaving them can
        # cross a threshold (None: any departure may matter); their answers are cached in
        # wake_cache after the day wake-ups' and forgotten when the metric observes an event
        self.windowed: list[tuple[int, tuple[list[float], list[int]] | None]] = [
            (slot_metric[w["slot"]], None if w["any"] else (w["thresholds"], w["boundaries"]))
            for w in ir["windows"].values()
        ]
        first = self._window_first = 3 * len(self.day_wakeups)
        self._cache_size = first + len(self.windowed)
        self._window_cache: dict[str, list[int]] = {
            etype: [first + j for j, (k, _) in enumerate(self.windowed) if k in observed]
            for etype, observed in self.metrics_by_event.items()
        }
        self.on_rules: dict[str, list[int]] = {}
        for r in ir["rule_order"]:
            on = self.rules[r]["on"]
            if on:
                self.on_rules.setdefault(on, []).append(r)
        self._entry_rules = [(r["index"], r["predicate"]) for r in self.rules
                             if r["on"] is None]
        # what _settle_derived reads on every evaluation, unpacked once
        self._score_factors = [[(f["predicate"], f["points"]) for f in score["factors"]]
                               for score in ir["scores"]]
        self._dynamic_tags = [(tag["predicate"], tag["name"], bool(tag["sticky"]))
                              for tag in ir["tags"] if tag["predicate"] is not None]
        self._fire_order = [(r, self.rules[r]["predicate"], self.rules[r]["on"])
                            for r in ir["rule_order"]]
        # what a round does for the predicates that hold (`_round_plan`), remembered
        self._round_memo: dict[frozenset[int], RoundPlan] = {}
        self._stage_predicates = [(stage["name"], stage["predicate"]) for stage in ir["stages"]]
        self._nonsticky = frozenset(name for _, name, sticky in self._dynamic_tags if not sticky)
        self._sticky = frozenset(name for _, name, sticky in self._dynamic_tags if sticky)
        self._schedule = _schedcode.compile_schedule(self, _NEVER, _UNKNOWN, _NONE, _LAST_DAY)
        self._observe = {etype: _schedcode.compile_observe(metrics, observed)
                         for etype, observed in self.metrics_by_event.items() if observed}
        self._clv: ClvIR | None = ir.get("clv")
        self.clv_models: Any = _clvfacts.load_models() if self._clv is not None else None

    def blank(self, customer_id: str) -> CustomerState:
        """A new customer's state, not yet held by the population."""
        n_rules = len(self.rules)
        return CustomerState(
            customer_id,
            metrics=[metric.new() for metric in self.metrics],
            scores=[0.0] * len(self.ir["scores"]),
            rule_truth=bytearray(n_rules),
            fired=[0] * n_rules,
            attempts=[0] * n_rules,
            last_fired=array("q", [NO_TIME]) * n_rules,
        )

    # ---- the customers held, and those read from a source ----------------------------------

    def use_source(self, source: CustomerSource) -> None:
        """Read customers not held from `source` when they are needed."""
        self.source = source
        self.stored_wakes = StoredWakes(source)

    def adopt(self, cs: CustomerState) -> CustomerState:
        """Hold a customer read from a store: counted by stage, woken when due."""
        customers = self.population.customers
        old = customers.get(cs.customer_id)
        if old is not None:
            self.population.stage_counts[old.stage] -= 1
        customers[cs.customer_id] = cs
        self.population.stage_counts[cs.stage] += 1
        if cs.wake_at is not None:
            self.queue.add(cs.wake_at, cs.customer_id)
        return cs

    def hold(self, cs: CustomerState) -> CustomerState:
        """`cs` (from `everyone`) held from now on, if it is not already."""
        return cs if cs.customer_id in self.population.customers else self.adopt(cs)

    def lookup(self, customer_id: str) -> CustomerState | None:
        """The customer held, else read from the source and held; None if unknown."""
        cs = self.population.customers.get(customer_id)
        if cs is None and self.source is not None:
            found = self.source.fetch(customer_id)
            if found is not None:
                cs = self.adopt(found)
        return cs

    def evict(self, customer_id: str) -> None:
        """Stop holding a customer whose state is stored as it is (the source has it)."""
        cs = self.population.customers.pop(customer_id)
        self.population.stage_counts[cs.stage] -= 1

    def everyone(self) -> Iterator[CustomerState]:
        """Every customer in customer-id order: those held, and (with a source) the stored
        ones not held, read one at a time and not held (`hold` keeps one)."""
        held = self.population.customers
        mine = sorted(held)
        i = 0
        if self.source is not None:  # the held ones' stored states are older: not read
            for cs in self.source.stored(frozenset(mine)):
                cid = cs.customer_id
                while i < len(mine) and mine[i] < cid:
                    yield held[mine[i]]
                    i += 1
                if i < len(mine) and mine[i] == cid:
                    i += 1
                    yield held[cid]
                else:
                    yield cs
        for cid in mine[i:]:
            yield held[cid]

    def load_due(self, bound: int) -> None:
        """Hold each stored customer whose wake-up is due by `bound` and not after the queue's
        first instant, so that instant's ids, held or stored, are taken together and run in
        (time, customer id) order over everyone."""
        stored = self.stored_wakes
        if stored is None:
            return
        queue = self.queue
        customers = self.population.customers
        while True:
            head = stored.head(bound)
            first = queue.first()
            if head is None or (first is not None and first < head[0]):
                return
            stored.take()
            if head[1] not in customers:  # a held customer's own wake_at is in the queue
                self.lookup(head[1])

    def event(self, cs: CustomerState, ts: int, etype: str,
              fields: dict[str, Any]) -> list[Action]:
        """A declared event: the metrics observe it, then the customer is evaluated."""
        day = self.calendar.day_index(ts)
        observe = self._observe.get(etype)
        if observe is not None:
            observe(cs.metrics, ts, day, fields)
        if cs.wake_cache is not None:
            for pos in self._window_cache.get(etype, ()):
                cs.wake_cache[pos] = _UNKNOWN  # the window changed: its next crossing too
        if self._clv is not None and etype == self._clv["event"]:
            self._clv_observe(cs, day, fields)
        return self.tick(cs, ts, (etype, fields))

    def tick(self, cs: CustomerState, now: int,
              event: Event | None) -> list[Action]:
        out: list[Action] = []
        self.population.touched.add(cs.customer_id)
        observers = self.observers
        tags_before = frozenset(cs.tags) if observers.wants("tag") else None
        today = self.calendar.day_index(now)
        due: list[Pending] = []
        if cs.pending:
            due = sorted((p for p in cs.pending if p.due <= now), key=lambda p: (p.due, p.seq))
            cs.pending = [p for p in cs.pending if p.due > now]
        on_rules = list(self.on_rules.get(event[0], ())) if event else []
        history: list[str] = []
        facts = self.facts.facts(cs, now, today, event)
        evaluate = self.engine.evaluate
        rule_truth = cs.rule_truth
        round_memo = self._round_memo
        nonsticky, sticky = self._nonsticky, self._sticky
        for round_ in range(MAX_ROUNDS):
            if round_:
                self.facts.refresh(facts, cs, today)
            true = evaluate(facts)
            plan = round_memo.get(true)
            if plan is None:
                plan = self._round_plan(true)
            if plan[0] and 1 in rule_truth:  # seen false, even for a moment: armed again
                for r in plan[0]:
                    rule_truth[r] = 0
            derived = plan[2]  # told without a call when nothing derived changes (most rounds;
            # plan[3] is its scores as a list: one comparison; finite sums, no NaN)
            if (cs.scores != plan[3] or derived[3] != cs.computed_stage or
                    cs.tags & nonsticky != derived[1] or cs.sticky_truth & sticky != derived[2]) \
                    and self._settle_derived(cs, true, derived, history):
                continue
            if cs.pending or due:
                self._cancel(cs, now, true, due, out)
            changed = False
            while due and not changed:
                item = due.pop(0)
                history.append(self.rules[item.rule]["name"])
                changed = self.actions.execute(cs, now, item.rule, item.occurrence, item.facts,
                                        "delayed", out, item.event, item.scheduled)
            if changed:
                continue
            if not self._fire_rules(cs, now, facts, plan[1], event, on_rules, history, out):
                if cs.pending or due:  # rules that just fired may be cancelled
                    self._cancel(cs, now, true, due, out)
                break
        else:
            names = list(dict.fromkeys(history[-12:]))
            raise ChainError(
                f"customer {cs.customer_id}: rules did not settle after {MAX_ROUNDS} rounds; "
                f"these keep re-enabling each other: {', '.join(names) or 'dynamic tags'}")
        if observers.wants("evaluation"):
            observers.emit(Observation("evaluation", now, cs, event, facts, true, out))
        if tags_before is not None:  # the net change of this evaluation
            tag_changes(observers, cs, tags_before, now)
        self.schedule(cs, now, settled=True, today=today)
        return out

    def _cancel(self, cs: CustomerState, now: int, true: frozenset[int], due: list[Pending],
                out: list[Action]) -> None:
        """Drop delayed actions whose cancel_if holds now, recording each as cancelled."""
        for item in [*cs.pending, *due]:
            cancel = self.rules[item.rule]["cancel_predicate"]
            if cancel is not None and cancel in true:
                (cs.pending if item in cs.pending else due).remove(item)
                reason = "cancel_if: " + self.ir["predicates"][cancel]["text"]
                out.extend(self.actions.records(cs, now, item.rule, item.occurrence, item.facts,
                                         "delayed", "cancelled", reason))

    def _derived(self, holding: frozenset[int]) -> Derived:
        """The scores, the non-sticky and sticky dynamic tags whose conditions hold, and the
        stage, when these predicates hold (remembered with the round's plan)."""
        values = []
        for factors in self._score_factors:
            total: float = 0  # summed as sum() does: from the int 0, in factor order
            for pid, points in factors:
                if pid in holding:
                    total += points
            values.append(float(total))
        tags = [(name, sticky) for pid, name, sticky in self._dynamic_tags if pid in holding]
        stage = next((name for name, when in self._stage_predicates
                      if when is None or when in holding), None)
        return (tuple(values), frozenset(name for name, sticky in tags if not sticky),
                frozenset(name for name, sticky in tags if sticky), stage)

    def _settle_derived(self, cs: CustomerState, true: frozenset[int], derived: Derived,
                        history: list[str]) -> bool:
        """Update scores, then dynamic tags, then the stage, to `derived` (the derived facts
        of `true`); True if anything changed."""
        values, nonsticky, sticky_holding, stage = derived
        changed = False
        scores = cs.scores
        for i, value in enumerate(values):
            if value != scores[i]:
                scores[i] = value
                changed = True
        if changed:
            return True
        # no tag changes (nor a sticky condition's truth) when every non-sticky tag is set
        # exactly where its condition holds and every sticky condition holds as it did
        if cs.tags & self._nonsticky != nonsticky or \
                cs.sticky_truth & self._sticky != sticky_holding:
            changed = self._settle_tags(cs, true, history)
        if stage != cs.computed_stage:
            cs.computed_stage = stage
            self.population.set_stage(cs, stage)
            changed = True
        return changed

    def _settle_tags(self, cs: CustomerState, true: frozenset[int], history: list[str]) -> bool:
        """Set and clear dynamic tags as their conditions hold; True if a tag changed."""
        changed = False
        for pid, name, sticky in self._dynamic_tags:
            holds = pid in true
            if sticky:  # set when its condition becomes true; kept until an untag
                was = name in cs.sticky_truth
                if holds != was:
                    cs.sticky_truth = self.population.interned(cs.sticky_truth ^ {name})
                if holds and not was and name not in cs.tags:
                    cs.tags = self.population.interned(cs.tags | {name})
                    history.append(f"tag {name}")
                    changed = True
                continue
            if holds:
                if name not in cs.tags:
                    cs.tags = self.population.interned(cs.tags | {name})
                    history.append(f"tag {name}")
                    changed = True
            elif name in cs.tags:
                cs.tags = self.population.interned(cs.tags - {name})
                history.append(f"untag {name}")
                changed = True
        return changed

    def _round_plan(self, true: frozenset[int]) -> RoundPlan:
        """What a round does for these predicates holding: the entry rules whose predicate
        does not hold (armed again); the rules to look at in firing order with whether theirs
        holds: every `on` rule (its event uses it up either way) and the entry rules whose
        predicate holds; the derived facts (`_derived`), and their scores as a list."""
        if len(self._round_memo) >= 4096:  # bounded: few combinations occur
            self._round_memo.clear()
        rearm = [r for r, pid in self._entry_rules if pid not in true]
        fire = [(r, pid is None or pid in true, on) for r, pid, on in self._fire_order
                if on is not None or pid is None or pid in true]
        derived = self._derived(true)
        found = self._round_memo[true] = (rearm, fire, derived, list(derived[0]))
        return found

    def _fire_rules(self, cs: CustomerState, now: int, facts: list[Any],
                    fire: list[tuple[int, bool, str | None]], event: Event | None,
                    on_rules: list[int], history: list[str], out: list[Action]) -> bool:
        """Fire eligible rules in order (`fire`, from `_round_plan`); True as soon as one
        changes a fact."""
        rule_truth = cs.rule_truth
        for r, holds, on in fire:
            if on is not None:
                if r not in on_rules:
                    continue
                on_rules.remove(r)
                if not holds:
                    continue
                trigger = f"event:{on}"
            else:  # it holds; the round armed it again if it was seen false
                if rule_truth[r]:
                    continue
                rule_truth[r] = 1
                trigger = "entry"
            rule = self.rules[r]
            reads = self.facts.why(cs, rule["reads"], facts)
            cs.attempts[r] += 1
            attempt = cs.attempts[r]
            blocked = self._blocked(cs, now, r)
            if blocked:
                out.extend(self.actions.records(cs, now, r, attempt, reads, trigger, "suppressed",
                                         blocked))
                continue
            cs.fired[r] += 1
            cs.last_fired[r] = now
            history.append(rule["name"])
            workdays = rule.get("delay_workdays")
            if rule["delay"] or workdays:
                due = self._workdays_later(now, workdays) if workdays else \
                    now + (rule["delay"] or 0)
                cs.pending.append(Pending(due, next(self.population.seq), r,
                                           attempt, reads, now, event))
                continue
            if self.actions.execute(cs, now, r, attempt, reads, trigger, out, event):
                return True
        return False

    def _workdays_later(self, now: int, count: int) -> int:
        """The same local time of day on the `count`-th working day after `now`'s local date
        (China's working days, docs/calendar.md)."""
        local = self.calendar.local(now)
        day = self.facts.holidays.add_workdays(local.date().toordinal(), count)
        later = dt.datetime.combine(dt.date.fromordinal(day), local.time().replace(tzinfo=None))
        return int(later.replace(tzinfo=self.calendar.tz).timestamp())

    def _blocked(self, cs: CustomerState, now: int, r: int) -> str:
        rule = self.rules[r]
        if rule["max_times"] is not None and cs.fired[r] >= rule["max_times"]:
            return f"max_times {rule['max_times']} reached"
        last = cs.last_fired[r]
        if rule["cooldown"] and last != NO_TIME and now - last < rule["cooldown"]:
            return f"cooldown until {self.calendar.format(last + rule['cooldown'])}"
        return ""

    def schedule(self, cs: CustomerState, now: int, settled: bool = False,
                 today: int | None = None) -> None:
        """Compute the next instant anything about this customer could change and queue it
        (`settled`: right after an evaluation, when a crossing a false guard holds false is
        not one; `today`: now's day, when the caller has it).

        Candidates: the pending delayed actions' due times; each window's next crossing of a
        threshold a condition reads (cached in `wake_cache` until an event changes the
        window, or the crossing comes); and the start of the earliest day after today on
        which a day-counting fact crosses a boundary (cached per fact until its day comes,
        the event it counts from moves, or another set of conditions is live). The code is
        made for the playbook once (schedcode.py)."""
        self._schedule(cs, now, settled, today)

    def _clv_observe(self, cs: CustomerState, day: int, fields: dict[str, Any]) -> None:
        """A purchase: update the customer's summary and, with a fit, their facts."""
        assert self._clv is not None
        amount = fields.get(self._clv["amount"] or "") if self._clv["amount"] else None
        cs.purchases = _clvfacts.observe(cs.purchases, day, float(amount or 0))
        params = self.population.clv_params
        if params is not None:
            horizon = self._clv["horizon"] / (7 * 86400)
            cs.clv = _clvfacts.one(self.clv_models, params,
                                   _clvfacts.rft(cs.purchases, day), horizon)
