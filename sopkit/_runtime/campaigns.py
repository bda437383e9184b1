"""Campaigns (群发) for the commands: previews of an audience and the results of the sends.

How a campaign fires inside the runtime is `firings.py`. Here: previews of an audience (from
a runtime in memory, or streamed from a store page by page so a million customers never sit
in memory at once), the upcoming firings of a window, and the results of a campaign's sends
read back from the outbox and WeCom."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sopkit._errors import EventError
from sopkit._io import BadRecord, read_records
from sopkit._live.loop import StoreMismatch, fingerprint
from sopkit._runtime.firings import Campaign
from sopkit._runtime.records import Action, CustomerState
from sopkit._runtime.runtime import Runtime
from sopkit._runtime.state import load_customer
from sopkit.channels import Message, SendResults

if TYPE_CHECKING:
    from sopkit._live.store import OutboxRow, Store
    from sopkit._playbook.load import LoadedPlaybook

SENT_EVENT = "message_sent"  # the event type `sopkit campaign results` feeds back


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
            arm = campaign.variant(cid)
            if arm == "holdout":
                result.held_out += 1
            elif arm is not None:
                result.variants[arm] = result.variants.get(arm, 0) + 1
        if len(shown) < limit:
            shown.append((cs, campaign.audience.why(cs, facts)))
    result.variants = dict(sorted(result.variants.items()))
    for cs, why in shown:
        cid = cs.customer_id
        arm = campaign.variant(cid)
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
    out: list[dict[str, Any]] = []
    options: list[str | None] = [*campaign.variants] or [None]
    for variant in options:
        scratch = CustomerState(cs.customer_id, dict(cs.profile), cs.owner, cs.metrics,
                                list(cs.scores), cs.tags, stage=cs.stage)
        actions: list[Action] = []
        campaign.execute(scratch, when, {}, actions, variant, decide=False)
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
    runtime = Runtime(loaded, engine=engine)
    check_store(runtime, store)
    blob = store.get_meta("runtime")
    runtime.restore(blob.encode() if blob else None, [])
    return runtime


def stored_customers(store: Store, runtime: Runtime) -> Iterator[CustomerState]:
    """Every customer's state from a store, page by page (by customer id), one at a time,
    read into `runtime`'s layout (it does not hold them)."""
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
