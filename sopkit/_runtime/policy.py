"""policy: the pipeline every message and task a rule plans goes through, in order.

The Runtime hands each `send`, `webhook` and `task` action it creates to `Pipeline.apply`,
so a simulation and a live run make the same decisions. The pipeline is a list of plain
functions (stages), applied in order; each gets the action being decided and either passes
it on (possibly with a later delivery time: a *deferral*, with a reason) or stops it with a
status and a reason. The first stop wins; what survives every stage is *delivered*
(status `planned`, or `deferred` when a stage moved its delivery time) and is counted by
the caps and the task capacity.

    0. cooldown / max_times  (in the Runtime, per rule; the rule does not fire at all)
    1. consent               messages: opted-out channel or "all"      -> suppressed
    2. experiment holdout    messages and tasks of a rule's experiment  -> holdout
    2b. missing values       a send whose template lacks a needed fact -> suppressed
    3. quiet hours           messages due inside the window             -> deferred to its end
    3b. quiet days           messages due on a day off of a named holiday -> deferred to the
                             same local time on the first day after it (docs/calendar.md)
    4. caps                  messages over a rolling-window cap         -> suppressed
    5. task capacity         tasks over the assignee's daily capacity   -> deferred a day

Caps run after quiet hours on purpose: they count deliveries at their delivery time, so a
message sent at 22:00 and deferred to 09:00 is counted at 09:00 against the messages
delivered before 09:00, including other deferred ones. Tags, stages and owners are facts,
not deliveries: no policy applies to them.

State: what belongs to one customer (opt-outs, recent deliveries) lives in their
`CustomerState` (`opt_out`, `deliveries`); what all customers share (tasks per staff member
per day) is one small picklable `PolicyState`, `Runtime.policy_state`. Both are pruned as
time passes, so memory stays bounded.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sopkit._lang.clock import Calendar
from sopkit._runtime.holidays import Holidays

if TYPE_CHECKING:
    from sopkit._ir.types import PlaybookIR
from sopkit._runtime.records import Action, CustomerState

MESSAGES = frozenset({"send", "webhook"})
TASKS = frozenset({"task"})
ALL = "all"  # an opt-out of every channel


@functools.lru_cache(maxsize=1 << 16)  # a firing asks twice: its arm, then the holdout stage;
# rules ask per firing (some 10 MB when full)
def bucket(experiment: str, customer_id: str) -> float:
    """A customer's stable place in [0, 1) for an experiment.

    The first 8 bytes of SHA-256 over the UTF-8 text `<experiment>:<customer id>`, read as a
    big-endian unsigned integer and divided by 2**64. The same on every run and machine.
    """
    digest = hashlib.sha256(f"{experiment}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out(experiment: str, share: float, customer_id: str) -> bool:
    """Whether the customer is in the experiment's holdout: bucket below the share."""
    return bucket(experiment, customer_id) < share


@dataclass(slots=True)
class PolicyState:
    """Policy state shared by all customers: tasks per staff member per playbook day."""

    tasks: dict[str, dict[int, int]] = field(default_factory=dict)
    today: int = 0  # days before this one have been pruned

    def prune(self, today: int) -> None:
        """Forget the days before `today`; no task can be placed on them any more."""
        if today <= self.today:
            return
        self.today = today
        for staff in list(self.tasks):
            days = {d: n for d, n in self.tasks[staff].items() if d >= today}
            if days:
                self.tasks[staff] = days
            else:
                del self.tasks[staff]


@dataclass(slots=True)
class Item:
    """One action on its way through the pipeline."""

    action: Action
    customer: CustomerState
    rule: Mapping[str, Any]
    spec: dict[str, Any]
    deliver: int
    state: PolicyState
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Stop:
    """A stage's verdict that the action is not delivered: its status and the reason."""

    status: str  # suppressed | holdout
    reason: str


Stage = Callable[["Pipeline", Item], "Item | Stop"]


def consent(pipeline: Pipeline, item: Item) -> Item | Stop:
    """A message on a channel the customer opted out of (or every channel) is suppressed."""
    if item.action.action not in MESSAGES:
        return item
    reason = opted_out(item.customer.opt_out, item.spec["channel"])
    return item if reason is None else Stop("suppressed", reason)


def opted_out(opt_out: frozenset[str], channel: str) -> str | None:
    """Why a message on `channel` may not go to a customer with these opt-outs, or None.
    Decided when an action is planned and again at the moment of delivery."""
    if not opt_out:
        return None
    if ALL in opt_out:
        return f"opt-out: {ALL}"
    if channel in opt_out:
        return f"opt-out: {channel}"
    return None


def complete(pipeline: Pipeline, item: Item) -> Item | Stop:
    """A message whose template needs a fact the customer lacks (a placeholder without a
    default that renders empty) is suppressed with the names, never sent reading wrong."""
    names = item.action.details.get("missing")
    if not names:
        return item
    return Stop("suppressed", "missing value: " + ", ".join(names))


def holdout(pipeline: Pipeline, item: Item) -> Item | Stop:
    """A message or task of a rule in an experiment is held out for the holdout share; a
    pilot rule (`sample`) holds out everyone outside its sample."""
    name = item.rule.get("experiment")
    customer = item.customer.customer_id
    if name is not None and held_out(name, pipeline.experiments[name], customer):
        return Stop("holdout", f"holdout: experiment {name}")
    sample = item.rule.get("sample")
    if sample is not None and not held_out(f"pilot:{item.rule['name']}", sample, customer):
        return Stop("holdout", f"pilot: outside the {sample:.0%} sample of "
                    f"{item.rule.get('kind', 'rule')} {item.rule['name']}")
    return item


def quiet_hours(pipeline: Pipeline, item: Item) -> Item | Stop:
    """A message due inside quiet hours is deferred to their end (tasks are not)."""
    if item.action.action not in MESSAGES:
        return item
    end = pipeline.quiet_end(item.deliver)
    if end is not None:
        item.deliver = end
        item.reasons.append(f"quiet hours {pipeline.quiet_text}")
    return item


def quiet_days(pipeline: Pipeline, item: Item) -> Item | Stop:
    """A message due on a day off of a holiday in `quiet_days` (春节 ...) is deferred to the
    same local time on the first day after it; tasks are not (staff plan their own days)."""
    if item.action.action not in MESSAGES:
        return item
    local = pipeline.calendar.local(item.deliver)
    day, skipped = pipeline.holidays.first_allowed(local.date().toordinal(), pipeline.quiet_days)
    if skipped is not None:
        later = dt.datetime.combine(dt.date.fromordinal(day), local.time().replace(tzinfo=None))
        item.deliver = int(later.replace(tzinfo=pipeline.calendar.tz).timestamp())
        item.reasons.append(f"quiet days: {skipped}")
    return item


def caps(pipeline: Pipeline, item: Item) -> Item | Stop:
    """A message that would exceed a cap at its delivery time is suppressed."""
    if item.action.action not in MESSAGES:
        return item
    sent = item.customer.deliveries
    when = item.deliver
    # deliveries are recorded in delivery order; older than the longest window: never needed
    horizon = when - pipeline.longest_cap
    drop = 0
    while drop < len(sent) and sent[drop][0] <= horizon:
        drop += 1
    if drop:
        del sent[:drop]
    channel = item.spec["channel"]
    for cap in pipeline.caps:
        only = cap["channel"]
        if only is not None and only != channel:
            continue
        since = when - cap["per"]
        count = 0
        for ts, ch in sent:
            if since < ts <= when and (only is None or ch == only):
                count += 1
        if count >= cap["max"]:
            scope = "all channels" if only is None else only
            return Stop("suppressed",
                        f"cap: {cap['max']} per {cap['per_text']} on {scope} reached")
    return item


def task_capacity(pipeline: Pipeline, item: Item) -> Item | Stop:
    """A task over its assignee's daily capacity moves to the first day start with room."""
    if item.action.action not in TASKS:
        return item
    staff = item.action.details.get("assignee")
    limit = pipeline.capacity
    if staff is None or limit is None:  # nobody's queue: no capacity to respect
        return item
    calendar = pipeline.calendar
    state = item.state
    state.prune(calendar.day_index(item.action.ts))
    days = state.tasks.get(staff, {})
    day = calendar.day_index(item.deliver)
    first = day
    while days.get(day, 0) >= limit:
        day += 1
    if day != first:
        item.deliver = max(item.deliver, calendar.day_start(day))
        item.reasons.append(f"task capacity {limit}/day reached for {staff}")
    return item


# the kinds of action a stage may change; it passes any other on as it is
_DECIDES: dict[Stage, frozenset[str]] = {
    consent: MESSAGES, quiet_hours: MESSAGES, quiet_days: MESSAGES, caps: MESSAGES,
    task_capacity: TASKS}


class Pipeline:
    """The playbook's policy stages, built once from the IR; `apply` decides one action."""

    def __init__(self, ir: PlaybookIR, calendar: Calendar,
                 holidays: Holidays | None = None) -> None:
        policy = ir.get("policy") or {}
        self.calendar = calendar
        self.holidays = holidays or Holidays()
        self.quiet_days = frozenset(policy.get("quiet_days") or ())
        self.experiments: dict[str, float] = {
            name: spec["holdout"] for name, spec in (ir.get("experiments") or {}).items()}
        self.quiet: dict[str, Any] | None = policy.get("quiet_hours")
        self.quiet_text = self.quiet["text"] if self.quiet else ""
        self._quiet_last: tuple[int | None, int | None] = (None, None)  # (ts, quiet_end(ts))
        self.caps: list[dict[str, Any]] = list(policy.get("caps") or [])
        self.longest_cap = max((cap["per"] for cap in self.caps), default=0)
        self.capacity: int | None = policy.get("task_capacity")
        self.consent_attribute: str | None = policy.get("consent_attribute")
        uses_experiments = any(rule.get("experiment") or rule.get("sample") is not None
                               for rule in [*ir["rules"], *ir.get("campaigns", ())])
        chosen: list[tuple[Stage, bool]] = [
            (consent, True),  # opt-out events work even without a consent attribute
            (holdout, uses_experiments),
            (complete, True),  # after the holdout, which experiments count
            (quiet_hours, self.quiet is not None),
            (quiet_days, bool(self.quiet_days)),
            (caps, bool(self.caps)),
            (task_capacity, self.capacity is not None),
        ]
        self.stages: list[Stage] = [stage for stage, on in chosen if on]
        # each kind's stages: the others pass it on untouched (their first test)
        self._stages_of = {kind: [stage for stage in self.stages
                                  if kind in _DECIDES.get(stage, MESSAGES | TASKS)]
                           for kind in MESSAGES | TASKS}

    def apply(self, action: Action, customer: CustomerState, rule: Mapping[str, Any],
              spec: dict[str, Any], state: PolicyState) -> None:
        """Decide a planned `send`, `webhook` or `task`: set its status, reason, delivery."""
        item = Item(action, customer, rule, spec, action.ts, state)
        for stage in self._stages_of.get(action.action, self.stages):
            verdict = stage(self, item)
            if isinstance(verdict, Stop):
                action.status = verdict.status
                action.details["reason"] = verdict.reason
                return
            item = verdict
        self._commit(item)
        if item.deliver != action.ts:
            action.status = "deferred"
            action.deliver_ts = item.deliver
            if action.action in TASKS and "due" in action.details:
                action.details["due"] = self.calendar.format(item.deliver + spec["due"])
            action.details["deliver_at"] = self.calendar.format(item.deliver)
            action.details["reason"] = "; ".join(item.reasons)
        if spec.get("expires"):  # the dispatcher never sends it after this (`expired`)
            action.details["expires_at"] = self.calendar.format(item.deliver + spec["expires"])

    def _commit(self, item: Item) -> None:
        """Count a delivered action where the caps and the task capacity will look."""
        kind = item.action.action
        if kind in MESSAGES and self.caps:
            item.customer.deliveries.append((item.deliver, item.spec["channel"]))
        elif kind in TASKS and self.capacity is not None:
            staff = item.action.details.get("assignee")
            if staff is not None:
                days = item.state.tasks.setdefault(staff, {})
                day = self.calendar.day_index(item.deliver)
                days[day] = days.get(day, 0) + 1

    def quiet_end(self, ts: int) -> int | None:
        """The end of the quiet hours `ts` falls in, or None when it is outside them (the
        last answer remembered: a firing's actions, a campaign's members share their time)."""
        if ts == self._quiet_last[0]:
            return self._quiet_last[1]
        end = self._quiet_end(ts)
        self._quiet_last = (ts, end)
        return end

    def _quiet_end(self, ts: int) -> int | None:
        quiet = self.quiet
        if quiet is None:
            return None
        local = self.calendar.local(ts)
        minute = local.hour * 60 + local.minute
        start, end = quiet["start"], quiet["end"]
        date = local.date()
        if start < end:
            if not start <= minute < end:
                return None
        elif end <= minute < start:  # across midnight: quiet from start to end next day
            return None
        elif minute >= start:
            date += dt.timedelta(days=1)
        naive = dt.datetime.combine(date, dt.time(end // 60, end % 60))
        when = int(naive.replace(tzinfo=self.calendar.tz).timestamp())
        return when if when > ts else None


def reason_kind(reason: str) -> str:
    """A reason without its instance details, for counting: the time of a cooldown's end,
    the staff member of a task capacity."""
    if reason.startswith("cooldown until "):
        return "cooldown"
    if reason.startswith("task capacity ") and " reached for " in reason:
        return reason.split(" reached for ", 1)[0] + " reached"
    return reason


def update_opt_out(current: frozenset[str], channels: frozenset[str], opt_in: bool,
                   declared: frozenset[str]) -> frozenset[str]:
    """The opt-outs after an `opt_out` or `opt_in` event naming `channels`.

    An opt-in to one channel after an opt-out of "all" keeps every other declared channel
    opted out; an opt-in to "all" clears every opt-out.
    """
    if not opt_in:
        return current | channels
    if ALL in channels:
        return frozenset()
    if ALL in current:
        current = (current - {ALL}) | declared
    return current - channels
