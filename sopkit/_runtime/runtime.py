"""The public `Runtime`: a playbook run for many customers as events arrive and (virtual) time
passes. A facade over the parts (docs/architecture.md):

- `inputs`: records checked and typed against the playbook (EventError otherwise);
- `core`: one customer's state stepped through its events and wake-ups;
- `actions`: the action path rules and campaigns share (variants, templates, policy);
- `coordinator`: the one clock; wake-ups, RFM/CLV refits, campaign firings, hand-overs;
- `observe`: observers, plain functions called with what the runtime does.

Order is part of the contract (docs/semantics.md): wake-ups due at or before an event's time
run before the event, by time then customer id; within one evaluation, the core's order.
"""

from __future__ import annotations

import datetime as dt
import itertools
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sopkit._errors import EventError, UsageError
from sopkit._ir.compile import compile_playbook
from sopkit._ir.types import ClvIR, PlaybookIR, RfmIR, load_ir
from sopkit._lang.clock import Calendar
from sopkit._playbook.load import LoadedPlaybook
from sopkit._playbook.names import CLV_FACTS
from sopkit._runtime import embed as _embed
from sopkit._runtime import metrics as _metrics
from sopkit._runtime import state as _state
from sopkit._runtime.actions import ActionPath
from sopkit._runtime.coordinator import Coordinator
from sopkit._runtime.core import CustomerCore
from sopkit._runtime.dumpcode import compile_dump
from sopkit._runtime.errors import ClockError
from sopkit._runtime.facts import FactReader
from sopkit._runtime.firings import CampaignPlan
from sopkit._runtime.holidays import Holidays
from sopkit._runtime.inputs import (
    CONSENT_EVENTS,
    EVENT_ID,
    OPT_IN_EVENT,
    OWNER,
    PROFILE_EVENT,
    STAFF_DEPARTED,
    Event,
    Inputs,
    record_customer_id,
    remember,
    update_profile,
)
from sopkit._runtime.observe import Observer, Observers
from sopkit._runtime.policy import Pipeline, PolicyState, update_opt_out
from sopkit._runtime.population import Population
from sopkit._runtime.records import Action, CustomerState, CustomerView, json_value
from sopkit._stats import rfm as _rfm
from sopkit.engines import DEFAULT, Engine, create_engine, resolve

_CLV_NAMES = CLV_FACTS  # p_alive, expected_purchases, p_no_purchase, expected_spend


class Runtime(_embed.EmbeddingAPI):
    """Evaluates a playbook for many customers as events arrive and (virtual) time passes.

    >>> rt = Runtime(load_playbook("playbooks/retail.toml"))
    >>> rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2024-05-01T10:00:00"})

    `observers` are functions called with each `Observation` (see `observe`).
    """

    def __init__(self, playbook: LoadedPlaybook, *, engine: str = DEFAULT,
                 ir: Mapping[str, Any] | None = None,
                 observers: Iterable[Observer] = (), lateness: int = 0) -> None:
        if isinstance(lateness, bool) or not isinstance(lateness, int) or lateness < 0:
            raise UsageError(f"lateness must be a whole number of seconds >= 0, not "
                             f"{lateness!r}")
        self.playbook = playbook
        # an event up to this many seconds before the clock is applied at the clock, unless
        # it is before `_late_floor` (a live run: where the system clock last moved the clock)
        self.lateness = lateness
        self._late_floor: int | None = None
        self.ir: PlaybookIR = load_ir(ir) if ir is not None else \
            compile_playbook(playbook.model)
        actual, self.engine_notice = resolve(engine)
        # the engines read the IR as plain data (its keys are checked here, not there)
        self.engine: Engine = create_engine(actual, cast(dict[str, Any], self.ir))
        ir = self.ir
        self.calendar = Calendar(ir["timezone"], ir["day_starts_minutes"])
        self.slots = ir["slots"]
        self.metrics = [_metrics.build(spec) for spec in ir["metrics"]]
        self.rules = ir["rules"]
        self.dump_layout = compile_dump(self.rules, self.metrics, ir["scores"], _state.FORMAT)
        self.pk = f"{ir['playbook']}:{ir['version']}"
        self.inputs = Inputs(self.calendar, playbook.model.events, playbook.model.profile)
        self.holidays = Holidays()  # China's working days; the years it had to guess
        self.policy = Pipeline(ir, self.calendar, self.holidays)
        self._consent_attribute = self.policy.consent_attribute
        self._channel_names = frozenset(ir["channels"])
        self.population = Population()
        self.customers: dict[str, CustomerState] = self.population.customers
        self.stage_counts: Counter[str | None] = self.population.stage_counts
        self.versions: dict[str, int] = {}  # customer -> the version last exported or loaded
        self.observers = Observers(observers)
        self.facts = FactReader(ir, self.metrics, self.population, self.holidays)
        self.actions = ActionPath(ir, self.calendar, self.metrics, self.facts, self.population,
                                  self.policy)
        self.core = CustomerCore(ir, self.calendar, self.engine, self.metrics,
                                 playbook.model.events, self.facts, self.actions,
                                 self.population, self.observers)
        self.coordinator = Coordinator(ir, self.calendar, self.core)
        self._rfm: RfmIR | None = ir.get("rfm")
        self._clv: ClvIR | None = ir.get("clv")

    def observe(self, fn: Observer, *kinds: str) -> None:
        """Call `fn` with each `Observation` of these kinds ("evaluation", "tag", "member",
        "firing"; every kind when none is named). `fn` must not change what it is shown."""
        self.observers.add(fn, *kinds)

    # ---- what the parts hold, by the names hosts and the commands read --------------------

    @property
    def now_ts(self) -> int | None:
        """The virtual clock in unix seconds (None before the first event or advance)."""
        return self.coordinator.now_ts

    @property
    def campaign_plan(self) -> CampaignPlan:
        return self.coordinator.campaign_plan

    @property
    def touched(self) -> set[str]:
        """The customers changed since the last export."""
        return self.population.touched

    @property
    def policy_state(self) -> PolicyState:
        """The policy counters all customers share (caps, staff task capacity)."""
        return self.population.policy_state

    @property
    def rfm_breaks(self) -> tuple[_rfm.Breaks, _rfm.Breaks, _rfm.Breaks] | None:
        return self.population.rfm_breaks

    @property
    def clv_params(self) -> tuple[Any, Any] | None:
        return self.population.clv_params

    @property
    def staff_event_ids(self) -> dict[str, int] | None:
        return self.coordinator.staff_event_ids

    # ---- input -------------------------------------------------------------------------

    def _customer(self, customer_id: str) -> CustomerState:
        cs = self.core.lookup(customer_id)
        if cs is None:
            cs = self.core.blank(customer_id)
            self.customers[customer_id] = cs
            self.stage_counts[None] += 1
        return cs

    def add_profile(self, record: Mapping[str, Any]) -> None:
        """Set a customer's profile attributes (typed per the playbook); EventError if bad."""
        _embed.check_record(record, "a profile")
        customer_id = record_customer_id(record)
        profile = self.inputs.profile_fields(record)
        known = self.core.lookup(customer_id) is not None
        cs = self._customer(customer_id)
        update_profile(cs.profile, profile)
        self._sync_opt_out(cs, profile)
        self.population.touched.add(customer_id)
        cs.wake_cache = None
        owner = record.get("owner")
        if owner not in (None, ""):
            cs.owner = sys.intern(str(owner))
        if not known or self.coordinator.now_ts is not None:
            self.coordinator.wake(cs)  # with the new profile now, or when the clock starts

    def parse_event(self, record: Mapping[str, Any]) -> Event:
        """Check and type an event record: (customer id, type, timestamp, fields)."""
        return self.inputs.parse_event(record)

    def ingest(self, record: Mapping[str, Any]) -> list[Action]:
        """Apply one event: run wake-ups due up to its time, then the event's evaluation."""
        _embed.check_record(record, "an event")
        return self.apply(self.parse_event(record))

    def _refusal(self, event: Event) -> EventError | None:
        """Why `apply` refuses `event` (a duplicate event_id, or out of order), else None."""
        customer_id, etype, ts, fields = event
        event_id = fields.get(EVENT_ID)
        seen: Mapping[str, int] | None = None
        if event_id is not None:
            known = self.core.lookup(customer_id)
            seen = self.coordinator.staff_event_ids if etype == STAFF_DEPARTED else \
                None if known is None else known.event_ids
        return refusal(self.calendar, seen, event_id, ts, self.coordinator.now_ts)

    def apply(self, event: Event) -> list[Action]:
        """`ingest` for an event already checked by `parse_event`."""
        if self.lateness:
            event = in_time(event, self.coordinator.now_ts, self.lateness, self._late_floor)
        refused = self._refusal(event)
        if refused is not None:
            raise refused
        out = self.advance_ts(event[2])
        out.extend(self._apply_checked(event))
        return out

    def _apply_checked(self, event: Event) -> list[Action]:
        """`apply` for an event `_refusal` let through with the clock moved to its time since
        (the offline driver in split mode does both first, as steps of their own)."""
        customer_id, etype, ts, fields = event
        event_id = fields.get(EVENT_ID)
        if event_id is not None:
            fields = {k: v for k, v in fields.items() if k != EVENT_ID}
        out: list[Action] = []
        if etype == STAFF_DEPARTED:
            if event_id is not None:
                coordinator = self.coordinator
                coordinator.staff_event_ids = remember(coordinator.staff_event_ids, event_id,
                                                       ts)
            out.extend(self.coordinator.handover(ts, fields["staff"], fields.get("to")))
            return out
        cs = self._customer(customer_id)
        if event_id is not None:
            cs.event_ids = remember(cs.event_ids, event_id, ts)
        if etype == PROFILE_EVENT:
            owner = fields.pop(OWNER, None)
            cs.owner = owner or cs.owner
            update_profile(cs.profile, fields)
            self._sync_opt_out(cs, fields)
            cs.wake_cache = None
            out.extend(self.core.tick(cs, ts, None))
            return out
        if etype in CONSENT_EVENTS:
            cs.opt_out = update_opt_out(cs.opt_out, fields["channel"], etype == OPT_IN_EVENT,
                                        self._channel_names)
            if self._consent_attribute is not None:  # conditions and templates see it too
                cs.profile[self._consent_attribute] = cs.opt_out
                cs.wake_cache = None
            out.extend(self.core.tick(cs, ts, None))
            return out
        out.extend(self.core.event(cs, ts, etype, fields))
        return out

    def _sync_opt_out(self, cs: CustomerState, profile: Mapping[str, Any]) -> None:
        """A profile that gives the consent attribute replaces the customer's opt-outs."""
        attr = self._consent_attribute
        if attr is not None and attr in profile:
            cs.opt_out = frozenset(profile[attr] or ())

    # ---- time --------------------------------------------------------------------------

    def advance(self, to: str | dt.datetime) -> list[Action]:
        """Let virtual time pass until `to`, running every wake-up due by then."""
        ts = _embed.timestamp(self, to)
        now = self.coordinator.now_ts
        if now is not None and ts < now:
            raise ClockError(f"cannot advance back to {to}: the clock is at "
                                    f"{self.calendar.format(now)}; time only goes forward")
        return self.advance_ts(ts)

    def advance_ts(self, ts: int) -> list[Action]:
        """`advance` to a unix timestamp (the coordinator drives the clock)."""
        return self.coordinator.advance_ts(ts)

    # ---- inspection ----------------------------------------------------------------------

    def state(self, customer_id: str) -> CustomerView:
        """A snapshot of one customer's facts at the runtime's current time."""
        cs = _embed.customer(self, customer_id)
        now = self.now_ts or 0
        today = self.calendar.day_index(now)
        metrics = {metric.name: json_value(metric.value(cs.metrics[k], now, today, cs.profile))
                   for k, metric in enumerate(self.metrics)}
        scores = {s["name"]: cs.scores[i] for i, s in enumerate(self.ir["scores"])}
        if self._rfm is not None:
            scored = self.facts.rfm_scores(cs, now, today)
            for k, name in enumerate(_rfm.FACTS):
                metrics[name] = None if scored is None else scored[k]
        if self._clv is not None:
            for k, name in enumerate(_CLV_NAMES):
                metrics[name] = None if cs.clv is None else cs.clv[k]
        return CustomerView(cs.customer_id, cs.owner, cs.stage, frozenset(cs.tags), metrics,
                            scores, dict(cs.profile), len(cs.pending))

    def rfm_segments(self) -> dict[str, int]:
        """Customers per RFM segment as the rules last saw it (like the segment tags), in
        the classic order; empty without [rfm]."""
        if self._rfm is None:
            return {}
        counts = dict.fromkeys(_rfm.SEGMENT_NAMES, 0)
        for cs in self.customers.values():
            if cs.rfm is not None:
                counts[cs.rfm[3]] += 1
        return counts if any(counts.values()) else {}

    def customer_ids(self) -> Iterable[str]:
        """The customers this runtime holds."""
        return self.customers.keys()

    # ---- persistence (the live loop's store) ----------------------------------------------

    def take_touched(self) -> set[str]:
        """The customers whose state may have changed since the last call (and forget them)."""
        touched, self.population.touched = self.population.touched, set()
        return touched

    def dump_customer(self, customer_id: str) -> bytes:
        """One customer's whole state as JSON keyed by the playbook's names (`_state`)."""
        return _state.dump_customer(self, _embed.customer(self, customer_id))

    def dump_clock(self) -> bytes:
        """The runtime-wide state: the clock, sequence numbers and policy counters."""
        seq = next(self.population.seq)
        self.population.seq = itertools.count(seq)
        return _state.dump_clock(self, seq)

    def restore(self, clock: bytes | None, customers: Iterable[tuple[str, bytes]],
                renames: _state.Renames | None = None) -> int:
        """Load what `dump_clock` and `dump_customer` wrote; return the customers loaded.

        State is matched by name: what this playbook does not know is left out (and counted
        in `renames`), what it adds starts empty. Reading runs no code.
        """
        meta = None if clock is None else _state.load_clock(self, clock)
        count = 0
        for customer_id, blob in customers:
            cs = _state.load_customer(self, customer_id, blob, renames)
            self._adopt(cs)
            count += 1
        if meta is not None:
            coordinator = self.coordinator
            coordinator.now_ts = meta["now"]
            self.population.seq = itertools.count(meta["seq"])
            coordinator.unstarted = list(meta["unstarted"])
            self.population.policy_state = meta["policy"]
            coordinator.staff_event_ids = meta["staff_event_ids"]
            coordinator.restart(meta["rfm"], meta["clv"])
        self.population.touched.clear()
        return count

    def _adopt(self, cs: CustomerState) -> None:
        """Hold a customer read from a store: counted by stage, woken when due."""
        self.core.adopt(cs)


__all__ = ["Action", "CustomerState", "Runtime", "json_value"]  # the live loop reads them here


def in_time(event: Event, now: int | None, lateness: int, floor: int | None = None) -> Event:
    """`event` at the clock `now` when it is stamped before it by at most `lateness` seconds
    and not before `floor` (a late event, from one of several producers, applied as of now:
    docs/live.md), else `event` as it is (which `refusal` then refuses, after its id)."""
    ts = event[2]
    if now is not None and ts < now <= ts + lateness and (floor is None or ts >= floor):
        return (event[0], event[1], now, event[3])
    return event


def refusal(calendar: Calendar, seen: Mapping[str, int] | None, event_id: Any, ts: int,
            now: int | None) -> EventError | None:
    """Why an event is refused: its `event_id` is among the ids `seen` (id -> when applied),
    or `ts` is before the clock `now`; None when it is applied."""
    if event_id is not None and seen is not None and event_id in seen:
        return EventError(
            f"duplicate event_id '{event_id}': an event with this id was applied at "
            f"{calendar.format(seen[event_id])}", "duplicate event_id")
    if now is not None and ts < now:
        return EventError(
            f"out of order: {calendar.format(ts)} is before the runtime's clock "
            f"{calendar.format(now)}; sort the history by ts", "out of order")
    return None
