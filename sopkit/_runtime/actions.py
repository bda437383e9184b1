"""The action path: what rules and campaigns share to carry out actions for a customer.

One `ActionPath` takes a rule's (or a campaign's) actions for one customer: the customer's
arm of the experiment (a variant or the holdout), each action performed on the state (tags,
stage, owner) or rendered (messages, tasks, webhooks, templates filled from the customer's
facts), recorded as an `Action` with its idempotency key, and, for messages, tasks and
webhooks, decided by the policy pipeline (consent, holdout, quiet hours, caps, capacity).
Whether a changed fact re-evaluates the rules (forward chaining) is the caller's business.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from typing import Any

from sopkit._ir.types import PlaybookIR
from sopkit._lang.clock import Calendar
from sopkit._lang.templates import render, render_checked
from sopkit._playbook.names import CLV_FACTS, POLICY_ACTIONS
from sopkit._runtime import metrics as _metrics
from sopkit._runtime.facts import Event, FactReader
from sopkit._runtime.policy import Pipeline, bucket
from sopkit._runtime.population import Population
from sopkit._runtime.records import Action, CustomerState
from sopkit._stats import rfm as _rfm

_POLICY_ACTIONS = POLICY_ACTIONS  # send, webhook, task: what the policy pipeline decides
_CLV_NAMES = CLV_FACTS
_RFM_NAMES = tuple(_rfm.FACTS)


class ActionPath:
    """Carries out actions for one customer at an instant (see the module's docstring)."""

    def __init__(self, ir: PlaybookIR, calendar: Calendar, metrics: list[_metrics.Metric],
                 facts: FactReader, population: Population, policy: Pipeline) -> None:
        self.ir = ir
        self.rules = ir["rules"]
        self.pk = f"{ir['playbook']}:{ir['version']}"
        self.calendar = calendar
        self.metrics = metrics
        self.facts = facts
        self.population = population
        self.policy = policy
        self._clv = ir.get("clv")
        self._rfm = ir.get("rfm")

    def run(self, cs: CustomerState, now: int, rule: Mapping[str, Any],
            actions: list[dict[str, Any]], key: Callable[[int], str], trigger: str,
            facts: dict[str, Any], out: list[Action], *, base: Mapping[str, Any],
            event: Event | None = None, variant: str | None = None,
            decide: bool = True) -> bool:
        """Carry out `actions` of `rule` (a rule's or a campaign's) for the customer, appending
        their records to `out`; True if one of them changed a fact (tag, stage, owner).

        Each record's details start from `base`. With `decide` the customer's arm of the
        experiment is looked up and the policy pipeline decides each message and task;
        without (previews), `variant` is rendered and nothing is counted or decided.
        """
        lookup = self.lookup(cs, now, event)
        if decide:
            variant = self.variant(rule, cs.customer_id)
        stamp = self.calendar.format(now)
        changed = False
        for i, spec in enumerate(actions):
            kind = spec["type"]
            details: dict[str, Any] = dict(base)
            if variant is not None and kind in _POLICY_ACTIONS:
                details["variant"] = variant
                if kind == "send" and variant in spec["variants"]:
                    spec = {**spec, **spec["variants"][variant]}
            changed |= self.perform(cs, now, spec, details, lookup, count_stages=decide)
            action = Action(stamp, cs.customer_id, rule["name"], kind, "planned", trigger,
                            key(i), details, facts, now, now)
            if decide and kind in _POLICY_ACTIONS:  # consent, holdout, quiet hours, caps ...
                self.policy.apply(action, cs, rule, spec, self.population.policy_state)
            out.append(action)
        return changed

    def execute(self, cs: CustomerState, now: int, r: int, occurrence: int,
                facts: dict[str, Any], trigger: str, out: list[Action],
                event: Event | None = None, scheduled: int | None = None) -> bool:
        """Carry out rule `r`'s actions; True if any of them changed a fact."""
        rule = self.rules[r]
        base = {} if scheduled is None else {"fired_at": self.calendar.format(scheduled)}
        return self.run(cs, now, rule, rule["actions"],
                        lambda i: self.key(cs, rule, occurrence, i), trigger, facts, out,
                        base=base, event=event)

    def records(self, cs: CustomerState, now: int, r: int, occurrence: int,
                 facts: dict[str, Any], trigger: str, status: str,
                 reason: str) -> list[Action]:
        rule = self.rules[r]
        return [
            Action(self.calendar.format(now), cs.customer_id, rule["name"], spec["type"],
                   status, trigger, self.key(cs, rule, occurrence, i), {"reason": reason},
                   facts, now, now)
            for i, spec in enumerate(rule["actions"])
        ]

    def key(self, cs: CustomerState, rule: Mapping[str, Any], occurrence: int, index: int) -> str:
        return f"{self.pk}:{rule['name']}:{cs.customer_id}:{occurrence}:{index}"

    def perform(self, cs: CustomerState, now: int, spec: dict[str, Any],
                 details: dict[str, Any], lookup: Any, count_stages: bool = True) -> bool:
        """Carry out one action on the customer, filling in `details`; True if a fact (a tag,
        the stage, the owner) changed. Rules and campaigns share it."""
        kind = spec["type"]
        changed = False
        if kind == "tag":
            details["tag"] = spec["tag"]
            changed |= spec["tag"] not in cs.tags
            cs.tags = self.population.interned(cs.tags | {spec["tag"]})
        elif kind == "untag":
            details["tag"] = spec["tag"]
            changed |= spec["tag"] in cs.tags
            cs.tags = self.population.interned(cs.tags - {spec["tag"]})
        elif kind == "set_stage":
            details["stage"] = spec["stage"]
            details["from_stage"] = cs.stage
            changed |= cs.stage != spec["stage"]
            if count_stages:
                self.population.set_stage(cs, spec["stage"])
            else:
                cs.stage = spec["stage"]
        elif kind == "reassign":
            details["from_owner"] = cs.owner
            details["to"] = spec["to"]
            changed |= cs.owner != spec["to"]
            cs.owner = spec["to"]
        elif kind == "send":
            params = spec["params"]
            with_params = functools.partial(_param_or, params=params, lookup=lookup)
            text, missing = render_checked(spec["text"], with_params)
            details.update(channel=spec["channel"], template=spec["template"],
                           params=params, message=text)
            if spec.get("title"):
                details["title"], lacking = render_checked(spec["title"], with_params)
                missing += lacking
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

    def variant(self, rule: Mapping[str, Any], customer_id: str) -> str | None:
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

    def lookup(self, cs: CustomerState, now: int,
                event: Event | None = None) -> Any:
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
            elif name in ("is_workday", "is_holiday"):
                value = self.facts.builtin(cs, name, today)
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
                    scored = self.facts.rfm_scores(cs, now, today)
                    value = None if scored is None else scored[_RFM_NAMES.index(name)]
            cache[name] = value
            return value

        return lookup


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
