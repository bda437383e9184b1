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
import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sopkit._errors import ChainError, EventError
from sopkit._ir.compile import compile_playbook
from sopkit._lang import templates as _templates
from sopkit._lang.clock import Calendar, TimeRangeError
from sopkit._lang.templates import render
from sopkit._playbook.load import LoadedPlaybook
from sopkit._playbook.names import CLV_FACTS, POLICY_ACTIONS
from sopkit._runtime import clvfacts as _clvfacts
from sopkit._runtime import embed as _embed
from sopkit._runtime import metrics as _metrics
from sopkit._runtime import state as _state
from sopkit._runtime.policy import ALL, Pipeline, PolicyState, bucket, update_opt_out
from sopkit._stats import rfm as _rfm
from sopkit.engines import DEFAULT, Engine, create_engine, resolve

MAX_ROUNDS = 64
_REFIT = "\0rfm"  # the heap entry of the population refit (sorts before every customer id)
_CLV_REFIT = "\0clv"  # the heap entry of the [clv] model refit
_CLV_NAMES = CLV_FACTS  # p_alive, expected_purchases, p_no_purchase, expected_spend
_RFM_NAMES = tuple(_rfm.FACTS)  # rfm_r, rfm_f, rfm_m, rfm_segment: the order of the scores
_RFM_ANCHOR = dt.date(2024, 1, 1).toordinal()  # a Monday: "7d" refits every Monday
EVENT_ID_WINDOW = 30 * 86400  # a repeated event_id within this much event time is a duplicate
EVENT_ID_LIMIT = 10_000  # the most event ids one customer remembers (the oldest go first)
_EVENT_ID = "\0event_id"  # where parse_event leaves an event's id among its fields
_LAST_DAY = dt.date.max.toordinal()
_NEVER = 1 << 62  # later than any timestamp the calendar can hold
_HEAP_SLACK = 4096  # the smallest heap worth compacting
_NO_TIME = -(1 << 63)  # "never" in CustomerState.last_fired (an array of timestamps)
_UNKNOWN = -(1 << 63)  # in CustomerState.wake_cache: not computed
_NONE = -(1 << 63) + 1  # in CustomerState.wake_cache: None
PROFILE_EVENT = "profile"  # a built-in event type that updates profile attributes
STAFF_DEPARTED = "staff_departed"  # a built-in event: hand a leaving staff member's customers over
HANDOVER_RULE = "handover"  # the rule name on the records a hand-over makes

OPT_OUT_EVENT = "opt_out"  # built-in: the customer opts out of a channel (or "all")
OPT_IN_EVENT = "opt_in"  # built-in: the customer withdraws an opt-out
_CONSENT_EVENTS = frozenset({OPT_OUT_EVENT, OPT_IN_EVENT})
_POLICY_ACTIONS = POLICY_ACTIONS  # send, webhook, task: what the policy pipeline decides
_TRUE = {"true", "1", "yes", "y", "是", "t"}
_FALSE = {"false", "0", "no", "n", "否", "f", ""}


@dataclass
class Action:
    """One thing a rule did or would do for one customer, with why and when."""

    time: str
    customer_id: str
    rule: str
    action: str
    status: str = "planned"  # planned | deferred | suppressed | holdout | cancelled
    trigger: str = "entry"  # entry | event:<type> | delayed
    key: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    ts: int = 0
    deliver_ts: int = 0  # when it is due for delivery: `ts`, or later when deferred

    def __post_init__(self) -> None:
        if not self.deliver_ts:
            self.deliver_ts = self.ts

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
    # tags and sticky_truth are shared, interned frozensets (Runtime._interned): a million
    # customers hold a handful of distinct sets
    tags: frozenset[str] = frozenset()
    sticky_truth: frozenset[str] = frozenset()  # sticky tags whose condition held last time
    stage: str | None = None
    computed_stage: str | None = None
    rule_truth: bytearray = field(default_factory=bytearray)  # 1: seen true, not re-armed
    fired: list[int] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    last_fired: array[int] = field(default_factory=lambda: array("q"))  # _NO_TIME: never
    pending: list[_Pending] = field(default_factory=list)
    wake_at: int | None = None
    # per day wake-up j: [2j] what the answer depends on, [2j + 1] the next crossing day; then
    # per window its next crossing instant; _UNKNOWN: not cached, _NONE: never (_schedule).
    # None when nothing is cached
    wake_cache: array[int] | None = None
    # policy (_policy.py): the channels (or "all") opted out of; the messages delivered, as
    # (delivery time, channel) in delivery order, kept for the longest cap window
    opt_out: frozenset[str] = frozenset()
    deliveries: list[tuple[int, str]] = field(default_factory=list)
    # RFM (_rfm.py): the scores and segment last computed, to see which a refit changes
    rfm: tuple[int, int, int, str] | None = None
    tag_changes: int = 0  # how many net tag changes were logged (mirroring to WeCom)
    # [clv] (_clvfacts.py): the purchase summary and the facts last computed
    purchases: list[Any] | None = None
    clv: tuple[float, float, float, float | None] | None = None
    # the event ids applied within EVENT_ID_WINDOW (id -> event time); None until one comes
    event_ids: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """The slots a set of predicates reads, sorted by where their values come from:
    (slot, name) built-ins, (slot, attribute, convert) profile, (slot, metric, convert)
    metrics, (slot, score) scores, (slot, tag) tags, (slot, list attribute, item) contains,
    (slot, index) RFM and CLV facts."""

    builtin: list[tuple[int, str]]
    profile: list[tuple[int, str, bool]]
    metric: list[tuple[int, int, bool]]
    score: list[tuple[int, int]]
    tag: list[tuple[int, str]]
    contains: list[tuple[int, str, Any]]
    rfm: list[tuple[int, int]]
    clv: list[tuple[int, int]]

    def only(self, reads: set[int]) -> SlotPlan:
        """The part of the plan for these slots (a campaign audience's)."""
        return SlotPlan(*([x for x in getattr(self, name) if x[0] in reads]
                          for name in self.__slots__))


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


def json_value(value: Any, exact: bool = False) -> Any:
    """A fact as JSON: decimals as numbers (as exact strings with `exact`), dates as ISO text,
    sets as sorted lists."""
    if isinstance(value, Decimal):
        return str(value) if exact else float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return value


class Runtime(_embed.EmbeddingAPI):
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
        slot_metric = {spec["slot"]: k for k, spec in enumerate(ir["metrics"])}
        # (metric index or None for `today`, boundaries, any, counts from an event)
        self.day_wakeups = [
            (slot_metric.get(w["slot"]), w["boundaries"], w["any"],
             w["slot"] in slot_metric and isinstance(
                 self.metrics[slot_metric[w["slot"]]], _metrics.DaysSince))
            for w in ir["wakeups"].values()
        ]
        # windows that conditions read wake their customer when an event leaving them can
        # cross a threshold (None: any departure may matter); their answers are cached in
        # wake_cache after the day wake-ups' and forgotten when the metric observes an event
        self.windowed: list[tuple[int, tuple[list[float], list[int]] | None]] = [
            (slot_metric[w["slot"]], None if w["any"] else (w["thresholds"], w["boundaries"]))
            for w in ir["windows"].values()
        ]
        first = 2 * len(self.day_wakeups)
        self._cache_size = first + len(self.windowed)
        self._window_cache: dict[str, list[int]] = {
            etype: [first + j for j, (k, _) in enumerate(self.windowed) if k in observed]
            for etype, observed in self.metrics_by_event.items()
        }
        self.rules = ir["rules"]
        self.on_rules: dict[str, list[int]] = {}
        for r in ir["rule_order"]:
            on = self.rules[r]["on"]
            if on:
                self.on_rules.setdefault(on, []).append(r)
        self.event_types = {name: dict(fields) for name, fields in playbook.model.events.items()}
        self.policy = Pipeline(ir, self.calendar)
        self.policy_state = PolicyState()  # shared by all customers; picklable
        self._consent_attribute = self.policy.consent_attribute
        self._channel_names = frozenset(ir["channels"])
        self.profile_types = dict(playbook.model.profile)
        self.customers: dict[str, CustomerState] = {}
        self._sets: dict[frozenset[str], frozenset[str]] = {}  # see _interned
        # customers per stage right now (None: not evaluated yet or no stage applies), kept up
        # to date as stages change so a report can sample it every day at no cost
        self.stage_counts: Counter[str | None] = Counter()
        self._heap: list[tuple[int, str]] = []
        self._heap_limit = _HEAP_SLACK  # compact the heap when it grows past this
        self._seq = itertools.count()
        self.now_ts: int | None = None
        self._unstarted: list[str] = []
        self.pk = f"{ir['playbook']}:{ir['version']}"
        self._entry_rules = [(r["index"], r["predicate"]) for r in self.rules
                             if r["on"] is None]
        # what _settle_derived reads on every evaluation, unpacked once
        self._score_factors = [[(f["predicate"], f["points"]) for f in score["factors"]]
                               for score in ir["scores"]]
        self._dynamic_tags = [(tag["predicate"], tag["name"], bool(tag["sticky"]))
                              for tag in ir["tags"] if tag["predicate"] is not None]
        self._fire_order = [(r, self.rules[r]["predicate"], self.rules[r]["on"])
                            for r in ir["rule_order"]]
        self._stage_predicates = [(stage["name"], stage["predicate"]) for stage in ir["stages"]]
        self.touched: set[str] = set()  # customers changed since the last export
        self.versions: dict[str, int] = {}  # customer -> the version last exported or loaded
        self.staff_event_ids: dict[str, int] | None = None  # staff_departed events' ids
        self._clv: dict[str, Any] | None = self.ir.get("clv")
        self._clv_next: int | None = None
        self.clv_params: tuple[Any, Any] | None = None
        self._clv_models: Any = _clvfacts.load_models() if self._clv is not None else None
        self._rfm: dict[str, Any] | None = self.ir.get("rfm")
        self._rfm_next: int | None = None  # the next refit instant, once the clock started
        self.rfm_breaks: tuple[_rfm.Breaks, _rfm.Breaks, _rfm.Breaks] | None = None
        if self._rfm is not None:
            index = {m.name: k for k, m in enumerate(self.metrics)}
            self._rfm_metrics = (index[self._rfm["recency"]], index[self._rfm["frequency"]],
                                 index[self._rfm["monetary"]])
        # called at the end of each evaluation: (customer, now, event, facts, true, actions)
        self.tracer: Any = None
        # set to a list to be told every net tag change: (customer, tag, held, now, sequence)
        self.tag_log: list[tuple[str, str, bool, int, int]] | None = None
        self._prepare_facts()
        from sopkit._runtime.campaigns import CampaignPlan  # it imports this module

        # scheduled campaigns (群发): global wake-ups after customers' own (_campaigns.py)
        self.campaign_plan = CampaignPlan(self)

    def _interned(self, names: frozenset[str]) -> frozenset[str]:
        """One shared object per distinct set of names (customers' tags, sticky truths)."""
        return self._sets.setdefault(names, names)

    # ---- input -------------------------------------------------------------------------

    def _blank_customer(self, customer_id: str) -> CustomerState:
        """A new customer's state, not yet known to the runtime (see `_customer`)."""
        n_rules = len(self.rules)
        return CustomerState(
            customer_id,
            metrics=[metric.new() for metric in self.metrics],
            scores=[0.0] * len(self.ir["scores"]),
            rule_truth=bytearray(n_rules),
            fired=[0] * n_rules,
            attempts=[0] * n_rules,
            last_fired=array("q", [_NO_TIME]) * n_rules,
        )

    def _customer(self, customer_id: str) -> CustomerState:
        cs = self.customers.get(customer_id)
        if cs is None:
            cs = self._blank_customer(customer_id)
            self.customers[customer_id] = cs
            self.stage_counts[None] += 1
        return cs

    def add_profile(self, record: Mapping[str, Any]) -> None:
        """Set a customer's profile attributes (typed per the playbook); EventError if bad."""
        _embed.check_record(record, "a profile")
        customer_id = _customer_id(record)
        profile = self._profile_fields(record)
        known = customer_id in self.customers
        cs = self._customer(customer_id)
        _update_profile(cs.profile, profile)
        self._sync_opt_out(cs, profile)
        self.touched.add(customer_id)
        cs.wake_cache = None
        owner = record.get("owner")
        if owner not in (None, ""):
            cs.owner = sys.intern(str(owner))
        if self.now_ts is None:
            if not known:
                self._unstarted.append(customer_id)
        else:
            self._push(cs, self.now_ts)  # evaluate with the new profile at the current time

    def parse_event(self, record: Mapping[str, Any]) -> tuple[str, str, int, dict[str, Any]]:
        """Check and type an event record: (customer id, type, timestamp, fields)."""
        etype = record.get("type")
        if etype == STAFF_DEPARTED:
            return self._parse_departure(record)
        customer_id = _customer_id(record)
        if not isinstance(etype, str) or not etype:
            raise EventError("missing event 'type'")
        if etype != PROFILE_EVENT and etype not in _CONSENT_EVENTS and \
                etype not in self.event_types:
            known = ", ".join(sorted(self.event_types)) or "none"
            raise EventError(f"unknown event type '{etype}' (the playbook declares: {known})",
                             f"unknown event type '{etype}'")
        raw_ts = record.get("ts")
        if isinstance(raw_ts, dt.datetime):  # a host passes its own datetime
            raw_ts = raw_ts.isoformat()
        if not isinstance(raw_ts, str) or not raw_ts:
            raise EventError("missing 'ts' (an ISO 8601 time)")
        try:
            ts = self.calendar.parse_ts(raw_ts)  # a date alone: the start of that day
        except TimeRangeError as exc:
            raise EventError(f"bad 'ts': {exc}", "time out of range") from None
        except ValueError:
            raise EventError(f"bad 'ts' '{raw_ts}': expected ISO 8601, e.g. "
                             "2024-05-01T10:00:00+08:00", "bad 'ts'") from None
        fields: dict[str, Any] = {}
        event_id = _event_id(record)
        if event_id is not None:
            fields[_EVENT_ID] = event_id
        if etype == PROFILE_EVENT:
            fields.update(self._profile_fields(record))
            if record.get("owner") not in (None, ""):
                fields["\0owner"] = sys.intern(str(record["owner"]))
            return customer_id, etype, ts, fields
        if etype in _CONSENT_EVENTS:
            fields["channel"] = self._consent_channels(etype, record)
            return customer_id, etype, ts, fields
        for fname, kind in self.event_types[etype].items():
            if record.get(fname) not in (None, ""):
                fields[fname] = _convert(record[fname], kind, f"field '{fname}'")
        return customer_id, etype, ts, fields

    def _parse_departure(self, record: Mapping[str, Any]) -> tuple[str, str, int,
                                                                    dict[str, Any]]:
        staff = record.get("staff")
        if not isinstance(staff, str) or not staff.strip():
            raise EventError("a staff_departed event needs 'staff' (the departing staff id)",
                             "staff_departed without 'staff'")
        fields: dict[str, Any] = {"staff": staff.strip()}
        event_id = _event_id(record)
        if event_id is not None:
            fields[_EVENT_ID] = event_id
        to = record.get("to")
        if to not in (None, ""):
            if not isinstance(to, str) or to.strip() == staff.strip():
                raise EventError(f"staff_departed: bad successor 'to' {to!r}",
                                 "staff_departed with a bad 'to'")
            fields["to"] = to.strip()
        raw_ts = record.get("ts")
        if isinstance(raw_ts, dt.datetime):
            raw_ts = raw_ts.isoformat()
        try:
            ts = self.calendar.parse_ts(raw_ts) if isinstance(raw_ts, str) and raw_ts else None
        except TimeRangeError as exc:
            raise EventError(f"bad 'ts': {exc}", "time out of range") from None
        except ValueError:
            ts = None
        if ts is None:
            raise EventError(f"bad 'ts' {raw_ts!r}: expected ISO 8601", "bad 'ts'")
        return "", STAFF_DEPARTED, ts, fields

    def ingest(self, record: Mapping[str, Any]) -> list[Action]:
        """Apply one event: run wake-ups due up to its time, then the event's evaluation."""
        _embed.check_record(record, "an event")
        return self.apply(self.parse_event(record))

    def apply(self, event: tuple[str, str, int, dict[str, Any]]) -> list[Action]:
        """`ingest` for an event already checked by `parse_event`."""
        customer_id, etype, ts, fields = event
        event_id = fields.get(_EVENT_ID)
        if event_id is not None:
            fields = {k: v for k, v in fields.items() if k != _EVENT_ID}
            known = self.customers.get(customer_id)
            seen = self.staff_event_ids if etype == STAFF_DEPARTED else \
                None if known is None else known.event_ids
            if seen is not None and event_id in seen:
                raise EventError(
                    f"duplicate event_id '{event_id}': an event with this id was applied at "
                    f"{self.calendar.format(seen[event_id])}", "duplicate event_id")
        if self.now_ts is not None and ts < self.now_ts:
            raise EventError(
                f"out of order: {self.calendar.format(ts)} is before the runtime's clock "
                f"{self.calendar.format(self.now_ts)}; sort the history by ts", "out of order")
        out = self.advance_ts(ts)
        if etype == STAFF_DEPARTED:
            if event_id is not None:
                self.staff_event_ids = _remember(self.staff_event_ids, event_id, ts)
            out.extend(self._handover(ts, fields["staff"], fields.get("to")))
            return out
        cs = self._customer(customer_id)
        if event_id is not None:
            cs.event_ids = _remember(cs.event_ids, event_id, ts)
        if etype == PROFILE_EVENT:
            owner = fields.pop("\0owner", None)
            cs.owner = owner or cs.owner
            _update_profile(cs.profile, fields)
            self._sync_opt_out(cs, fields)
            cs.wake_cache = None
            out.extend(self._tick(cs, ts, None))
            return out
        if etype in _CONSENT_EVENTS:
            cs.opt_out = update_opt_out(cs.opt_out, fields["channel"], etype == OPT_IN_EVENT,
                                        self._channel_names)
            if self._consent_attribute is not None:  # conditions and templates see it too
                cs.profile[self._consent_attribute] = cs.opt_out
                cs.wake_cache = None
            out.extend(self._tick(cs, ts, None))
            return out
        day = self.calendar.day_index(ts)
        for k in self.metrics_by_event.get(etype, ()):
            cs.metrics[k] = self.metrics[k].observe(cs.metrics[k], ts, day, fields)
        if cs.wake_cache is not None:
            for pos in self._window_cache.get(etype, ()):
                cs.wake_cache[pos] = _UNKNOWN  # the window changed: its next crossing too
        if self._clv is not None and etype == self._clv["event"]:
            self._clv_observe(cs, ts, day, fields)
        out.extend(self._tick(cs, ts, (etype, fields)))
        return out

    def _handover(self, now: int, staff: str, to: str | None) -> list[Action]:
        """Give every customer `staff` owns to a successor (离职继承); record each move.

        Customers move in customer-id order. A customer no successor can be found for keeps
        the departed owner and gets a `suppressed` record saying why, so none goes missing.
        """
        spec = self.ir.get("handover") or {}
        team = [t for t in spec.get("team", []) if t != staff]
        owned = sorted(cid for cid, cs in self.customers.items() if cs.owner == staff)
        load: dict[str, int] = {}
        if spec.get("policy") == "least_loaded":
            for cs in self.customers.values():
                if cs.owner is not None and cs.owner in team:
                    load[cs.owner] = load.get(cs.owner, 0) + 1
        named = spec.get("successors", {}).get(staff) if spec.get("policy") == "named" else None
        channel = spec.get("channel")
        out: list[Action] = []
        for turn, customer_id in enumerate(owned):
            cs = self.customers[customer_id]
            successor = to or named
            if successor is None and team:
                if spec.get("policy") == "least_loaded":
                    successor = min(team, key=lambda t: (load.get(t, 0), team.index(t)))
                    load[successor] = load.get(successor, 0) + 1
                else:
                    successor = team[turn % len(team)]
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
                out.extend(self._tick(cs, now, None))  # rules may read the owner
        return out

    def _consent_channels(self, etype: str, record: Mapping[str, Any]) -> frozenset[str]:
        """The channels an opt_out / opt_in event names: `channel`, a name, a list or "a|b".

        An opt-out without a channel means every channel (the safe reading of "stop"); an
        opt-in must say what it re-enables.
        """
        raw = record.get("channel")
        channels = frozenset() if raw in (None, "") else _convert(raw, "list", "field 'channel'")
        if channels:
            return frozenset(channels)
        if etype == OPT_OUT_EVENT:
            return frozenset({ALL})
        raise EventError("an opt_in event needs 'channel': a channel name, or \"all\"",
                         "opt_in without 'channel'")

    def _sync_opt_out(self, cs: CustomerState, profile: Mapping[str, Any]) -> None:
        """A profile that gives the consent attribute replaces the customer's opt-outs."""
        attr = self._consent_attribute
        if attr is not None and attr in profile:
            cs.opt_out = frozenset(profile[attr] or ())

    def _profile_fields(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The declared profile attributes a record gives, typed; None for one given as
        null or "" (missing: it is removed from the profile)."""
        out: dict[str, Any] = {}
        for attr, kind in self.profile_types.items():
            if attr in record:
                raw = record[attr]
                missing = raw is None or (isinstance(raw, str) and not raw.strip())
                out[attr] = None if missing else \
                    _convert(raw, kind, f"profile attribute '{attr}'")
        return out

    # ---- time --------------------------------------------------------------------------

    def advance(self, to: str | dt.datetime) -> list[Action]:
        """Let virtual time pass until `to`, running every wake-up due by then."""
        ts = _embed.timestamp(self, to)
        if self.now_ts is not None and ts < self.now_ts:
            raise _embed.ClockError(f"cannot advance back to {to}: the clock is at "
                                    f"{self.calendar.format(self.now_ts)}; time only goes forward")
        return self.advance_ts(ts)

    def advance_ts(self, ts: int) -> list[Action]:
        out: list[Action] = []
        if self.now_ts is None or self._unstarted:
            starting = self.now_ts is None
            start = ts if self.now_ts is None else self.now_ts
            self.now_ts = start
            for customer_id in self._unstarted:
                if customer_id in self.customers:  # not evicted since
                    self._push(self.customers[customer_id], start)
            self._unstarted.clear()
            if starting:
                self.campaign_plan.start(start, inclusive=True)
        heap = self._heap
        if self._rfm is not None and self._rfm_next is None:
            self._rfm_next = self._next_refit(self.now_ts, self._rfm["every"])
            heapq.heappush(heap, (self._rfm_next, _REFIT))
        if self._clv is not None and self._clv_next is None:
            self._clv_next = self._next_refit(self.now_ts, self._clv["every"])
            heapq.heappush(heap, (self._clv_next, _CLV_REFIT))
        firings = self.campaign_plan.heap
        while True:
            # refits and customers' wake-ups due by the next campaign firing run first (at
            # the same instant too)
            bound = firings[0][0] if firings and firings[0][0] <= ts else ts
            while heap and heap[0][0] <= bound:
                when, customer_id = heapq.heappop(heap)
                if customer_id == _REFIT:
                    self.now_ts = when
                    out.extend(self._refit(when))
                    continue
                if customer_id == _CLV_REFIT:
                    self.now_ts = when
                    out.extend(self._clv_refit(when))
                    continue
                cs = self.customers.get(customer_id)
                if cs is None or cs.wake_at != when:
                    continue  # superseded by a later schedule, or evicted
                cs.wake_at = None
                self.now_ts = when
                out.extend(self._tick(cs, when, None))
            if not firings or firings[0][0] > ts:
                break
            when, index = heapq.heappop(firings)
            self.now_ts = when
            out.extend(self.campaign_plan.fire(index, when))
            firings = self.campaign_plan.heap
        self.now_ts = max(self.now_ts, ts)
        return out

    def _push(self, cs: CustomerState, when: int) -> None:
        cs.wake_at = when
        heap = self._heap
        heapq.heappush(heap, (when, cs.customer_id))
        if len(heap) > self._heap_limit:
            self._compact_heap()

    def _compact_heap(self) -> None:
        """Drop the entries later schedules replaced (each customer keeps its one live wake-up)
        in place, so a million customers do not carry several dead entries each."""
        heap = self._heap
        customers = self.customers
        live = {(when, cid) for when, cid in heap
                if cid in (_REFIT, _CLV_REFIT) or
                (cid in customers and customers[cid].wake_at == when)}
        heap[:] = live
        heapq.heapify(heap)
        self._heap_limit = max(_HEAP_SLACK, 2 * len(heap))

    def _schedule(self, cs: CustomerState, now: int) -> None:
        """Compute the next instant anything about this customer could change."""
        best = _NEVER  # the earliest candidate after now
        for p in cs.pending:
            if now < p.due < best:
                best = p.due
        metrics = self.metrics
        states = cs.metrics
        cache = cs.wake_cache
        if cache is None:
            cache = cs.wake_cache = array("q", [_UNKNOWN]) * self._cache_size
        pos = 2 * len(self.day_wakeups)
        for k, limits in self.windowed:
            if limits is None:
                change = metrics[k].next_change(states[k])
            else:
                cached = cache[pos]
                if cached == _UNKNOWN or (cached != _NONE and cached <= now):
                    change = metrics[k].next_crossing(states[k], now, *limits)
                    cache[pos] = _NONE if change is None else change
                else:
                    change = None if cached == _NONE else cached
            pos += 1
            if change is not None and now < change < best:
                best = change
        calendar = self.calendar
        today = calendar.day_index(now)
        for j, (metric_index, boundaries, any_day, from_event) in enumerate(self.day_wakeups):
            if metric_index is None:  # the `today` built-in, compared with date literals
                if any_day:
                    day = today + 1
                else:
                    later_days = [b + 1 for b in boundaries if b + 1 > today]
                    if not later_days:
                        continue
                    day = min(later_days)
            else:
                # the answer holds until its day comes, unless the event it counts from moves
                # (days_since) or the profile changes (the cache is cleared then)
                metric = metrics[metric_index]
                state = states[metric_index]
                key = _NONE if state is None or not from_event else state  # a day ordinal
                cached = cache[2 * j + 1]
                if cached == _UNKNOWN or cache[2 * j] != key or \
                        (cached != _NONE and cached <= today):
                    found = _metrics.next_day_crossing(metric, state, cs.profile, today,
                                                       boundaries, any_day)
                    cache[2 * j] = key
                    cache[2 * j + 1] = _NONE if found is None else found
                elif cached == _NONE:
                    continue
                else:
                    found = cached
                if found is None:
                    continue
                day = found
            if day >= _LAST_DAY:  # a threshold past the calendar's end is never reached
                continue
            start = calendar.day_start(day)
            if now < start < best:
                best = start
        if best != _NEVER:
            if cs.wake_at is None or best != cs.wake_at:
                self._push(cs, best)
        else:
            cs.wake_at = None

    # ---- evaluation --------------------------------------------------------------------

    def _prepare_facts(self) -> None:
        """Sort the slots that predicates read by where their value comes from, once."""
        needed = sorted({s for p in self.ir["predicates"] for s in p["reads"]})
        convert = {"decimal", "date"}
        slots = self.slots
        metric_of = {spec["slot"]: k for k, spec in enumerate(self.ir["metrics"])}
        score_of = {sc["slot"]: k for k, sc in enumerate(self.ir["scores"])}

        def source(name: str) -> list[int]:
            return [i for i in needed if slots[i]["source"] == name]

        self._plan = SlotPlan(
            builtin=[(i, slots[i]["name"]) for i in source("builtin")],
            profile=[(i, slots[i]["name"][8:], slots[i]["type"] in convert)
                     for i in source("profile")],
            # counts and day metrics are ints already; sums, averages and `last` may need
            # converting
            metric=[(i, metric_of[i], self.metrics[metric_of[i]].kind in ("sum", "avg", "last"))
                    for i in source("metric")],
            score=[(i, score_of[i]) for i in source("score")],
            tag=[(i, slots[i]["name"][4:]) for i in source("tag")],
            contains=[(i, slots[i]["list"][8:], slots[i]["value"]) for i in source("contains")],
            rfm=[(i, _RFM_NAMES.index(slots[i]["name"])) for i in source("rfm")],
            clv=[(i, _CLV_NAMES.index(slots[i]["name"])) for i in source("clv")],
        )
        self._event_slots: dict[str, list[tuple[int, str, bool]]] = {}
        for i in source("event"):
            self._event_slots.setdefault(slots[i]["event"], []).append(
                (i, slots[i]["field"], slots[i]["type"] in convert))

    def _facts(self, cs: CustomerState, now: int, today: int,
               event: tuple[str, dict[str, Any]] | None) -> list[Any]:
        """The facts vector the engine sees: slot values, None where missing.

        Profile, metric and event facts cannot change within one tick; `_refresh` updates
        the ones rules and derived facts can change (stage, owner, scores, tags).
        """
        facts: list[Any] = [None] * len(self.slots)
        self._fill(facts, cs, now, today, self._plan, record_rfm=True)
        if event is not None:
            fields = event[1]
            for i, fname, conv in self._event_slots.get(event[0], ()):
                value = fields.get(fname)
                facts[i] = _engine_value(value) if conv and value is not None else value
        return facts

    def _fill(self, facts: list[Any], cs: CustomerState, now: int, today: int,
              plan: SlotPlan, record_rfm: bool = False) -> None:
        """Set the facts of a customer the plan's slots hold (all but event fields).

        `record_rfm` keeps the RFM scores the rules saw, for the refit to compare against.
        """
        self._refresh(facts, cs, today, plan)
        profile = cs.profile
        for i, attr, conv in plan.profile:
            value = profile.get(attr)
            facts[i] = _engine_value(value) if conv and value is not None else value
        metrics = self.metrics
        states = cs.metrics
        for i, k, conv in plan.metric:
            value = metrics[k].value(states[k], now, today, profile)
            facts[i] = _engine_value(value) if conv else value
        for i, attr, item in plan.contains:
            items = profile.get(attr)
            facts[i] = None if items is None else item in items
        for i, k in plan.clv:
            facts[i] = None if cs.clv is None else cs.clv[k]
        if plan.rfm:  # against the population's current breakpoints
            scored = self._rfm_scores(cs, now, today)
            if record_rfm:
                cs.rfm = scored
            for i, k in plan.rfm:
                facts[i] = None if scored is None else scored[k]

    def _rfm_values(self, cs: CustomerState, now: int,
                    today: int) -> tuple[float, float, float] | None:
        """The customer's recency, frequency and monetary value now; None before a purchase."""
        r, f, m = self._rfm_metrics
        recency = self.metrics[r].value(cs.metrics[r], now, today, cs.profile)
        if recency is None:
            return None
        frequency = self.metrics[f].value(cs.metrics[f], now, today, cs.profile)
        money = self.metrics[m].value(cs.metrics[m], now, today, cs.profile)
        return float(recency), float(frequency or 0), float(money or 0)

    def _rfm_scores(self, cs: CustomerState, now: int,
                    today: int) -> tuple[int, int, int, str] | None:
        breaks = self.rfm_breaks
        if breaks is None:
            return None
        return _rfm.scores(self._rfm_values(cs, now, today), breaks)

    def _next_refit(self, after: int, every: int) -> int:
        """The first refit instant after `after`: a day start every `every` seconds' days."""
        step = max(1, every // 86400)
        day = self.calendar.day_index(after) + 1
        day += (_RFM_ANCHOR - day) % step
        return self.calendar.day_start(day)

    def _refit(self, now: int) -> list[Action]:
        """Recompute the population's breakpoints; re-evaluate the customers they re-score."""
        today = self.calendar.day_index(now)
        values = {cid: self._rfm_values(cs, now, today) for cid, cs in self.customers.items()}
        bought = [v for v in values.values() if v is not None]
        found = [_rfm.breakpoints([v[k] for v in bought]) for k in range(3)]
        if found[0] is not None and found[1] is not None and found[2] is not None:
            self.rfm_breaks = (found[0], found[1], found[2])
        out: list[Action] = []
        breaks = self.rfm_breaks
        if self._plan.rfm and breaks is not None:
            for customer_id in sorted(self.customers):
                cs = self.customers[customer_id]
                if _rfm.scores(values[customer_id], breaks) != cs.rfm:
                    out.extend(self._tick(cs, now, None))
        self._rfm_next = self._next_refit(now, self._rfm["every"] if self._rfm else 86400)
        heapq.heappush(self._heap, (self._rfm_next, _REFIT))
        return out

    def _clv_refit(self, now: int) -> list[Action]:
        """Refit the [clv] models on every customer's purchases so far; rescore everyone."""
        assert self._clv is not None
        today = self.calendar.day_index(now)
        ids = sorted(cid for cid, cs in self.customers.items() if cs.purchases is not None)
        rows = [_clvfacts.rft(self.customers[cid].purchases or [], today) for cid in ids]
        fitted = _clvfacts.fit(self._clv_models, rows, self._clv["amount"] is not None)
        if fitted is not None:
            self.clv_params = fitted
        out: list[Action] = []
        if self.clv_params is not None:
            horizon = self._clv["horizon"] / (7 * 86400)
            new = _clvfacts.facts_of(self._clv_models, self.clv_params, rows, horizon)
            for customer_id, facts in zip(ids, new, strict=True):
                cs = self.customers[customer_id]
                if facts != cs.clv:
                    cs.clv = facts
                    if self._plan.clv:
                        out.extend(self._tick(cs, now, None))
        self._clv_next = self._next_refit(now, self._clv["every"])
        heapq.heappush(self._heap, (self._clv_next, _CLV_REFIT))
        return out

    def _clv_observe(self, cs: CustomerState, ts: int, day: int,
                     fields: dict[str, Any]) -> None:
        """A purchase: update the customer's summary and, with a fit, their facts."""
        assert self._clv is not None
        amount = fields.get(self._clv["amount"] or "") if self._clv["amount"] else None
        cs.purchases = _clvfacts.observe(cs.purchases, day, float(amount or 0))
        if self.clv_params is not None:
            horizon = self._clv["horizon"] / (7 * 86400)
            cs.clv = _clvfacts.one(self._clv_models, self.clv_params,
                                   _clvfacts.rft(cs.purchases, day), horizon)

    def _refresh(self, facts: list[Any], cs: CustomerState, today: int,
                 plan: SlotPlan | None = None) -> None:
        """Update the facts a round can change: built-ins, scores and tags."""
        plan = plan or self._plan
        for i, name in plan.builtin:
            facts[i] = (cs.stage if name == "stage" else cs.owner if name == "owner"
                        else cs.customer_id if name == "customer_id" else today)
        for i, k in plan.score:
            facts[i] = cs.scores[k]
        tags = cs.tags
        for i, tag in plan.tag:
            facts[i] = tag in tags

    def _tick(self, cs: CustomerState, now: int,
              event: tuple[str, dict[str, Any]] | None) -> list[Action]:
        out: list[Action] = []
        self.touched.add(cs.customer_id)
        tags_before = frozenset(cs.tags) if self.tag_log is not None else None
        today = self.calendar.day_index(now)
        due: list[_Pending] = []
        if cs.pending:
            due = sorted((p for p in cs.pending if p.due <= now), key=lambda p: (p.due, p.seq))
            cs.pending = [p for p in cs.pending if p.due > now]
        on_rules = list(self.on_rules.get(event[0], ())) if event else []
        history: list[str] = []
        facts = self._facts(cs, now, today, event)
        evaluate = self.engine.evaluate
        rule_truth = cs.rule_truth
        for round_ in range(MAX_ROUNDS):
            if round_:
                self._refresh(facts, cs, today)
            true = evaluate(facts)
            for r, pid in self._entry_rules:
                if pid not in true:  # seen false, even for a moment: armed again
                    rule_truth[r] = 0
            if self._settle_derived(cs, true, history):
                continue
            if cs.pending or due:
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
                if cs.pending or due:  # rules that just fired may be cancelled
                    self._cancel(cs, now, true, due, out)
                break
        else:
            names = list(dict.fromkeys(history[-12:]))
            raise ChainError(
                f"customer {cs.customer_id}: rules did not settle after {MAX_ROUNDS} rounds; "
                f"these keep re-enabling each other: {', '.join(names) or 'dynamic tags'}")
        if self.tracer is not None:
            self.tracer(cs, now, event, facts, true, out)
        if tags_before is not None and self.tag_log is not None and tags_before != cs.tags:
            for tag in sorted(cs.tags ^ tags_before):  # the net change of this evaluation
                cs.tag_changes += 1
                self.tag_log.append((cs.customer_id, tag, tag in cs.tags, now,
                                     cs.tag_changes))
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
        scores = cs.scores
        for i, factors in enumerate(self._score_factors):
            value = float(sum([points for pid, points in factors if pid in true]))
            if value != scores[i]:
                scores[i] = value
                changed = True
        if changed:
            return True
        for pid, name, sticky in self._dynamic_tags:
            holds = pid in true
            if sticky:  # set when its condition becomes true; kept until an untag
                was = name in cs.sticky_truth
                if holds != was:
                    cs.sticky_truth = self._interned(cs.sticky_truth ^ {name})
                if holds and not was and name not in cs.tags:
                    cs.tags = self._interned(cs.tags | {name})
                    history.append(f"tag {name}")
                    changed = True
                continue
            if holds:
                if name not in cs.tags:
                    cs.tags = self._interned(cs.tags | {name})
                    history.append(f"tag {name}")
                    changed = True
            elif name in cs.tags:
                cs.tags = self._interned(cs.tags - {name})
                history.append(f"untag {name}")
                changed = True
        stage = None
        for name, pid in self._stage_predicates:
            if pid is None or pid in true:
                stage = name
                break
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
        rule_truth = cs.rule_truth
        for r, pid, on in self._fire_order:
            holds = pid is None or pid in true
            if on is not None:
                if r not in on_rules:
                    continue
                on_rules.remove(r)
                if not holds:
                    continue
                trigger = f"event:{on}"
            else:
                was = rule_truth[r]
                rule_truth[r] = holds  # a bool is 0 or 1
                if not holds or was:
                    continue
                trigger = "entry"
            rule = self.rules[r]
            reads = self._why(cs, rule["reads"], facts)
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

    def _why(self, cs: CustomerState, reads: list[int], facts: list[Any]) -> dict[str, Any]:
        """The facts a condition read (slot numbers `reads`): names and values (dates as
        YYYY-MM-DD), tags as a list. Rules and campaign audiences share it."""
        out: dict[str, Any] = {}
        for s in reads:
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
        if rule["cooldown"] and last != _NO_TIME and now - last < rule["cooldown"]:
            return f"cooldown until {self.calendar.format(last + rule['cooldown'])}"
        return ""

    def _records(self, cs: CustomerState, now: int, r: int, occurrence: int,
                 facts: dict[str, Any], trigger: str, status: str,
                 reason: str) -> list[Action]:
        rule = self.rules[r]
        return [
            Action(self.calendar.format(now), cs.customer_id, rule["name"], spec["type"],
                   status, trigger, self._key(cs, rule, occurrence, i), {"reason": reason},
                   facts, now, now)
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
        variant = self._variant(rule, cs.customer_id)
        for i, spec in enumerate(rule["actions"]):
            kind = spec["type"]
            details: dict[str, Any] = {}
            if scheduled is not None:  # a delayed action: when its rule fired
                details["fired_at"] = self.calendar.format(scheduled)
            if variant is not None and kind in _POLICY_ACTIONS:
                details["variant"] = variant
                if kind == "send" and variant in spec["variants"]:
                    spec = {**spec, **spec["variants"][variant]}
            changed |= self._perform(cs, now, spec, details, lookup)
            action = Action(self.calendar.format(now), cs.customer_id, rule["name"], kind,
                            "planned", trigger, self._key(cs, rule, occurrence, i), details,
                            facts, now, now)
            if kind in _POLICY_ACTIONS:  # consent, holdout, quiet hours, caps, capacity
                self.policy.apply(action, cs, rule, spec, self.policy_state)
            out.append(action)
        return changed

    def _perform(self, cs: CustomerState, now: int, spec: dict[str, Any],
                 details: dict[str, Any], lookup: Any, count_stages: bool = True) -> bool:
        """Carry out one action on the customer, filling in `details`; True if a fact (a tag,
        the stage, the owner) changed. Rules and campaigns share it."""
        kind = spec["type"]
        changed = False
        if kind == "tag":
            details["tag"] = spec["tag"]
            changed |= spec["tag"] not in cs.tags
            cs.tags = self._interned(cs.tags | {spec["tag"]})
        elif kind == "untag":
            details["tag"] = spec["tag"]
            changed |= spec["tag"] in cs.tags
            cs.tags = self._interned(cs.tags - {spec["tag"]})
        elif kind == "set_stage":
            details["stage"] = spec["stage"]
            details["from_stage"] = cs.stage
            changed |= cs.stage != spec["stage"]
            if count_stages:
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
            missing = _templates.missing(spec["text"], with_params)
            if spec.get("title"):
                details["title"] = render(spec["title"], with_params)
                missing += _templates.missing(spec["title"], with_params)
            if missing:  # the policy holds it (_policy.complete)
                details["missing"] = list(dict.fromkeys(missing))
        elif kind == "task":
            details.update(assignee=spec["assignee"] or cs.owner,
                           due=self.calendar.format(now + spec["due"]),
                           note=render(spec["note"], lookup))
        elif kind == "webhook":
            details.update(channel=spec["channel"],
                           payload=_render_payload(spec["payload"], lookup))
        return changed

    def _variant(self, rule: dict[str, Any], customer_id: str) -> str | None:
        """The customer's arm of the rule's experiment: 'holdout', a variant, or None."""
        name = rule.get("experiment")
        if name is None:
            return None
        spec = self.ir["experiments"][name]
        place = bucket(name, customer_id)
        if place < spec["holdout"]:
            return "holdout"
        variants = spec.get("variants") or []
        if not variants:
            return None
        share = (place - spec["holdout"]) / (1 - spec["holdout"])
        return str(variants[min(int(share * len(variants)), len(variants) - 1)])

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
                if name in _CLV_NAMES and self._clv is not None:
                    value = None if cs.clv is None else cs.clv[_CLV_NAMES.index(name)]
                if name in _rfm.FACTS and self._rfm is not None:
                    scored = self._rfm_scores(cs, now, today)
                    value = None if scored is None else scored[_RFM_NAMES.index(name)]
            cache[name] = value
            return value

        return lookup

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
            scored = self._rfm_scores(cs, now, today)
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
        touched, self.touched = self.touched, set()
        return touched

    def dump_customer(self, customer_id: str) -> bytes:
        """One customer's whole state as JSON keyed by the playbook's names (`_state`)."""
        return _state.dump_customer(self, _embed.customer(self, customer_id))

    def dump_clock(self) -> bytes:
        """The runtime-wide state: the clock, sequence numbers and policy counters."""
        seq = next(self._seq)
        self._seq = itertools.count(seq)
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
            self.now_ts = meta["now"]
            self._seq = itertools.count(meta["seq"])
            self._unstarted = list(meta["unstarted"])
            self.policy_state = meta["policy"]
            self.staff_event_ids = meta["staff_event_ids"]
            self.rfm_breaks, self._rfm_next = meta["rfm"]
            if self._rfm is not None and self._rfm_next is not None:
                heapq.heappush(self._heap, (self._rfm_next, _REFIT))
            self.clv_params, self._clv_next = meta["clv"]
            if self._clv is not None and self._clv_next is not None:
                heapq.heappush(self._heap, (self._clv_next, _CLV_REFIT))
            if self.now_ts is not None:  # every firing due by the saved clock has run
                self.campaign_plan.start(self.now_ts, inclusive=False)
        self.touched.clear()
        return count

    def _adopt(self, cs: CustomerState) -> None:
        """Hold a customer read from a store: counted by stage, woken when due."""
        old = self.customers.get(cs.customer_id)
        if old is not None:
            self.stage_counts[old.stage] -= 1
        self.customers[cs.customer_id] = cs
        self.stage_counts[cs.stage] += 1
        if cs.wake_at is not None:
            heapq.heappush(self._heap, (cs.wake_at, cs.customer_id))


def _event_id(record: Mapping[str, Any]) -> str | None:
    """An event's id: `event_id`, or Segment's `messageId`; None when it has none."""
    for name in ("event_id", "messageId"):
        value = record.get(name)
        if value in (None, ""):
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise EventError(f"bad '{name}' {value!r}: expected a string",
                             f"bad '{name}'")
        text = str(value).strip()
        if not text or len(text) > 200:
            raise EventError(f"bad '{name}': expected 1 to 200 characters", f"bad '{name}'")
        return text
    return None


def _remember(seen: dict[str, int] | None, event_id: str, ts: int) -> dict[str, int]:
    """`seen` with `event_id` applied at `ts`, less the ids older than the window (or over
    the limit, oldest first)."""
    seen = {} if seen is None else seen
    seen[event_id] = ts
    horizon = ts - EVENT_ID_WINDOW
    oldest = next(iter(seen.values()))
    if oldest < horizon or len(seen) > EVENT_ID_LIMIT:
        kept = [(k, t) for k, t in seen.items() if t >= horizon]
        seen = dict(kept[-EVENT_ID_LIMIT:])
    return seen


def _update_profile(profile: dict[str, Any], fields: Mapping[str, Any]) -> None:
    """Set the attributes given; one given as missing (None) is removed."""
    for attr, value in fields.items():
        if value is None:
            profile.pop(attr, None)
        else:
            profile[attr] = value


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
    """A raw JSON/CSV value as the declared type; EventError naming the field otherwise.

    Numbers must fit what the engines hold: an int in 64 bits, a decimal below 10^100 in
    size with no digits past the 100th decimal place (it becomes a float for conditions).
    """
    try:
        if kind == "string":
            if isinstance(raw, dict | list):
                raise ValueError
            return str(raw)
        if kind == "int":
            too_long = isinstance(raw, str) and len(raw) > 40  # int() refuses 4,300 digits
            if (isinstance(raw, float) and abs(raw) == float("inf")) or \
                    (too_long and raw.strip().lstrip("+-").isdigit()):
                raise _out_of_range(what, raw, "the 64-bit integer range")
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            number = int(raw)
            if not -(2**63) <= number < 2**63:
                raise _out_of_range(what, raw, "the 64-bit integer range")
            return number
        if kind == "decimal":
            if isinstance(raw, bool):
                raise ValueError
            value = Decimal(str(raw))
            if value.is_infinite():
                raise _out_of_range(what, raw, _DECIMAL_RANGE)
            if not value.is_finite():
                raise ValueError
            exponent = value.as_tuple().exponent
            if (value and value.adjusted() >= 100) or \
                    (isinstance(exponent, int) and exponent < -100):
                raise _out_of_range(what, raw, _DECIMAL_RANGE)
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
    except (ValueError, InvalidOperation, TypeError, OverflowError):
        pass
    raise EventError(f"{what}: {_shown(raw)} is not a valid {kind}",
                     f"{what} is not a valid {kind}")


_DECIMAL_RANGE = "the decimal range (below 10^100, at most 100 decimal places)"


def _shown(raw: Any) -> str:
    """A raw value for a message, cut short: a 5,000-digit number is not repeated whole."""
    text = repr(raw)
    return text if len(text) <= 60 else f"{text[:40]}… ({len(text)} characters)"


def _out_of_range(what: str, raw: Any, limit: str) -> EventError:
    return EventError(f"{what}: {_shown(raw)} is outside {limit}", "number out of range")
