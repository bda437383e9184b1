"""run: per-customer state, forward chaining to a fixpoint, and virtual-time wake-ups.

Order is part of the contract (docs/semantics.md):
- wake-ups due at or before an event's time run before the event, by time then customer id;
- within one evaluation, scores settle first, then tags, then the stage, then rules fire one
  at a time by priority (higher first) and file order; a rule whose actions change a fact
  (tag, untag, set_stage, reassign) makes everything re-evaluate before the next rule;
- a chain longer than MAX_ROUNDS raises ChainError naming the rules and tags involved.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from . import _metrics
from ._clock import Calendar
from ._compile import compile_playbook
from ._errors import ChainError, EventError
from ._load import LoadedPlaybook
from ._templates import render
from .engines import DEFAULT, Engine, create_engine, resolve

MAX_ROUNDS = 64
_LAST_DAY = dt.date.max.toordinal()
PROFILE_EVENT = "profile"  # a built-in event type that updates profile attributes
_TRUE = {"true", "1", "yes", "y", "是", "t"}
_FALSE = {"false", "0", "no", "n", "否", "f", ""}


@dataclass
class Action:
    """One thing a rule did or would do for one customer, with why and when."""

    time: str
    customer_id: str
    rule: str
    action: str
    status: str = "planned"  # planned | suppressed | cancelled
    trigger: str = "entry"  # entry | event:<type> | delayed
    key: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    ts: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": self.time, "customer_id": self.customer_id, "rule": self.rule,
            "action": self.action, "status": self.status, "trigger": self.trigger,
            "key": self.key,
        }
        out.update(self.details)
        out["facts"] = self.facts
        return out


@dataclass(slots=True)
class _Pending:
    due: int
    seq: int
    rule: int
    occurrence: int
    facts: dict[str, Any]
    scheduled: int
    event: tuple[str, dict[str, Any]] | None = None


@dataclass(slots=True)
class CustomerState:
    """Everything sopkit knows about one customer; the engine keeps none of it."""

    customer_id: str
    profile: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    metrics: list[Any] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    sticky_truth: dict[str, bool] = field(default_factory=dict)
    stage: str | None = None
    computed_stage: str | None = None
    rule_truth: list[bool] = field(default_factory=list)
    fired: list[int] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    last_fired: list[int | None] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)
    wake_at: int | None = None
    # per day metric: (what the answer depends on, the next crossing day); see _schedule
    wake_cache: dict[int, tuple[Any, int | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class CustomerView:
    """A read-only snapshot of a customer's facts, for `Runtime.state`."""

    customer_id: str
    owner: str | None
    stage: str | None
    tags: frozenset[str]
    metrics: dict[str, Any]
    scores: dict[str, float]
    profile: dict[str, Any]
    pending: int


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return value


class Runtime:
    """Evaluates a playbook for many customers as events arrive and (virtual) time passes.

    >>> rt = Runtime(load_playbook("playbooks/retail.toml"))
    >>> rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2024-05-01T10:00:00"})
    """

    def __init__(self, playbook: LoadedPlaybook, *, engine: str = DEFAULT,
                 ir: dict[str, Any] | None = None) -> None:
        self.playbook = playbook
        self.ir = ir if ir is not None else compile_playbook(playbook.model)
        actual, self.engine_notice = resolve(engine)
        self.engine: Engine = create_engine(actual, self.ir)
        ir = self.ir
        self.calendar = Calendar(ir["timezone"], ir["day_starts_minutes"])
        self.slots = ir["slots"]
        self.metrics = [_metrics.build(spec) for spec in ir["metrics"]]
        self.metrics_by_event: dict[str, list[int]] = {}
        for etype in playbook.model.events:
            self.metrics_by_event[etype] = [
                k for k, metric in enumerate(self.metrics) if metric.matches(etype)]
        read = {s for p in ir["predicates"] for s in p["reads"]}
        # windows that conditions read wake their customer when an event leaves them
        self.windowed = [k for k, metric in enumerate(self.metrics)
                         if metric.window and ir["metrics"][k]["slot"] in read]
        slot_metric = {spec["slot"]: k for k, spec in enumerate(ir["metrics"])}
        self.day_wakeups = [
            (slot_metric.get(w["slot"]), w["boundaries"], w["any"])
            for w in ir["wakeups"].values()
        ]
        self.rules = ir["rules"]
        self.on_rules: dict[str, list[int]] = {}
        for r in ir["rule_order"]:
            on = self.rules[r]["on"]
            if on:
                self.on_rules.setdefault(on, []).append(r)
        self.event_types = {name: dict(fields) for name, fields in playbook.model.events.items()}
        self.profile_types = dict(playbook.model.profile)
        self.customers: dict[str, CustomerState] = {}
        # customers per stage right now (None: not evaluated yet or no stage applies), kept up
        # to date as stages change so a report can sample it every day at no cost
        self.stage_counts: Counter[str | None] = Counter()
        self._heap: list[tuple[int, str]] = []
        self._seq = itertools.count()
        self.now: int | None = None
        self._unstarted: list[str] = []
        self.pk = f"{ir['playbook']}:{ir['version']}"
        self._entry_rules = [(r["index"], r["predicate"]) for r in self.rules
                             if r["on"] is None]
        self._prepare_facts()

    # ---- input -------------------------------------------------------------------------

    def _customer(self, customer_id: str) -> CustomerState:
        cs = self.customers.get(customer_id)
        if cs is None:
            n_rules = len(self.rules)
            cs = CustomerState(
                customer_id,
                metrics=[metric.new() for metric in self.metrics],
                scores=[0.0] * len(self.ir["scores"]),
                rule_truth=[False] * n_rules,
                fired=[0] * n_rules,
                attempts=[0] * n_rules,
                last_fired=[None] * n_rules,
            )
            self.customers[customer_id] = cs
            self.stage_counts[None] += 1
        return cs

    def add_profile(self, record: Mapping[str, Any]) -> None:
        """Set a customer's profile attributes (typed per the playbook); EventError if bad."""
        customer_id = _customer_id(record)
        profile: dict[str, Any] = {}
        for attr, kind in self.profile_types.items():
            if attr in record:
                profile[attr] = _convert(record[attr], kind, f"profile attribute '{attr}'")
        known = customer_id in self.customers
        cs = self._customer(customer_id)
        cs.profile.update(profile)
        cs.wake_cache.clear()
        owner = record.get("owner")
        if owner not in (None, ""):
            cs.owner = str(owner)
        if self.now is None:
            if not known:
                self._unstarted.append(customer_id)
        else:
            self._push(cs, self.now)  # evaluate with the new profile at the current time

    def parse_event(self, record: Mapping[str, Any]) -> tuple[str, str, int, dict[str, Any]]:
        """Check and type an event record: (customer id, type, timestamp, fields)."""
        customer_id = _customer_id(record)
        etype = record.get("type")
        if not isinstance(etype, str) or not etype:
            raise EventError("missing event 'type'")
        if etype != PROFILE_EVENT and etype not in self.event_types:
            known = ", ".join(sorted(self.event_types)) or "none"
            raise EventError(f"unknown event type '{etype}' (the playbook declares: {known})",
                             f"unknown event type '{etype}'")
        raw_ts = record.get("ts")
        if not isinstance(raw_ts, str) or not raw_ts:
            raise EventError("missing 'ts' (an ISO 8601 time)")
        try:
            ts = self.calendar.parse(raw_ts)
        except ValueError:
            raise EventError(f"bad 'ts' '{raw_ts}': expected ISO 8601, e.g. "
                             "2024-05-01T10:00:00+08:00", "bad 'ts'") from None
        fields: dict[str, Any] = {}
        if etype == PROFILE_EVENT:
            for attr, kind in self.profile_types.items():
                if attr in record:
                    fields[attr] = _convert(record[attr], kind, f"profile attribute '{attr}'")
            if record.get("owner") not in (None, ""):
                fields["\0owner"] = str(record["owner"])
            return customer_id, etype, ts, fields
        for fname, kind in self.event_types[etype].items():
            if record.get(fname) not in (None, ""):
                fields[fname] = _convert(record[fname], kind, f"field '{fname}'")
        return customer_id, etype, ts, fields

    def ingest(self, record: Mapping[str, Any]) -> list[Action]:
        """Apply one event: run wake-ups due up to its time, then the event's evaluation."""
        return self.apply(self.parse_event(record))

    def apply(self, event: tuple[str, str, int, dict[str, Any]]) -> list[Action]:
        """`ingest` for an event already checked by `parse_event`."""
        customer_id, etype, ts, fields = event
        if self.now is not None and ts < self.now:
            raise EventError(
                f"out of order: {self.calendar.format(ts)} is before the runtime's clock "
                f"{self.calendar.format(self.now)}; sort the history by ts", "out of order")
        out = self.advance_ts(ts)
        cs = self._customer(customer_id)
        if etype == PROFILE_EVENT:
            owner = fields.pop("\0owner", None)
            cs.owner = owner or cs.owner
            cs.profile.update(fields)
            cs.wake_cache.clear()
            out.extend(self._tick(cs, ts, None))
            return out
        day = self.calendar.day_index(ts)
        for k in self.metrics_by_event.get(etype, ()):
            cs.metrics[k] = self.metrics[k].observe(cs.metrics[k], ts, day, fields)
        out.extend(self._tick(cs, ts, (etype, fields)))
        return out

    # ---- time --------------------------------------------------------------------------

    def advance(self, to: str | dt.datetime) -> list[Action]:
        """Let virtual time pass until `to`, running every wake-up due by then."""
        if isinstance(to, dt.datetime):
            ts = int((to if to.tzinfo else to.replace(tzinfo=self.calendar.tz)).timestamp())
        else:
            ts = self.calendar.parse(to)
        if self.now is not None and ts < self.now:
            raise ValueError(f"cannot advance back to {to}: the clock is at "
                             f"{self.calendar.format(self.now)}")
        return self.advance_ts(ts)

    def advance_ts(self, ts: int) -> list[Action]:
        out: list[Action] = []
        if self.now is None or self._unstarted:
            start = ts if self.now is None else self.now
            self.now = start
            for customer_id in self._unstarted:
                self._push(self.customers[customer_id], start)
            self._unstarted.clear()
        heap = self._heap
        while heap and heap[0][0] <= ts:
            when, customer_id = heapq.heappop(heap)
            cs = self.customers[customer_id]
            if cs.wake_at != when:
                continue  # superseded by a later schedule
            cs.wake_at = None
            self.now = when
            out.extend(self._tick(cs, when, None))
        self.now = max(self.now, ts)
        return out

    def _push(self, cs: CustomerState, when: int) -> None:
        cs.wake_at = when
        heapq.heappush(self._heap, (when, cs.customer_id))

    def _schedule(self, cs: CustomerState, now: int) -> None:
        """Compute the next instant anything about this customer could change."""
        candidates: list[int] = [p.due for p in cs.pending]
        for k in self.windowed:
            change = self.metrics[k].next_change(cs.metrics[k])
            if change is not None:
                candidates.append(change)
        today = self.calendar.day_index(now)
        for metric_index, boundaries, any_day in self.day_wakeups:
            if metric_index is None:  # the `today` built-in, compared with date literals
                later_days = [b + 1 for b in boundaries if b + 1 > today]
                if not any_day and not later_days:
                    continue
                day = today + 1 if any_day else min(later_days)
            else:
                # the answer holds until its day comes, unless the event it counts from moves
                # (days_since) or the profile changes (the cache is cleared then)
                metric = self.metrics[metric_index]
                state = cs.metrics[metric_index]
                key = state if isinstance(metric, _metrics.DaysSince) else None
                hit = cs.wake_cache.get(metric_index)
                if hit is not None and hit[0] == key and (hit[1] is None or hit[1] > today):
                    found = hit[1]
                else:
                    found = _metrics.next_day_crossing(metric, state, cs.profile, today,
                                                       boundaries, any_day)
                    cs.wake_cache[metric_index] = (key, found)
                if found is None:
                    continue
                day = found
            if day >= _LAST_DAY:  # a threshold past the calendar's end is never reached
                continue
            candidates.append(self.calendar.day_start(day))
        later = [c for c in candidates if c > now]
        if later:
            when = min(later)
            if cs.wake_at is None or when != cs.wake_at:
                self._push(cs, when)
        else:
            cs.wake_at = None

    # ---- evaluation --------------------------------------------------------------------

    def _prepare_facts(self) -> None:
        """Sort the slots that predicates read by where their value comes from, once."""
        needed = sorted({s for p in self.ir["predicates"] for s in p["reads"]})
        convert = {"decimal", "date"}
        self._builtin_slots = [(i, self.slots[i]["name"]) for i in needed
                               if self.slots[i]["source"] == "builtin"]
        self._profile_slots = [(i, self.slots[i]["name"][8:], self.slots[i]["type"] in convert)
                               for i in needed if self.slots[i]["source"] == "profile"]
        metric_of = {spec["slot"]: k for k, spec in enumerate(self.ir["metrics"])}
        # counts and day metrics are ints already; sums, averages and `last` may need converting
        self._metric_slots = [(i, metric_of[i],
                               self.metrics[metric_of[i]].kind in ("sum", "avg", "last"))
                              for i in needed if self.slots[i]["source"] == "metric"]
        score_of = {s["slot"]: k for k, s in enumerate(self.ir["scores"])}
        self._score_slots = [(i, score_of[i]) for i in needed
                             if self.slots[i]["source"] == "score"]
        self._tag_slots = [(i, self.slots[i]["name"][4:]) for i in needed
                           if self.slots[i]["source"] == "tag"]
        self._event_slots: dict[str, list[tuple[int, str, bool]]] = {}
        for i in needed:
            slot = self.slots[i]
            if slot["source"] == "event":
                self._event_slots.setdefault(slot["event"], []).append(
                    (i, slot["field"], slot["type"] in convert))
        self._contains_slots = [(i, self.slots[i]["list"][8:], self.slots[i]["value"])
                                for i in needed if self.slots[i]["source"] == "contains"]

    def _facts(self, cs: CustomerState, now: int, today: int,
               event: tuple[str, dict[str, Any]] | None) -> list[Any]:
        """The facts vector the engine sees: slot values, None where missing.

        Profile, metric and event facts cannot change within one tick; `_refresh` updates
        the ones rules and derived facts can change (stage, owner, scores, tags).
        """
        facts: list[Any] = [None] * len(self.slots)
        self._refresh(facts, cs, today)
        profile = cs.profile
        for i, attr, conv in self._profile_slots:
            value = profile.get(attr)
            facts[i] = _engine_value(value) if conv and value is not None else value
        metrics = self.metrics
        states = cs.metrics
        for i, k, conv in self._metric_slots:
            value = metrics[k].value(states[k], now, today, profile)
            facts[i] = _engine_value(value) if conv else value
        if event is not None:
            fields = event[1]
            for i, fname, conv in self._event_slots.get(event[0], ()):
                value = fields.get(fname)
                facts[i] = _engine_value(value) if conv and value is not None else value
        for i, attr, item in self._contains_slots:
            items = profile.get(attr)
            facts[i] = None if items is None else item in items
        return facts

    def _refresh(self, facts: list[Any], cs: CustomerState, today: int) -> None:
        """Update the facts a round can change: built-ins, scores and tags."""
        for i, name in self._builtin_slots:
            facts[i] = (cs.stage if name == "stage" else cs.owner if name == "owner"
                        else cs.customer_id if name == "customer_id" else today)
        for i, k in self._score_slots:
            facts[i] = cs.scores[k]
        tags = cs.tags
        for i, tag in self._tag_slots:
            facts[i] = tag in tags

    def _tick(self, cs: CustomerState, now: int,
              event: tuple[str, dict[str, Any]] | None) -> list[Action]:
        out: list[Action] = []
        today = self.calendar.day_index(now)
        due = sorted((p for p in cs.pending if p.due <= now), key=lambda p: (p.due, p.seq))
        cs.pending = [p for p in cs.pending if p.due > now]
        on_rules = list(self.on_rules.get(event[0], ())) if event else []
        history: list[str] = []
        facts = self._facts(cs, now, today, event)
        for round_ in range(MAX_ROUNDS):
            if round_:
                self._refresh(facts, cs, today)
            true = self.engine.evaluate(facts)
            for r, pid in self._entry_rules:
                if pid not in true:  # seen false, even for a moment: armed again
                    cs.rule_truth[r] = False
            if self._settle_derived(cs, true, history):
                continue
            self._cancel(cs, now, true, due, out)
            changed = False
            while due and not changed:
                item = due.pop(0)
                history.append(self.rules[item.rule]["name"])
                changed = self._execute(cs, now, item.rule, item.occurrence, item.facts,
                                        "delayed", out, item.event, item.scheduled)
            if changed:
                continue
            if not self._fire_rules(cs, now, facts, true, event, on_rules, history, out):
                self._cancel(cs, now, true, due, out)  # rules that just fired may be cancelled
                break
        else:
            names = list(dict.fromkeys(history[-12:]))
            raise ChainError(
                f"customer {cs.customer_id}: rules did not settle after {MAX_ROUNDS} rounds; "
                f"these keep re-enabling each other: {', '.join(names) or 'dynamic tags'}")
        self._schedule(cs, now)
        return out

    def _cancel(self, cs: CustomerState, now: int, true: frozenset[int], due: list[_Pending],
                out: list[Action]) -> None:
        """Drop delayed actions whose cancel_if holds now, recording each as cancelled."""
        for item in [*cs.pending, *due]:
            cancel = self.rules[item.rule]["cancel_predicate"]
            if cancel is not None and cancel in true:
                (cs.pending if item in cs.pending else due).remove(item)
                reason = "cancel_if: " + self.ir["predicates"][cancel]["text"]
                out.extend(self._records(cs, now, item.rule, item.occurrence, item.facts,
                                         "delayed", "cancelled", reason))

    def _settle_derived(self, cs: CustomerState, true: frozenset[int],
                        history: list[str]) -> bool:
        """Update scores, then dynamic tags, then the stage; True if anything changed."""
        changed = False
        for i, score in enumerate(self.ir["scores"]):
            value = float(sum(f["points"] for f in score["factors"] if f["predicate"] in true))
            if value != cs.scores[i]:
                cs.scores[i] = value
                changed = True
        if changed:
            return True
        for tag in self.ir["tags"]:
            pid = tag["predicate"]
            if pid is None:
                continue
            holds = pid in true
            name = tag["name"]
            if tag["sticky"]:  # set when its condition becomes true; kept until an untag
                was = cs.sticky_truth.get(name, False)
                cs.sticky_truth[name] = holds
                if holds and not was and name not in cs.tags:
                    cs.tags.add(name)
                    history.append(f"tag {name}")
                    changed = True
                continue
            if holds and name not in cs.tags:
                cs.tags.add(name)
                history.append(f"tag {name}")
                changed = True
            elif not holds and name in cs.tags:
                cs.tags.discard(name)
                history.append(f"untag {name}")
                changed = True
        stage = next((s["name"] for s in self.ir["stages"]
                      if s["predicate"] is None or s["predicate"] in true), None)
        if stage != cs.computed_stage:
            cs.computed_stage = stage
            self.stage_counts[cs.stage] -= 1
            self.stage_counts[stage] += 1
            cs.stage = stage
            changed = True
        return changed

    def _fire_rules(self, cs: CustomerState, now: int, facts: list[Any], true: frozenset[int],
                    event: tuple[str, dict[str, Any]] | None, on_rules: list[int],
                    history: list[str], out: list[Action]) -> bool:
        """Fire eligible rules in order; True as soon as one changes a fact."""
        for r in self.ir["rule_order"]:
            rule = self.rules[r]
            pid = rule["predicate"]
            holds = pid is None or pid in true
            if rule["on"] is not None:
                if r not in on_rules:
                    continue
                on_rules.remove(r)
                if not holds:
                    continue
                trigger = f"event:{rule['on']}"
            else:
                was = cs.rule_truth[r]
                cs.rule_truth[r] = holds
                if not holds or was:
                    continue
                trigger = "entry"
            reads = self._why(cs, rule, facts)
            cs.attempts[r] += 1
            attempt = cs.attempts[r]
            blocked = self._blocked(cs, now, r)
            if blocked:
                out.extend(self._records(cs, now, r, attempt, reads, trigger, "suppressed",
                                         blocked))
                continue
            cs.fired[r] += 1
            cs.last_fired[r] = now
            history.append(rule["name"])
            if rule["delay"]:
                cs.pending.append(_Pending(now + rule["delay"], next(self._seq), r,
                                           attempt, reads, now, event))
                continue
            if self._execute(cs, now, r, attempt, reads, trigger, out, event):
                return True
        return False

    def _why(self, cs: CustomerState, rule: dict[str, Any], facts: list[Any]) -> dict[str, Any]:
        """The facts a rule's condition read when it fired: names and values, tags as a list."""
        out: dict[str, Any] = {}
        for s in rule["reads"]:
            slot = self.slots[s]
            if slot["source"] == "tag":
                out["tags"] = sorted(cs.tags)
            else:
                out[slot.get("label", slot["name"])] = _display(slot, facts[s])
        return out

    def _blocked(self, cs: CustomerState, now: int, r: int) -> str:
        rule = self.rules[r]
        if rule["max_times"] is not None and cs.fired[r] >= rule["max_times"]:
            return f"max_times {rule['max_times']} reached"
        last = cs.last_fired[r]
        if rule["cooldown"] and last is not None and now - last < rule["cooldown"]:
            return f"cooldown until {self.calendar.format(last + rule['cooldown'])}"
        return ""

    def _records(self, cs: CustomerState, now: int, r: int, occurrence: int,
                 facts: dict[str, Any], trigger: str, status: str,
                 reason: str) -> list[Action]:
        rule = self.rules[r]
        return [
            Action(self.calendar.format(now), cs.customer_id, rule["name"], spec["type"],
                   status, trigger, self._key(cs, rule, occurrence, i), {"reason": reason},
                   facts, now)
            for i, spec in enumerate(rule["actions"])
        ]

    def _key(self, cs: CustomerState, rule: dict[str, Any], occurrence: int, index: int) -> str:
        return f"{self.pk}:{rule['name']}:{cs.customer_id}:{occurrence}:{index}"

    def _execute(self, cs: CustomerState, now: int, r: int, occurrence: int,
                 facts: dict[str, Any], trigger: str, out: list[Action],
                 event: tuple[str, dict[str, Any]] | None = None,
                 scheduled: int | None = None) -> bool:
        """Carry out a rule's actions; True if any of them changed a fact."""
        rule = self.rules[r]
        changed = False
        lookup = self._lookup(cs, now, event)
        for i, spec in enumerate(rule["actions"]):
            kind = spec["type"]
            details: dict[str, Any] = {}
            if scheduled is not None:  # a delayed action: when its rule fired
                details["fired_at"] = self.calendar.format(scheduled)
            if kind == "tag":
                details["tag"] = spec["tag"]
                changed |= spec["tag"] not in cs.tags
                cs.tags.add(spec["tag"])
            elif kind == "untag":
                details["tag"] = spec["tag"]
                changed |= spec["tag"] in cs.tags
                cs.tags.discard(spec["tag"])
            elif kind == "set_stage":
                details["stage"] = spec["stage"]
                details["from_stage"] = cs.stage
                changed |= cs.stage != spec["stage"]
                self.stage_counts[cs.stage] -= 1
                self.stage_counts[spec["stage"]] += 1
                cs.stage = spec["stage"]
            elif kind == "reassign":
                details["from_owner"] = cs.owner
                details["to"] = spec["to"]
                changed |= cs.owner != spec["to"]
                cs.owner = spec["to"]
            elif kind == "send":
                params = spec["params"]
                with_params = functools.partial(_param_or, params=params, lookup=lookup)
                text = render(spec["text"], with_params)
                details.update(channel=spec["channel"], template=spec["template"],
                               params=params, message=text)
                if spec.get("title"):
                    details["title"] = render(spec["title"], with_params)
            elif kind == "task":
                details.update(assignee=spec["assignee"] or cs.owner,
                               due=self.calendar.format(now + spec["due"]),
                               note=render(spec["note"], lookup))
            elif kind == "webhook":
                details.update(channel=spec["channel"],
                               payload=_render_payload(spec["payload"], lookup))
            out.append(Action(self.calendar.format(now), cs.customer_id, rule["name"], kind,
                              "planned", trigger, self._key(cs, rule, occurrence, i), details,
                              facts, now))
        return changed

    def _lookup(self, cs: CustomerState, now: int,
                event: tuple[str, dict[str, Any]] | None = None) -> Any:
        today = self.calendar.day_index(now)
        cache: dict[str, Any] = {}

        def lookup(name: str) -> Any:
            if name in cache:
                return cache[name]
            value: Any = None
            if name == "now":
                value = self.calendar.format(now)
            elif name == "today":
                value = dt.date.fromordinal(today)
            elif name == "tags":
                value = sorted(cs.tags)
            elif name == "stage":
                value = cs.stage
            elif name == "owner":
                value = cs.owner
            elif name == "customer_id":
                value = cs.customer_id
            elif name.startswith("profile."):
                value = cs.profile.get(name[8:])
            elif name.startswith("event."):
                value = event[1].get(name[6:]) if event is not None else None
            else:
                for k, metric in enumerate(self.metrics):
                    if metric.name == name:
                        value = metric.value(cs.metrics[k], now, today, cs.profile)
                for i, score in enumerate(self.ir["scores"]):
                    if score["name"] == name:
                        value = cs.scores[i]
            cache[name] = value
            return value

        return lookup

    # ---- inspection ----------------------------------------------------------------------

    def state(self, customer_id: str) -> CustomerView:
        """A snapshot of one customer's facts at the runtime's current time."""
        cs = self.customers.get(customer_id)
        if cs is None:
            raise KeyError(customer_id)
        now = self.now or 0
        today = self.calendar.day_index(now)
        metrics = {metric.name: _json_value(metric.value(cs.metrics[k], now, today, cs.profile))
                   for k, metric in enumerate(self.metrics)}
        scores = {s["name"]: cs.scores[i] for i, s in enumerate(self.ir["scores"])}
        return CustomerView(cs.customer_id, cs.owner, cs.stage, frozenset(cs.tags), metrics,
                            scores, dict(cs.profile), len(cs.pending))

    def customer_ids(self) -> Iterable[str]:
        return self.customers.keys()


def _param_or(name: str, params: dict[str, Any], lookup: Any) -> Any:
    if name.startswith("params."):
        return params.get(name[7:])
    return lookup(name)


def _render_payload(payload: Any, lookup: Any) -> Any:
    if isinstance(payload, str):
        return render(payload, lookup)
    if isinstance(payload, dict):
        return {k: _render_payload(v, lookup) for k, v in payload.items()}
    if isinstance(payload, list):
        return [_render_payload(v, lookup) for v in payload]
    return payload


def _engine_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.date):
        return value.toordinal()
    return value


def _display(slot: dict[str, Any], value: Any) -> Any:
    if value is not None and slot["type"] == "date":
        return dt.date.fromordinal(value).isoformat()
    return value


def _customer_id(record: Mapping[str, Any]) -> str:
    value = record.get("customer_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise EventError("missing 'customer_id'")
    return value.strip()


def _convert(raw: Any, kind: str, what: str) -> Any:
    """A raw JSON/CSV value as the declared type; EventError naming the field otherwise."""
    try:
        if kind == "string":
            if isinstance(raw, dict | list):
                raise ValueError
            return str(raw)
        if kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            number = int(raw)
            if not -(2**63) <= number < 2**63:
                raise EventError(f"{what}: {raw!r} is outside the 64-bit integer range",
                                 f"{what} is out of range")
            return number
        if kind == "decimal":
            if isinstance(raw, bool):
                raise ValueError
            value = Decimal(str(raw))
            if not value.is_finite():
                raise ValueError
            return value
        if kind == "date":
            return dt.date.fromisoformat(str(raw)[:10])
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if kind == "list":
            if isinstance(raw, list):
                return frozenset(str(x) for x in raw)
            return frozenset(x.strip() for x in str(raw).split("|") if x.strip())
    except (ValueError, InvalidOperation, TypeError):
        pass
    raise EventError(f"{what}: {raw!r} is not a valid {kind}", f"{what} is not a valid {kind}")
