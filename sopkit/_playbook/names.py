"""The names a playbook's conditions and templates may use, and their types: the built-in
facts, the policy's actions, the CLV facts, and each playbook's own (profile, metrics, scores,
event fields). The validator, the linter and the compiler read them here."""

from __future__ import annotations

from sopkit._lang import expr as e
from sopkit._playbook import models as m

BUILTINS: dict[str, e.Type] = {
    "stage": "string",
    "owner": "string",
    "customer_id": "string",
    "today": "date",
    "is_workday": "bool",
    "is_holiday": "bool",
}
# built-ins read from China's holiday arrangement (docs/calendar.md)
HOLIDAY_BUILTINS = frozenset({"is_workday", "is_holiday"})
ATTR_TYPES: dict[str, e.Type] = {
    "string": "string", "int": "number", "decimal": "number", "date": "date",
    "bool": "bool", "list": "list",
}
TIME_RELATIVE = frozenset({"days_since", "days_since_first", "days_until", "days_to_anniversary"})
# built-in event types: they change what sopkit knows and are never declared
BUILTIN_EVENTS = {
    "profile": "updates profile attributes",
    "opt_out": "records a channel opt-out",
    "opt_in": "withdraws a channel opt-out",
    "staff_departed": "hands a departing staff member's customers over",
}
POLICY_ACTIONS = frozenset({"send", "webhook", "task"})
CLV_FACTS = ("p_alive", "expected_purchases", "p_no_purchase", "expected_spend")


def metric_type(pb: m.Playbook, metric: m.Metric) -> e.Type:
    """The type a metric's value has in conditions."""
    if metric.kind == "last" and metric.event and metric.field:
        field_type = pb.events.get(metric.event, {}).get(metric.field, "string")
        return ATTR_TYPES[field_type]
    return "number"


def scope_names(pb: m.Playbook, event: str | None = None) -> dict[str, e.Type]:
    """Every name a condition may use; `event.<field>` only for the rule's event type."""
    names: dict[str, e.Type] = dict(BUILTINS)
    for attr, kind in pb.profile.items():
        names[f"profile.{attr}"] = ATTR_TYPES[kind]
    for name, metric in pb.metrics.items():
        names[name] = metric_type(pb, metric)
    for name in pb.scores:
        names[name] = "number"
    if pb.rfm is not None:
        from sopkit._stats.rfm import FACTS

        names.update(FACTS)
    if pb.clv is not None:
        names.update(dict.fromkeys(CLV_FACTS, "number"))
    if event is not None:
        for fname, kind in pb.events.get(event, {}).items():
            names[f"event.{fname}"] = ATTR_TYPES[kind]
    return names


def template_names(pb: m.Playbook, event: str | None) -> set[str]:
    """Names a template may use: condition names, `tags`, `now`, and `params.*`."""
    return {*scope_names(pb, event), "tags", "now"}
