"""Campaigns (群发): scheduled sends to an audience, decided as of each firing instant.

A campaign fires at its `at` time, or at each time of its `every` schedule until `until`.
Firings are wake-ups of the Runtime kept in one global heap: at an instant, customers' own
wake-ups run first, then firings in (time, file order). At a firing, every known customer,
in customer-id order, is looked at as of that instant (time-relative metrics computed for
it, windows emptied up to it) and the audience condition is evaluated by the runtime's
engine. The audience is decided for everyone before any of the firing's actions run; then
each member's actions go through the same policy pipeline as rule actions (consent,
holdout, quiet hours, caps shared with rules, task capacity). The idempotency key holds the
firing instant, so each customer gets at most one message per action per firing, also
across restarts of a live run.

Besides the runtime side (`CampaignPlan`), this module holds what the commands need:
previews of an audience (from a runtime in memory, or streamed from a store page by page so
a million customers never sit in memory at once), the upcoming firings of a window, and the
results of a campaign's sends read back from the outbox and WeCom.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sopkit._lang.cron import Timing, timing
from sopkit._playbook.names import POLICY_ACTIONS as _POLICY_ACTIONS
from sopkit._runtime.policy import held_out
from sopkit.channels import Message, SendResults
from sopkit.engines import create_engine

if TYPE_CHECKING:
    from sopkit._live.store import OutboxRow, Store
    from sopkit._playbook.load import LoadedPlaybook
    from sopkit._runtime.runtime import Action, CustomerState, Runtime

TRIGGER = "campaign"  # the `trigger` of every campaign action record
SENT_EVENT = "message_sent"  # the event type `sopkit campaign results` feeds back


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

    def __init__(self, runtime: Runtime, predicate: int) -> None:
        ir = runtime.ir
        spec = ir["predicates"][predicate]
        self.pid = predicate
        self.text: str = spec["text"]
        self.reads: list[int] = spec["reads"]
        self.slots = ir["slots"]
        self.engine = create_engine(runtime.engine.name,
                                    {"slots": ir["slots"], "predicates": [spec]})
        reads = set(self.reads)
        self._size = len(ir["slots"])
        self._plan = runtime._plan.only(reads)
        self._runtime = runtime
        self.required, self.forbidden, self.stage = _necessary(spec["cond"], self.slots)

    def facts(self, cs: CustomerState, now: int, today: int) -> list[Any]:
        """The facts vector for the slots this audience reads (None elsewhere)."""
        facts: list[Any] = [None] * self._size
        self._runtime._fill(facts, cs, now, today, self._plan)
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
        return self._runtime._why(cs, self.reads, facts)


def _necessary(cond: list[Any], slots: list[dict[str, Any]]
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

    def __init__(self, runtime: Runtime, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.index: int = spec["index"]
        self.timing: Timing = timing(runtime.ir["timezone"], spec["at"], spec["every"],
                                     spec["until"])
        self.audience = Audience(runtime, spec["audience"])
        self.actions: list[dict[str, Any]] = spec["actions"]
        self.experiment: str | None = spec["experiment"]
        self.sample: float | None = spec["sample"]
        # what the policy pipeline and the experiment split read, as for a rule
        self.rule = {"name": self.name, "experiment": self.experiment, "sample": self.sample,
                     "kind": "campaign"}
        experiment = runtime.ir["experiments"].get(self.experiment or "") or {}
        self.variants: list[str] = list(experiment.get("variants") or [])
        primary = [i for i, a in enumerate(self.actions) if a["type"] in _POLICY_ACTIONS]
        self.primary = primary[0] if primary else None

    @property
    def channels(self) -> list[str]:
        return sorted({a["channel"] for a in self.actions if a.get("channel")})

    def in_pilot(self, customer_id: str) -> bool:
        """Whether a pilot (`sample`) keeps the customer: the same bucket as a rule's pilot."""
        return self.sample is None or held_out(f"pilot:{self.name}", self.sample, customer_id)

    def key(self, runtime: Runtime, when: int, customer_id: str, index: int) -> str:
        return f"{runtime.pk}:campaign:{self.name}:{when}:{customer_id}:{index}"

    def execute(self, runtime: Runtime, cs: CustomerState, when: int, facts: dict[str, Any],
                out: list[Action], variant: str | None = None, decide: bool = True) -> bool:
        """Carry out the actions for one member; True if one of them changed a fact.

        The customer's arm of the experiment (a variant or `holdout`) is recorded on each
        message and task, and a variant's own template and params replace the send's, as
        for a rule. `decide=False` (previews) renders `variant` without asking the policy
        pipeline, which would count the messages against caps and capacities.
        """
        from sopkit._runtime.runtime import Action

        cal = runtime.calendar
        stamp = cal.format(when)
        lookup = runtime._lookup(cs, when, None)
        if decide:
            variant = runtime._variant(self.rule, cs.customer_id)
        changed = False
        for i, spec in enumerate(self.actions):
            kind = spec["type"]
            details: dict[str, Any] = {"firing": stamp}
            if variant is not None and kind in _POLICY_ACTIONS:
                details["variant"] = variant
                if kind == "send" and variant in spec["variants"]:
                    spec = {**spec, **spec["variants"][variant]}
            changed |= runtime._perform(cs, when, spec, details, lookup, count_stages=decide)
            action = Action(stamp, cs.customer_id, self.name, kind, "planned", TRIGGER,
                            self.key(runtime, when, cs.customer_id, i), details, facts,
                            when, when)
            if decide and kind in _POLICY_ACTIONS:  # consent, holdout, quiet hours, caps ...
                runtime.policy.apply(action, cs, self.rule, spec, runtime.policy_state)
            out.append(action)
        return changed


class CampaignPlan:
    """A runtime's campaigns and their pending firings (a heap of (time, file index)).

    Nothing here is persisted: after a restore the next firings are the first ones after
    the restored clock, since every firing due by the clock ran before it was saved.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.campaigns = [Campaign(runtime, spec) for spec in runtime.ir.get("campaigns", ())]
        self.by_name = {c.name: c for c in self.campaigns}
        self.heap: list[tuple[int, int]] = []
        self.on_firing: Callable[[FiringReport], None] | None = None
        # called with each member and the firing's actions for them (`sopkit explain`)
        self.on_member: Callable[[CustomerState, list[Action]], None] | None = None
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
        customers = self.runtime.customers
        if len(self._ids) != len(customers):
            self._ids = sorted(customers)
        return self._ids

    def members(self, campaign: Campaign, when: int
                ) -> list[tuple[CustomerState, list[Any]]]:
        """The customers in the audience at `when`, in customer-id order, with their facts."""
        rt = self.runtime
        today = rt.calendar.day_index(when)
        audience = campaign.audience
        out = []
        customers = rt.customers
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
        rt = self.runtime
        members = self.members(campaign, when)
        report = FiringReport(campaign.name, rt.calendar.format(when), when, len(members),
                              len(members))
        out: list[Action] = []
        for cs, facts in members:
            first = len(out)
            tags = frozenset(cs.tags)
            changed = campaign.execute(rt, cs, when, campaign.audience.why(cs, facts), out)
            if campaign.primary is not None:
                report.count(out[first + campaign.primary])
            if self.on_member is not None:
                self.on_member(cs, out[first:])
            rt.touched.add(cs.customer_id)
            if rt.tag_log is not None and tags != cs.tags:  # mirrored like a rule's tags
                for tag in sorted(cs.tags ^ tags):
                    cs.tag_changes += 1
                    rt.tag_log.append((cs.customer_id, tag, tag in cs.tags, when,
                                       cs.tag_changes))
            if changed:  # tags, stage or owner changed: rules see it at once
                out.extend(rt._tick(cs, when, None))
        if self.on_firing is not None:
            self.on_firing(report)
        return out


# ---- previews: the audience of a campaign at an instant, without sending anything ---------

@dataclass
class Preview:
    """Who a campaign reaches at an instant: counts, a sample, one message per variant."""

    campaign: str
    time: str
    audience_text: str
    customers: int = 0  # customers looked at
    audience: int = 0
    pilot: int = 0
    held_out: int = 0
    variants: dict[str, int] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def preview(runtime: Runtime, name: str, when: int,
            customers: Iterable[CustomerState], limit: int = 10) -> Preview:
    """The audience of campaign `name` at `when` over `customers` (in id order).

    Streams: besides counters, only the first `limit` members' states are kept, whatever
    the number of customers looked at. The pilot, holdout and variant counts are what a
    firing at `when` would decide; caps and quiet hours are not applied (they depend on
    what else is sent by then).
    """
    campaign = runtime.campaign_plan.by_name[name]
    cal = runtime.calendar
    today = cal.day_index(when)
    result = Preview(name, cal.format(when), campaign.audience.text)
    shown: list[tuple[CustomerState, dict[str, Any]]] = []
    for cs in customers:
        result.customers += 1
        facts = campaign.audience.evaluate(cs, when, today)
        if facts is None:
            continue
        result.audience += 1
        cid = cs.customer_id
        if campaign.in_pilot(cid):
            result.pilot += 1
            arm = runtime._variant(campaign.rule, cid)
            if arm == "holdout":
                result.held_out += 1
            elif arm is not None:
                result.variants[arm] = result.variants.get(arm, 0) + 1
        if len(shown) < limit:
            shown.append((cs, campaign.audience.why(cs, facts)))
    result.variants = dict(sorted(result.variants.items()))
    for cs, why in shown:
        cid = cs.customer_id
        arm = runtime._variant(campaign.rule, cid)
        result.sample.append({
            "customer_id": cid, "owner": cs.owner, "pilot": campaign.in_pilot(cid),
            "held_out": arm == "holdout", "variant": None if arm == "holdout" else arm,
            "facts": why})
    if shown:
        result.messages = _messages(runtime, campaign, shown[0][0], when)
    return result


def _messages(runtime: Runtime, campaign: Campaign, cs: CustomerState,
              when: int) -> list[dict[str, Any]]:
    """Each variant's rendered messages and tasks (or the plain ones) for one customer."""
    from sopkit._runtime.runtime import CustomerState

    out: list[dict[str, Any]] = []
    options: list[str | None] = [*campaign.variants] or [None]
    for variant in options:
        scratch = CustomerState(cs.customer_id, dict(cs.profile), cs.owner, cs.metrics,
                                list(cs.scores), cs.tags, stage=cs.stage)
        actions: list[Action] = []
        campaign.execute(runtime, scratch, when, {}, actions, variant, decide=False)
        for action in actions:
            if action.action in ("send", "task", "webhook"):
                item = {"variant": variant, "customer_id": cs.customer_id,
                        "action": action.action}
                item.update({k: v for k, v in action.details.items()
                             if k in ("channel", "template", "message", "title", "note",
                                      "payload")})
                out.append(item)
    return out


def past_one_offs(runtime: Runtime, now: int) -> list[tuple[str, str]]:
    """(name, time) of each one-off campaign whose `at` is before `now`."""
    cal = runtime.calendar
    return [(c.name, cal.format(c.timing.at)) for c in runtime.campaign_plan.campaigns
            if c.timing.at is not None and c.timing.at < now]


def history_runtime(loaded: LoadedPlaybook, events: Path, profiles: Path | None, at: int,
                    engine: str) -> tuple[Runtime, int]:
    """A runtime fed a history up to (not including) `at`, with every wake-up due by `at`
    run and no campaign firing at or after it; and how many records it could not use."""
    from sopkit._errors import EventError
    from sopkit._io import BadRecord, read_records
    from sopkit._runtime.runtime import Runtime

    runtime = Runtime(loaded, engine=engine)
    runtime.campaign_plan.stop_before(at)
    bad = 0
    if profiles is not None:
        for item in read_records(profiles):
            try:
                if isinstance(item, BadRecord):
                    raise EventError(item.reason)
                runtime.add_profile(item.data)
            except EventError:
                bad += 1
    for item in read_records(events):
        try:
            if isinstance(item, BadRecord):
                raise EventError(item.reason)
            event = runtime.parse_event(item.data)
            if event[2] >= at:
                continue
            runtime.apply(event)
        except EventError:
            bad += 1
    if runtime.now_ts is None or runtime.now_ts < at:
        runtime.advance_ts(at)
    return runtime, bad


def check_store(runtime: Runtime, store: Store) -> None:
    """Refuse a store that another playbook (or this version before it changed) wrote: its
    states would be read with the wrong metrics and tags (as `sopkit run` refuses it)."""
    from sopkit._live.loop import StoreMismatch, fingerprint

    name = store.get_meta("playbook")
    here = runtime.pk
    if name is None:
        raise StoreMismatch(f"{store.url} holds no state of a `sopkit run` yet")
    if name.split(":")[0] != here.split(":")[0]:
        raise StoreMismatch(f"{store.url} belongs to playbook '{name}', not '{here}'")
    if name == here and store.get_meta("fingerprint") != fingerprint(runtime.ir):
        raise StoreMismatch(f"the playbook '{here}' changed since {store.url} was written, but "
                            "its version did not; preview with the playbook the run uses")


def store_runtime(loaded: LoadedPlaybook, store: Store, engine: str) -> Runtime:
    """A runtime with a store's runtime-wide state (clock, RFM breakpoints, CLV fits) but
    none of its customers: `stored_customers` streams those."""
    from sopkit._runtime.runtime import Runtime

    runtime = Runtime(loaded, engine=engine)
    check_store(runtime, store)
    blob = store.get_meta("runtime")
    runtime.restore(blob.encode() if blob else None, [])
    return runtime


def stored_customers(store: Store, runtime: Runtime) -> Iterator[CustomerState]:
    """Every customer's state from a store, page by page (by customer id), one at a time,
    read into `runtime`'s layout (it does not hold them)."""
    from sopkit._runtime.state import load_customer

    for customer_id, blob in store.load_customers():
        yield load_customer(runtime, customer_id, blob)


def audience_sizes(runtime: Runtime, when: int) -> dict[str, int]:
    """Each campaign's audience at `when` over the runtime's customers in memory."""
    plan = runtime.campaign_plan
    return {c.name: len(plan.members(c, when)) for c in plan.campaigns}


# ---- results: what became of a campaign's sends ----------------------------------------------

WECOM_STATUS = {0: "waiting", 1: "sent", 2: "not a customer", 3: "limit reached"}


@dataclass
class FiringResult:
    """One firing's outcome from the outbox (and WeCom's send results for group sends)."""

    campaign: str
    firing: str
    channel: str
    rows: dict[str, int] = field(default_factory=dict)  # outbox status -> rows
    tasks: int = 0  # WeCom group-message tasks (msgids)
    sent: int = 0  # sent to the customer: confirmed by WeCom, or delivered by the channel
    waiting: int = 0  # WeCom: the sender has not confirmed yet
    failed: int = 0  # WeCom: not a customer any more, or the monthly limit reached
    errors: list[str] = field(default_factory=list)

    @property
    def send_rate(self) -> float | None:
        """Sent as a share of the rows that were to be delivered (not held out, not capped)."""
        base = sum(n for s, n in self.rows.items() if s not in ("suppressed", "holdout",
                                                                 "cancelled"))
        return None if base == 0 else self.sent / base

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["send_rate"] = self.send_rate
        return out


def campaign_rows(store: Store, names: Iterable[str]) -> list[OutboxRow]:
    """The outbox rows of these campaigns (any status), by id."""
    wanted = set(names)
    return [row for row in store.rows(None) if row.rule in wanted
            and "firing" in (row.message.get("body") or {})]


def results(store: Store, names: Iterable[str], channels: Mapping[str, Any],
            fetch: bool = True) -> tuple[list[FiringResult], list[dict[str, Any]]]:
    """Per firing and channel: rows by status and what was sent; plus each customer the
    channel says was sent to, as {row key, customer, campaign, firing, channel, msgid,
    sender} (for `message_sent` events)."""
    groups: dict[tuple[str, str, str], FiringResult] = {}
    rows_of: dict[tuple[str, str, str], list[OutboxRow]] = {}
    for row in campaign_rows(store, names):
        body = row.message.get("body") or {}
        group = (row.rule, str(body["firing"]), row.channel)
        result = groups.setdefault(group, FiringResult(*group))
        result.rows[row.status] = result.rows.get(row.status, 0) + 1
        rows_of.setdefault(group, []).append(row)
    sent: list[dict[str, Any]] = []
    for group, result in sorted(groups.items()):
        channel = channels.get(result.channel) if result.channel else None
        delivered = [r for r in rows_of[group] if r.status == "delivered"]
        tasks: dict[tuple[str, str], list[OutboxRow]] = {}
        for row in delivered:
            receipt = row.receipt or {}
            msgid = receipt.get("provider_id")
            sender = (receipt.get("data") or {}).get("sender") or row.message.get("owner")
            if row.kind == "send" and isinstance(channel, SendResults) and msgid and sender:
                tasks.setdefault((str(msgid), str(sender)), []).append(row)
            else:  # no platform to ask: the channel's acceptance is the send
                result.sent += 1
                sent.append(_sent(row, None, None))
        result.tasks = len(tasks)
        for (msgid, sender), task_rows in sorted(tasks.items()):
            assert isinstance(channel, SendResults)  # only such a channel makes tasks
            if not fetch:
                result.waiting += len(task_rows)
                continue
            try:
                outcomes = channel.send_outcomes(
                    msgid, sender, [Message.from_json(r.message) for r in task_rows])
            except Exception as exc:  # reported with the firing; other tasks still count
                result.errors.append(f"{msgid}: {exc}")
                result.waiting += len(task_rows)
                continue
            for row, outcome in zip(task_rows, outcomes, strict=False):
                if outcome == "sent":
                    result.sent += 1
                    sent.append(_sent(row, msgid, sender))
                elif outcome == "failed":
                    result.failed += 1
                else:
                    result.waiting += 1
            result.waiting += max(0, len(task_rows) - len(outcomes))  # rows given no outcome
    return [groups[g] for g in sorted(groups)], sent


def _sent(row: OutboxRow, msgid: str | None, sender: str | None) -> dict[str, Any]:
    body = row.message.get("body") or {}
    return {"key": row.key, "customer_id": row.customer_id, "campaign": row.rule,
            "firing": body.get("firing"), "channel": row.channel, "msgid": msgid,
            "sender": sender, "variant": body.get("variant")}


def sent_events(sent: list[dict[str, Any]], ts: str, ledger: Path | None
                ) -> list[dict[str, Any]]:
    """`message_sent` event records for sends not yet in `ledger` (a JSONL events file).

    The events are stamped `ts` (when sopkit learned of the send): a live run takes them
    as new events, never as out-of-order ones. `key` (the outbox row's) makes each unique.
    """
    known: set[str] = set()
    if ledger is not None and ledger.exists():
        with ledger.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("type") == SENT_EVENT:
                    known.add(str(record.get("key")))
    out = []
    for item in sorted(sent, key=lambda s: (s["customer_id"], s["key"])):
        if item["key"] in known:
            continue
        record = {"customer_id": item["customer_id"], "type": SENT_EVENT, "ts": ts}
        record.update({k: v for k, v in item.items() if k != "customer_id" and v is not None})
        out.append(record)
    return out
