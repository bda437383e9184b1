"""compile: a validated Playbook -> RuleIR, plain JSON-ready data. Pure; no engine import.

The IR names every fact a condition can read as a numbered *slot*; conditions are nested
lists over slots and constants:

    ["and", [c, ...]]  ["or", [c, ...]]  ["not", c]  ["true"]  ["false"]
    ["cmp", op, a, b]          op in == != < <= > >=
    operands: ["slot", i]  ["const", v]  ["arith", op, a, b]   op in + - * /

Dates are day ordinals (`date.toordinal()`), decimals are floats. A comparison that reads a
missing (null) slot is false; `not` negates the result. For each time-relative metric the
IR lists the constants conditions compare it with (`wakeups`), so the runtime can compute
the next instant at which any condition could change, and sleep until then. Windowed metrics
get the same list (`windows`): an event leaving a window wakes its customer only when the
value can cross one of them (`any`: when it is read inside arithmetic or against another fact,
every departure counts).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sopkit._ir.semantics import boundaries
from sopkit._ir.types import (
    IR_VERSION,
    CampaignIR,
    Cond,
    LimitIR,
    PlaybookIR,
    PredicateIR,
    RuleIR,
    SlotIR,
)
from sopkit._lang import expr as e
from sopkit._playbook import models as m
from sopkit._playbook.models import parse_delay, parse_duration, parse_workdays
from sopkit._playbook.names import (
    BUILTINS,
    CLV_FACTS,
    HOLIDAY_BUILTINS,
    TIME_RELATIVE,
    metric_type,
    scope_names,
)
from sopkit._stats.rfm import FACTS as RFM_FACTS

__all__ = ["IR_VERSION", "PlaybookIR", "compile_playbook"]
WINDOWED = ("count", "sum", "avg", "max_count_per_key")  # metric kinds a window applies to


class _Compiler:
    def __init__(self, pb: m.Playbook) -> None:
        self.pb = pb
        self.slots: list[SlotIR] = []
        self.slot_index: dict[str, int] = {}
        self.predicates: list[PredicateIR] = []
        self.thresholds: dict[int, set[float]] = {}
        self.boundaries: dict[int, set[int]] = {}
        self.any_time: set[int] = set()
        self.time_slots: set[int] = set()
        # windowed metrics: their values change as events leave the window, so the runtime
        # wakes a customer only when that can cross a threshold (IR `windows`)
        self.window_slots: set[int] = set()
        self.event: str | None = None
        for name, kind in BUILTINS.items():
            # is_workday / is_holiday get a slot when a condition reads them (operand), so
            # a playbook that does not compiles as before (same slots, same fingerprint)
            if name not in HOLIDAY_BUILTINS:
                self.slot(name, kind, "builtin")
        for attr, akind in pb.profile.items():
            self.slot(f"profile.{attr}", akind, "profile")
        for name, metric in pb.metrics.items():
            index = self.slot(name, metric_type(pb, metric), "metric")
            if metric.kind in TIME_RELATIVE:
                self.time_slots.add(index)
            elif metric.window and metric.kind in WINDOWED:
                self.window_slots.add(index)
        for name in pb.scores:
            self.slot(name, "number", "score")
        if pb.rfm is not None:
            for name, kind in RFM_FACTS.items():
                self.slot(name, kind, "rfm")
        if pb.clv is not None:
            for name in CLV_FACTS:
                self.slot(name, "number", "clv")
        for tag in pb.tags:
            self.slot(f"tag:{tag}", "bool", "tag")
        for etype, fields in pb.events.items():
            for fname, fkind in fields.items():
                self.slot(f"event:{etype}.{fname}", fkind, "event", event=etype, field=fname,
                          label=f"event.{fname}")
        self.time_slots.add(self.slot_index["today"])
        # is_workday / is_holiday change at day starts: read by a rule, they wake it then
        self.holiday_slots: set[int] = set()
        self.holiday_read: set[int] = set()

    def slot(self, name: str, kind: str, source: str, **extra: Any) -> int:
        if name not in self.slot_index:
            self.slot_index[name] = len(self.slots)
            self.slots.append(cast(SlotIR, {"name": name, "type": kind, "source": source,
                                            **extra}))
        return self.slot_index[name]

    def predicate(self, text: str | None, owner: str, event: str | None = None) -> int | None:
        if text is None:
            return None
        node = e.parse(text)
        scope = e.Scope(scope_names(self.pb, event), frozenset(self.pb.tags),
                        frozenset(s.name for s in self.pb.stages), allow_event=event is not None)
        e.check(node, scope)
        self.event = event
        cond = self.cond(node)
        reads = sorted(_reads(cond))
        self.holiday_read.update(self.holiday_slots.intersection(reads))
        self.predicates.append({"id": len(self.predicates), "owner": owner, "text": text,
                                "cond": cond, "reads": reads})
        return len(self.predicates) - 1

    def cond(self, node: e.Node) -> Cond:
        if isinstance(node, e.BoolOp):
            return [node.op, [self.cond(x) for x in node.operands]]
        if isinstance(node, e.Not):
            return ["not", self.cond(node.operand)]
        if isinstance(node, e.Const):
            return ["true"] if node.value else ["false"]
        if isinstance(node, e.Name):
            return ["cmp", "==", self.operand(node), ["const", True]]
        if isinstance(node, e.Compare):
            cond = ["cmp", node.op, self.operand(node.left), self.operand(node.right)]
            self.note_thresholds(cond)
            return cond
        if isinstance(node, e.In):
            return self.cond_in(node)
        raise AssertionError(f"not a condition: {node}")  # the type check rules this out

    def cond_in(self, node: e.In) -> Cond:
        container = node.container
        out: Cond
        if isinstance(container, e.Name) and container.dotted == "tags":
            slot = self.slot_index[f"tag:{_const(node.item)}"]
            out = ["cmp", "==", ["slot", slot], ["const", True]]
        elif isinstance(container, e.ListLit):
            item = self.operand(node.item)
            out = ["or", [["cmp", "==", item, self.operand(x)] for x in container.items]]
            for option in out[1]:
                self.note_thresholds(option)
        else:
            assert isinstance(container, e.Name)
            value = _const(node.item)
            slot = self.slot(f"{container.dotted}∋{value}", "bool", "contains",
                             list=container.dotted, value=value)
            out = ["cmp", "==", ["slot", slot], ["const", True]]
        return ["not", out] if node.negated else out

    def operand(self, node: e.Node) -> list[Any]:
        if isinstance(node, e.Const):
            return ["const", _const(node)]
        if isinstance(node, e.Name):
            if node.parts[0] == "event":  # the fields of the rule's own event type
                return ["slot", self.slot_index[f"event:{self.event}.{node.parts[1]}"]]
            if node.dotted in HOLIDAY_BUILTINS:
                index = self.slot(node.dotted, BUILTINS[node.dotted], "builtin")
                self.holiday_slots.add(index)
                return ["slot", index]
            return ["slot", self.slot_index[node.dotted]]
        if isinstance(node, e.Neg):
            inner = self.operand(node.operand)
            if inner[0] == "const":  # -1 is a constant, not arithmetic
                return ["const", -inner[1]]
            self.mark_any(inner)
            return ["arith", "-", ["const", 0], inner]
        if isinstance(node, e.Arith):
            left, right = self.operand(node.left), self.operand(node.right)
            self.mark_any(left)
            self.mark_any(right)
            return ["arith", node.op, left, right]
        raise AssertionError(f"not an operand: {node}")

    def mark_any(self, operand: list[Any]) -> None:
        """A time-relative or windowed slot inside arithmetic: any change may matter."""
        for slot in _reads(["cmp", "==", operand, ["const", 0]]):
            if slot in self.time_slots or slot in self.window_slots:
                self.any_time.add(slot)

    def note_thresholds(self, cond: Cond) -> None:
        _, op, a, b = cond
        for x, y, flipped in ((a, b, False), (b, a, True)):
            if x[0] == "slot" and (x[1] in self.time_slots or x[1] in self.window_slots):
                if y[0] == "const" and isinstance(y[1], int | float) \
                        and not isinstance(y[1], bool):
                    self.thresholds.setdefault(x[1], set()).add(y[1])
                    self.boundaries.setdefault(x[1], set()).update(
                        boundaries(_FLIP[op] if flipped else op, y[1]))
                else:
                    self.any_time.add(x[1])

    def limits(self, slots: set[int]) -> dict[str, LimitIR]:
        """Per fact among `slots` that conditions read: the constants it is compared with and
        the whole values where a comparison may flip (`any`: through arithmetic or another
        fact)."""
        return {
            self.slots[slot]["name"]: {
                "slot": slot,
                "any": slot in self.any_time,
                "thresholds": sorted(self.thresholds.get(slot, set())),
                "boundaries": sorted(self.boundaries.get(slot, set())),
            }
            for slot in sorted(slots)
            if slot in self.any_time or slot in self.thresholds
        }

    def compile(self) -> PlaybookIR:
        pb = self.pb
        meta = pb.playbook
        hours, minutes = (int(x) for x in meta.day_starts.split(":"))
        metrics = [
            {
                "name": name,
                "slot": self.slot_index[name],
                "kind": metric.kind,
                "event": metric.event,
                "field": metric.field,
                "attribute": metric.attribute,
                "window": parse_duration(metric.window) if metric.window else None,
                **({} if metric.calendar == "gregorian" else {"calendar": metric.calendar}),
            }
            for name, metric in pb.metrics.items()
        ]
        scores = [
            {
                "name": name,
                "slot": self.slot_index[name],
                "factors": [
                    {"predicate": self.predicate(f.when, f"scores.{name}[{i}]"),
                     "points": f.points, "label": f.label or f.when}
                    for i, f in enumerate(score.factors)
                ],
            }
            for name, score in pb.scores.items()
        ]
        tags = [
            {
                "name": name,
                "slot": self.slot_index[f"tag:{name}"],
                "predicate": self.predicate(tag.when, f"tags.{name}"),
                "sticky": tag.sticky,
                "group": tag.group,
            }
            for name, tag in pb.tags.items()
        ]
        stages = [
            {"name": stage.name, "predicate": self.predicate(stage.when, f"stages.{stage.name}")}
            for stage in pb.stages
        ]
        rules = [self.rule(i, rule) for i, rule in enumerate(pb.rules)]
        campaigns = [self.campaign(i, c) for i, c in enumerate(pb.campaigns)]
        order = sorted(range(len(rules)), key=lambda i: (-rules[i]["priority"], i))
        wakeups = self.limits(self.time_slots)
        for slot in sorted(self.holiday_read):  # any change of the day's value may matter
            wakeups[self.slots[slot]["name"]] = {"slot": slot, "any": True, "thresholds": [],
                                                 "boundaries": []}
        windows = self.limits(self.window_slots)
        return cast(PlaybookIR, {
            "ir_version": IR_VERSION,
            "playbook": meta.name,
            "version": meta.version,
            "timezone": meta.timezone,
            "day_starts_minutes": hours * 60 + minutes,
            "slots": self.slots,
            "metrics": metrics,
            "predicates": self.predicates,
            "scores": scores,
            "tags": tags,
            "stages": stages,
            "rules": rules,
            "rule_order": order,
            "wakeups": wakeups,
            "windows": windows,
            "channels": {name: dict(ch) for name, ch in
                         ((n, c.model_dump(exclude={"description", "cost"})) for n, c in
                          pb.channels.items())},
            **({"handover": pb.handover.model_dump()} if pb.handover else {}),
            **({"rfm": {"recency": pb.rfm.recency, "frequency": pb.rfm.frequency,
                        "monetary": pb.rfm.monetary,
                        "every": parse_duration(pb.rfm.every)}} if pb.rfm else {}),
            **({"clv": {"event": pb.clv.event, "amount": pb.clv.amount,
                        "every": parse_duration(pb.clv.every),
                        "horizon": parse_duration(pb.clv.horizon)}} if pb.clv else {}),
            "policy": _policy(pb.policy),
            "experiments": {name: {"holdout": x.holdout, "variants": list(x.variants),
                                   "goal": None if x.goal is None else {
                                       "event": x.goal.event,
                                       "within": parse_duration(x.goal.within)}}
                            for name, x in pb.experiments.items()},
            **({"campaigns": campaigns} if campaigns else {}),
        })

    def rule(self, index: int, rule: m.Rule) -> RuleIR:
        when = self.predicate(rule.when, f"rules.{rule.name}.when", rule.on)
        cancel = self.predicate(rule.cancel_if, f"rules.{rule.name}.cancel_if")
        reads = self.predicates[when]["reads"] if when is not None else []
        workdays = parse_workdays(rule.delay) if rule.delay else None
        out: RuleIR = {
            "name": rule.name,
            "index": index,
            "on": rule.on,
            "predicate": when,
            "priority": rule.priority,
            "cooldown": parse_duration(rule.cooldown) if rule.cooldown else None,
            "max_times": rule.max_times,
            "experiment": rule.experiment,
            "sample": rule.sample,
            "delay": parse_delay(rule.delay) if rule.delay else None,
            "cancel_predicate": cancel,
            "reads": reads,
            "actions": [self.action(a) for a in rule.actions],
        }
        if workdays:
            out["delay_workdays"] = workdays
        return out

    def campaign(self, index: int, campaign: m.Campaign) -> CampaignIR:
        """A campaign: its schedule texts, audience predicate, experiment, pilot, actions.

        The audience is read only at firing instants, where the runtime computes every
        time-relative metric for that instant, so it adds no thresholds to `wakeups`.
        """
        kept = ({k: set(v) for k, v in self.thresholds.items()},
                {k: set(v) for k, v in self.boundaries.items()}, set(self.any_time),
                set(self.holiday_read))
        audience = self.predicate(campaign.audience, f"campaigns.{campaign.name}.audience")
        assert audience is not None  # the model requires an audience
        self.thresholds, self.boundaries, self.any_time, self.holiday_read = kept
        return {
            "name": campaign.name,
            "index": index,
            "at": campaign.at,
            "every": campaign.every,
            "until": campaign.until,
            "audience": audience,
            "experiment": campaign.experiment,
            "sample": campaign.sample,
            "actions": [self.action(a) for a in campaign.actions],
        }

    def action(self, action: m.Action) -> dict[str, Any]:
        out: dict[str, Any] = action.model_dump()
        if isinstance(action, m.SendAction):
            template = self.pb.templates[action.template]
            out["text"] = template.text
            out["title"] = template.title
            variants = {}
            for name, content in action.variants.items():
                chosen = self.pb.templates[content.template or action.template]
                variants[name] = {"template": content.template or action.template,
                                  "text": chosen.text, "title": chosen.title,
                                  "params": {**action.params, **(content.params or {})}}
            out["variants"] = variants
        if isinstance(action, m.TaskAction):
            out["due"] = parse_duration(action.due)
        expires = out.pop("expires", None)
        if expires is not None:
            out["expires"] = parse_duration(expires)
        return out


def _minutes(text: str) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    return hours * 60 + minutes


def _policy(policy: m.Policy) -> dict[str, Any]:
    """The [policy] table as data: times in minutes after local midnight, windows in seconds."""
    quiet = policy.quiet_hours
    return {
        "quiet_hours": None if quiet is None else {
            "start": _minutes(quiet.start), "end": _minutes(quiet.end),
            "text": f"{quiet.start}-{quiet.end}"},
        "consent_attribute": policy.consent_attribute,
        "task_capacity": policy.task_capacity,
        "caps": [{"max": cap.max, "per": parse_duration(cap.per),
                  "per_text": "".join(cap.per.split()), "channel": cap.channel}
                 for cap in policy.caps],
        **({"quiet_days": list(policy.quiet_days)} if policy.quiet_days else {}),
    }


_FLIP = {"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}


def _const(node: e.Node) -> Any:
    assert isinstance(node, e.Const)
    value = node.value
    if isinstance(value, dt.date):
        return value.toordinal()
    return value


def _reads(cond: Cond) -> set[int]:
    out: set[int] = set()

    def walk(x: Any) -> None:
        if isinstance(x, list):
            if len(x) == 2 and x[0] == "slot" and isinstance(x[1], int):
                out.add(x[1])
            else:
                for item in x:
                    walk(item)

    walk(cond)
    return out


def compile_playbook(pb: m.Playbook) -> PlaybookIR:
    """The RuleIR of a validated playbook: plain dicts and lists, deterministic."""
    return _Compiler(pb).compile()
