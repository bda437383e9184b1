"""explain: one customer's timeline, and why each rule did or did not fire.

The whole history is read and the clock moves to every event, with an observer on the
chosen customer. When no other customer counts (`partition.population`), only that
customer's partition is kept and stepped (a partition of one hash value: the customer, and
any other with the same CRC-32): the same timeline as a full replay's, and fast on a big
history; else (staff task capacity, campaigns, RFM, …: other customers count) every
customer is. After each evaluation of that customer it records what changed (metrics,
scores, tags, stage, owner), the actions and their policy decisions, and near misses: a
rule whose condition is an `and` of parts with exactly one part false, named with the facts
that part read. A near miss is reported when it starts or its false part changes, not at
every evaluation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sopkit._errors import UsageError
from sopkit._io import BadRecord, Record
from sopkit._ir.compile import compile_playbook
from sopkit._ir.semantics import holds
from sopkit._lang import expr as _expr
from sopkit._live.outbox import DELIVERABLE
from sopkit._offline.drive import LATENESS, Driver
from sopkit._offline.partition import PartitionRuntime, partition_of, population
from sopkit._playbook.load import LoadedPlaybook
from sopkit._runtime.observe import Observation
from sopkit._runtime.records import Action, CustomerState, json_value
from sopkit._runtime.runtime import Runtime

ALONE = 1 << 32  # partitions by the whole CRC-32: the customer's owns just them (or a namesake)
NOT_SET = "(none)"  # what a person reads for a missing value (JSON keeps null)


def shown(value: Any) -> str:
    """A value as the timeline's text shows it: `(none)` for a missing one, never `None`."""
    if value is None:
        return NOT_SET
    if isinstance(value, list | tuple):
        return "[" + ", ".join(shown(v) if not isinstance(v, str) else repr(v) for v in value) \
            + "]"
    return str(value)


@dataclass
class Entry:
    """One line of a customer's timeline."""

    time: str
    kind: str  # event | metric | score | tag | stage | owner | action | near_miss | quarantine
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "kind": self.kind, "text": self.text, "data": self.data}


def _parts(text: str, cond: Sequence[Any]) -> list[tuple[str, Sequence[Any]]]:
    """The top-level `and` parts of a condition: (source text, IR) each."""
    node = _expr.parse(text)
    if not (isinstance(node, _expr.BoolOp) and node.op == "and" and cond[0] == "and"):
        return [(text.strip(), cond)]
    starts = [_start(operand) for operand in node.operands] + [len(text)]
    out = []
    for i, sub in enumerate(cond[1]):
        piece = text[starts[i]:starts[i + 1]].strip()
        if i + 1 < len(cond[1]):
            piece = piece.removesuffix("and").strip()
        out.append((piece.strip("( )") if piece.count("(") != piece.count(")") else piece, sub))
    return out


def _start(node: _expr.Node) -> int:
    """Where a sub-expression starts in the text: the leftmost position in its tree."""
    found = node.pos
    for value in vars(node).values():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, _expr.Node):
                found = min(found, _start(item))
    return found


_TIME_RELATIVE = frozenset({"days_since", "days_since_first", "days_until",
                            "days_to_anniversary"})


class _Tracer:
    def __init__(self, runtime: Runtime, customer: str) -> None:
        self.rt = runtime
        self.customer = customer
        self.entries: list[Entry] = []
        self.last: dict[str, Any] | None = None
        self.misses: dict[str, str] = {}
        self.send_from: int | None = None  # a live store's go-live instant (`--send-from`)
        self.event_line: int | None = None  # the line of the last event shown
        ir = runtime.ir
        self.quiet = {m["name"] for m in ir["metrics"] if m["kind"] in _TIME_RELATIVE}
        self.rule_parts: list[list[tuple[str, Sequence[Any]]]] = []
        for rule in runtime.rules:
            pid = rule["predicate"]
            if pid is None:
                self.rule_parts.append([])
                continue
            pred = ir["predicates"][pid]
            self.rule_parts.append(_parts(pred["text"], pred["cond"]))

    def snapshot(self) -> dict[str, Any]:
        view = self.rt.state(self.customer)
        return {"metrics": {k: json_value(v) for k, v in view.metrics.items()},
                "scores": dict(view.scores), "tags": set(view.tags), "stage": view.stage,
                "owner": view.owner}

    def event(self, time: str, etype: str, fields: dict[str, Any], line: int,
              stamped: str | None = None) -> None:
        """An event applied at `time`; `stamped`: the earlier time it carried, when it was
        applied late (docs/live.md)."""
        given = {k: json_value(v) for k, v in fields.items() if not k.startswith("\0")}
        text = etype + (" " + ", ".join(f"{k}={shown(v)}" for k, v in given.items())
                        if given else "")
        data: dict[str, Any] = {"type": etype, "fields": given}
        if stamped is not None:
            text += f" (stamped {stamped}, applied late)"
            data["stamped"] = stamped
        self.entries.append(Entry(time, "event", text, data))
        self.event_line = line

    def refused(self, line: int) -> None:
        """The event of `line`, just shown, was refused when applied: it is no event."""
        if self.event_line == line and self.entries and self.entries[-1].kind == "event":
            self.entries.pop()
        self.event_line = None

    def __call__(self, obs: Observation) -> None:
        """The observer: an evaluation of the customer, or a campaign firing's actions."""
        cs = obs.customer
        if cs is None or cs.customer_id != self.customer:
            return
        if obs.kind == "member":
            self.campaign(cs, obs.actions)
        elif obs.facts is not None and obs.true is not None:
            self.evaluation(cs, obs.now, obs.event, obs.facts, obs.true, obs.actions)

    def evaluation(self, cs: CustomerState, now: int, event: tuple[str, dict[str, Any]] | None,
                   facts: list[Any], true: frozenset[int], out: list[Action]) -> None:
        if cs.customer_id != self.customer:
            return
        time = self.rt.calendar.format(now)
        snap = self.snapshot()
        before = self.last or {"metrics": {}, "scores": {}, "tags": set(), "stage": None,
                               "owner": None}
        for name, value in snap["metrics"].items():
            # time-relative metrics change every day: actions and near misses show them
            if name in self.quiet or (self.last is None and value in (0, None)):
                continue
            if before["metrics"].get(name) != value:
                self.entries.append(Entry(time, "metric", f"{name} = {shown(value)}",
                                          {"name": name, "from": before["metrics"].get(name),
                                           "to": value}))
        for name, value in snap["scores"].items():
            if before["scores"].get(name, 0.0) != value:
                self.entries.append(Entry(time, "score", f"{name} = {value:g}",
                                          {"name": name, "to": value}))
        for tag in sorted(snap["tags"] - before["tags"]):
            self.entries.append(Entry(time, "tag", f"+ {tag}", {"tag": tag, "held": True}))
        for tag in sorted(before["tags"] - snap["tags"]):
            self.entries.append(Entry(time, "tag", f"- {tag}", {"tag": tag, "held": False}))
        for key in ("stage", "owner"):
            if snap[key] != before[key]:
                self.entries.append(Entry(time, key, f"{shown(before[key])} -> {shown(snap[key])}",
                                          {"from": before[key], "to": snap[key]}))
        self.last = snap
        for action in out:
            self.action(action)
        self.near_misses(time, event, facts, true, {a.rule for a in out})

    def campaign(self, cs: CustomerState, actions: list[Action]) -> None:
        """A campaign firing's actions for the customer (they happen outside evaluations)."""
        if cs.customer_id == self.customer:
            for action in actions:
                self.action(action)

    def action(self, action: Action) -> None:
        details = action.details
        what = (details.get("message") or details.get("note") or details.get("tag")
                or details.get("stage") or details.get("to") or "")
        reason = details.get("reason")
        status = action.status
        if self.send_from is not None and status in ("planned", "deferred") and \
                action.action in DELIVERABLE and action.deliver_ts < self.send_from:
            status = "backfilled"  # what a live store that went live then recorded
            reason = f"backfilled: due before --send-from {self.rt.calendar.format(self.send_from)}"
        text = f"{action.rule}: {action.action} {status}"
        if details.get("channel"):
            text += f" via {details['channel']}"
        if what:
            text += f": {what}"
        if reason:
            text += f" ({reason})"
        elif action.facts and action.status != "cancelled":
            text += " because " + ", ".join(f"{k}={shown(json_value(v))}"
                                            for k, v in action.facts.items())
        self.entries.append(Entry(action.time, "action", text, {
            "rule": action.rule, "action": action.action, "status": status,
            "trigger": action.trigger, "reason": reason, "facts": action.facts}))

    def near_misses(self, time: str, event: tuple[str, dict[str, Any]] | None,
                    facts: list[Any], true: frozenset[int], fired: set[str]) -> None:
        slots = self.rt.slots
        for r, rule in enumerate(self.rt.rules):
            name = rule["name"]
            pid = rule["predicate"]
            if rule["on"] is not None and (event is None or event[0] != rule["on"]):
                continue
            if pid is None or pid in true or name in fired:
                self.misses.pop(name, None)
                continue
            parts = self.rule_parts[r]
            false = [(text, cond) for text, cond in parts if not holds(cond, facts)]
            on_event = rule["on"] is not None
            if not on_event and (len(parts) < 2 or len(false) != 1):
                self.misses.pop(name, None)
                continue
            key = " | ".join(text for text, _ in false)
            if not on_event and self.misses.get(name) == key:
                continue
            self.misses[name] = key
            read: dict[str, Any] = {}
            for _, cond in false:
                for s in sorted(_slots(cond)):
                    slot = slots[s]
                    value = facts[s]
                    if value is not None and slot["type"] == "date":
                        value = dt.date.fromordinal(value).isoformat()
                    read[slot.get("label", slot["name"])] = value
            trigger = f"on {rule['on']}: " if on_event else ""
            values = ", ".join(f"{k}={shown(v)}" for k, v in read.items())
            self.entries.append(Entry(time, "near_miss",
                                      f"{name} did not fire: {trigger}'{key}' was false"
                                      + (f" ({values})" if values else ""),
                                      {"rule": name, "false": [t for t, _ in false],
                                       "facts": read}))


def _slots(cond: Any) -> set[int]:
    out: set[int] = set()
    if isinstance(cond, list | tuple):
        if len(cond) == 2 and cond[0] == "slot" and isinstance(cond[1], int):
            out.add(cond[1])
        else:
            for item in cond:
                out |= _slots(item)
    return out


def explain(playbook: LoadedPlaybook, events: Path | Iterable[Record | BadRecord],
            customer: str, *,
            profiles: Path | None = None, at: str | None = None,
            engine: str = "native", send_from: str | None = None,
            whole: bool = False, lateness: int = LATENESS) -> list[Entry]:
    """The timeline of one customer over a history, up to `at` (default: the last event);
    with `send_from`, deliverable actions due before it show as `backfilled`, as a live
    store that went live then recorded them. `whole` keeps every customer even when the
    customer's partition alone would do (the same timeline, slower). `events` is a file,
    or records read elsewhere (`sopkit serve`'s kept inbox, in the order they were applied);
    an event up to `lateness` seconds before the clock is applied at it, as `simulate` does.
    """
    rt: Runtime
    if whole or population(compile_playbook(playbook.model)) is not None:
        rt = Runtime(playbook, engine=engine)
    else:
        rt = PartitionRuntime(playbook, engine=engine, index=partition_of(customer, ALONE),
                              count=ALONE)
    tracer = _Tracer(rt, customer)
    rt.observe(tracer, "evaluation", "member")
    if send_from is not None:
        try:
            tracer.send_from = rt.calendar.parse(send_from)
        except ValueError:
            raise UsageError(f"--send-from {send_from!r} is not an ISO 8601 date or time") \
                from None
    at_ts = None
    if at is not None:
        try:
            at_ts = rt.calendar.parse(at)
        except ValueError:
            raise UsageError(f"--at {at!r} is not an ISO 8601 date or time") from None
    seen = [False]
    events_file = str(events) if isinstance(events, Path) else "records"

    def before_event(event: tuple[str, str, int, dict[str, Any]], line: int) -> None:
        cid, etype, ts, fields = event
        if cid == customer:
            seen[0] = True
            tracer.event(rt.calendar.format(ts), etype, fields, line,
                         None if driver.late is None else rt.calendar.format(driver.late))

    def quarantine(path: str, line: int, reason: str, record: Any, kind: str) -> None:
        if path != events_file or not isinstance(record, dict) \
                or record.get("customer_id") != customer:
            return
        tracer.refused(line)  # an event apply refused is no event of the timeline
        tracer.entries.append(Entry(str(record.get("ts", "")), "quarantine",
                                    f"line {line}: {reason}", {"line": line}))

    driver = Driver(rt, emit=lambda actions: None, quarantine=quarantine, end_ts=at_ts,
                    before_event=before_event, lateness=lateness)
    driver.run(events, profiles, source=events_file)
    if not seen[0] and customer not in set(rt.customer_ids()):
        raise UsageError(f"customer '{customer}' is not in the events or profiles")
    return tracer.entries
