"""Lints: mistakes a valid playbook can still hold. `sopkit check --strict` reports them.

Each finding is a warning Problem with a location, a message and a suggestion. The checks:

- `never-true`: an `and` chain whose comparisons with constants contradict each other;
- `shadowed-stage`: a stage whose `when` never decides, because an earlier stage holds
  whenever it does;
- `overlapping-rules`: two rules on the same trigger with the same condition, or sending
  the same template on the same channel when both can hold;
- `no-cap`: a channel that send/webhook actions use and no `[policy]` cap covers;
- `wecom-limit`: rules that can send one customer more WeCom 客户群发 messages than WeCom
  lets them receive;
- `sms-length`: an SMS template longer than 3 segments once rendered;
- `wecom-group`: a campaign sending on WeCom with a template that differs from customer to
  customer, so each customer needs a group-message task of their own;
- `plain-http`: a channel URL with http:// to a host other than this machine.

The condition analysis is sound, not complete: it reports only what surely holds, over the
condition language's own semantics (a comparison that reads a missing fact is false, `not`
negates it; docs/playbook.md, missing facts).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sopkit._errors import Problem
from sopkit._lang import expr as e
from sopkit._lang.templates import _parse as parse_template
from sopkit._playbook import models as m
from sopkit._playbook.limits import (
    DAY,
    SMS_MAX_SEGMENTS,
    WECOM_MONTH_DAYS,
    WECOM_SOURCE,
    at_most,
    policy_caps,
    rough_render,
    sms_segments,
    within_wecom,
)
from sopkit._playbook.load import LoadedPlaybook
from sopkit._playbook.source import KeyPath
from sopkit._playbook.terms import (
    Junction,
    Lit,
    Term,
    Terms,
    conflict,
    implies,
    unsatisfiable,
)

CODES = ("never-true", "shadowed-stage", "overlapping-rules", "no-cap", "wecom-limit",
         "sms-length", "wecom-group", "plain-http")
# placeholders that are the same for every customer of one WeCom group-message task
_PER_TASK = frozenset({"today", "now", "owner", "is_workday", "is_holiday"})


@dataclass(frozen=True)
class Finding:
    """A lint finding: its code (one of CODES) and the warning to show."""

    code: str
    problem: Problem


def lint(loaded: LoadedPlaybook) -> list[Problem]:
    """Every lint warning of a valid playbook, in file order."""
    return [f.problem for f in findings(loaded)]


def findings(loaded: LoadedPlaybook) -> list[Finding]:
    """Every lint finding of a valid playbook, in file order (file, line, column)."""
    found = list(_Linter(loaded).run())
    unique = {(f.problem.location.file, f.problem.location.line, f.problem.location.column,
               f.problem.message): f for f in found}
    return [unique[k] for k in sorted(unique)]


class _Linter:
    def __init__(self, loaded: LoadedPlaybook) -> None:
        self.loaded = loaded
        self.pb = loaded.model
        self.origins = loaded.origins

    def warn(self, code: str, path: KeyPath, message: str, suggestion: str,
             offset: int | None = None) -> Finding:
        where = (self.origins.locate(path) if offset is None
                 else self.origins.locate_value(path, offset))
        return Finding(code, Problem(where, message, suggestion, severity="warning"))

    def run(self) -> Iterator[Finding]:
        yield from self.never_true()
        yield from self.shadowed_stages()
        yield from self.overlapping_rules()
        yield from self.caps()
        yield from self.wecom_limit()
        yield from self.sms_length()
        yield from self.wecom_group()
        yield from self.plain_http()

    def plain_http(self) -> Iterator[Finding]:
        from sopkit._playbook.channel_check import plain_http

        for path, where, host in plain_http(self.loaded):
            yield Finding("plain-http", Problem(
                where, f"'{path[-1]}' sends to {host} over plain http://: messages and "
                "customer data cross the network unencrypted", "use https://, or a host on "
                "this machine (127.0.0.1, localhost) behind a TLS proxy", severity="warning"))

    # -- conditions

    def conditions(self) -> Iterator[tuple[KeyPath, str, str | None]]:
        for sname, score in self.pb.scores.items():
            for i, factor in enumerate(score.factors):
                yield ("scores", sname, "factors", i, "when"), factor.when, None
        for tname, tag in self.pb.tags.items():
            if tag.when is not None:
                yield ("tags", tname, "when"), tag.when, None
        for i, stage in enumerate(self.pb.stages):
            if stage.when is not None:
                yield ("stages", i, "when"), stage.when, None
        for i, rule in enumerate(self.pb.rules):
            if rule.when is not None:
                yield ("rules", i, "when"), rule.when, rule.on
            if rule.cancel_if is not None:
                yield ("rules", i, "cancel_if"), rule.cancel_if, None

    def term(self, text: str, event: str | None = None) -> Term:
        return Terms(self.pb, event).term(e.parse(text))

    def never_true(self) -> Iterator[Finding]:
        for path, text, event in self.conditions():
            yield from self._dead(path, self.term(text, event))

    def _dead(self, path: KeyPath, term: Term) -> Iterator[Finding]:
        if isinstance(term, Junction):
            if term.op == "and":
                lits = conflict(term.items)
                if lits:
                    shown = " and ".join(f"`{lit.text}`" for lit in lits)
                    name = lits[0].name
                    why = (f"a customer cannot both hold and lack tag '{name[4:]}'"
                           if name.startswith("tag:") else f"no value of {name} meets "
                           f"{'both' if len(lits) == 2 else 'all of them'}")
                    yield self.warn(
                        "never-true", path, f"this can never be true: {shown} ({why})",
                        "check the numbers and the operators; did you mean `or`?",
                        offset=lits[0].pos)
                    return
            for item in term.items:
                yield from self._dead(path, item)
        elif isinstance(term, Lit) and term.present and term.values.is_empty():
            yield self.warn("never-true", path, f"this can never be true: `{term.text}`",
                            "a list after `in` needs at least one value", offset=term.pos)

    # -- stages

    def shadowed_stages(self) -> Iterator[Finding]:
        stages = self.pb.stages
        targets = {a.stage for r in self.pb.rules for a in r.actions
                   if isinstance(a, m.SetStageAction)}
        terms = [self.term(s.when) if s.when is not None else None for s in stages]
        for j, later in enumerate(stages):
            term_j = terms[j]
            if term_j is None or unsatisfiable(term_j):
                continue
            for i in range(j):
                earlier = stages[i]
                term_i = terms[i]
                if term_i is None:
                    if later.name in targets:  # otherwise `check` reports it as an error
                        yield self.warn(
                            "shadowed-stage", ("stages", j, "when"),
                            f"stage '{later.name}' is never chosen by its `when`: stage "
                            f"'{earlier.name}' above it has no `when` and always holds; only "
                            "set_stage actions reach it",
                            f"move '{earlier.name}' last, or drop this `when`")
                    break
                if implies(term_j, term_i):
                    same = term_j == term_i
                    yield self.warn(
                        "shadowed-stage", ("stages", j, "when"),
                        f"stage '{later.name}' can never be chosen by its `when`: "
                        + (f"stage '{earlier.name}' above it has the same condition"
                           if same else
                           f"whenever `{later.when}` holds, `{earlier.when}` of stage "
                           f"'{earlier.name}' above it holds too")
                        + ", and the first stage that holds wins",
                        f"move '{later.name}' above '{earlier.name}', or narrow "
                        f"'{earlier.name}'s condition")
                    break

    # -- rules

    def overlapping_rules(self) -> Iterator[Finding]:
        rules = self.pb.rules
        terms = [self.term(r.when, r.on) if r.when is not None else None for r in rules]
        for j, later in enumerate(rules):
            trigger = f"on '{later.on}'" if later.on else "on entry"
            for i in range(j):
                earlier = rules[i]
                if earlier.on != later.on:
                    continue
                if terms[i] == terms[j] and _timing(earlier) == _timing(later):
                    key = "when" if later.when is not None else "on"
                    yield self.warn(
                        "overlapping-rules", ("rules", j, key),
                        f"rules '{earlier.name}' and '{later.name}' fire {trigger} with the "
                        "same condition and the same cooldown, max_times and delay: they "
                        "always fire together",
                        "merge their actions into one rule, or make the conditions differ")
                    break
                shared = _same_sends(earlier, later)
                if shared is None:
                    continue
                a, b = terms[i], terms[j]
                both: Term = Junction("and", tuple(t for t in (a, b) if t is not None), 0)
                if unsatisfiable(both):
                    continue  # never both at once
                index, channel, template = shared
                yield self.warn(
                    "overlapping-rules", ("rules", j, "actions", index, "template"),
                    f"rules '{earlier.name}' and '{later.name}' both send template "
                    f"'{template}' on channel '{channel}' {trigger}: a customer who meets "
                    "both conditions gets it twice",
                    "make the conditions exclusive, or keep one of the two rules")
                break

    # -- caps and platform limits

    def _sending(self) -> dict[str, list[tuple[int, int]]]:
        """Channel -> (rule index, action index) of each send/webhook action on it."""
        out: dict[str, list[tuple[int, int]]] = {}
        for i, rule in enumerate(self.pb.rules):
            for j, action in enumerate(rule.actions):
                if isinstance(action, m.SendAction | m.WebhookAction):
                    out.setdefault(action.channel, []).append((i, j))
        return out

    def caps(self) -> Iterator[Finding]:
        covered = policy_caps(self.pb)
        for channel, uses in sorted(self._sending().items()):
            if channel in covered or None in covered:
                continue
            names = sorted({self.pb.rules[i].name for i, _ in uses})
            users = (f"rule {names[0]}" if len(names) == 1 else
                     f"rules {', '.join(names[:-1])} and {names[-1]}")
            yield self.warn(
                "no-cap", ("channels", channel),
                f"no [policy] cap covers channel '{channel}' (used by {users}): what one "
                "customer receives on it is limited only by each rule's cooldown and max_times",
                "add a [policy] cap for this channel, e.g. at most 2 messages a week per "
                "customer")

    def wecom_limit(self) -> Iterator[Finding]:
        caps = policy_caps(self.pb)
        for channel, uses in sorted(self._sending().items()):
            spec = self.pb.channels.get(channel)
            if spec is None or spec.type != "wecom":
                continue
            limits = caps.get(channel, []) + caps.get(None, [])
            if any(within_wecom(c) for c in limits):  # one cap that holds is enough
                continue
            rules = sorted({i for i, _ in uses})
            unbounded = [i for i in rules if at_most(self.pb.rules[i], DAY) is None]
            for i in unbounded:
                rule = self.pb.rules[i]
                yield self.warn(
                    "wecom-limit", ("rules", i, "name"),
                    f"nothing limits how often rule '{rule.name}' sends on WeCom channel "
                    f"'{channel}' (no cooldown, no max_times); WeCom 客户群发 delivers a "
                    "customer at most as many messages a month as the month has days (28 in "
                    f"February; {WECOM_SOURCE}) and drops the rest",
                    "set cooldown = \"1d\" or more, or max_times, or add a [policy] cap")
            if unbounded:
                continue
            for days in WECOM_MONTH_DAYS:
                counts = [(i, at_most(self.pb.rules[i], days * DAY) or 0) for i in rules]
                total = sum(n for _, n in counts)
                if total <= days:
                    continue
                alone = [(i, n) for i, n in counts if n > days]
                for i, n in alone:
                    rule = self.pb.rules[i]
                    yield self.warn(
                        "wecom-limit", ("rules", i, "cooldown"),
                        f"rule '{rule.name}' can send one customer {n} messages in a "
                        f"{days}-day month on WeCom channel '{channel}' (cooldown "
                        f"{rule.cooldown}); WeCom 客户群发 delivers at most {days} "
                        f"({WECOM_SOURCE}) and drops the rest",
                        "set cooldown = \"1d\" or more, or add a [policy] cap")
                if not alone:
                    shown = ", ".join(f"{self.pb.rules[i].name} {n}" for i, n in counts)
                    yield self.warn(
                        "wecom-limit", ("channels", channel),
                        f"rules on WeCom channel '{channel}' can send one customer {total} "
                        f"messages in a {days}-day month ({shown}); WeCom 客户群发 delivers "
                        f"at most {days} ({WECOM_SOURCE}) and drops the rest",
                        "lengthen cooldowns, or add a [policy] cap for this channel")
                break

    def sms_length(self) -> Iterator[Finding]:
        seen: set[tuple[str, tuple[tuple[str, Any], ...]]] = set()
        for rule in self.pb.rules:
            for action in rule.actions:
                if not isinstance(action, m.SendAction):
                    continue
                spec = self.pb.channels.get(action.channel)
                template = self.pb.templates.get(action.template)
                if spec is None or spec.type != "sms" or template is None:
                    continue
                params = tuple(sorted(action.params.items()))
                if (action.template, params) in seen:
                    continue
                seen.add((action.template, params))
                text = rough_render(template.text, action.params)
                length, segments, per = sms_segments(text)
                if segments > SMS_MAX_SEGMENTS:
                    yield self.warn(
                        "sms-length", ("templates", action.template, "text"),
                        f"template '{action.template}' (sent by rule '{rule.name}' on SMS "
                        f"channel '{action.channel}') is about {length} characters once "
                        f"rendered: {segments} SMS segments of {per}, more than "
                        f"{SMS_MAX_SEGMENTS}",
                        f"shorten it to {SMS_MAX_SEGMENTS * per} characters or fewer (the "
                        "signature counts too), or send a link")


    def wecom_group(self) -> Iterator[Finding]:
        for i, campaign in enumerate(self.pb.campaigns):
            for j, action in enumerate(campaign.actions):
                spec = self.pb.channels.get(getattr(action, "channel", ""))
                if not isinstance(action, m.SendAction) or spec is None or \
                        spec.type != "wecom":
                    continue
                used: list[tuple[KeyPath, str]] = [
                    (("campaigns", i, "actions", j, "template"), action.template)]
                used += [(("campaigns", i, "actions", j, "variants", name, "template"),
                          content.template) for name, content in action.variants.items()
                         if content.template]
                for path, name in used:
                    template = self.pb.templates.get(name)
                    if template is None:
                        continue
                    texts = [template.text, template.title or ""]
                    personal = [n for text in texts for _, n, _ in parse_template(text)
                                if not n.startswith("params.") and n not in _PER_TASK]
                    if personal:
                        yield self.warn(
                            "wecom-group", path,
                            f"campaign '{campaign.name}' sends template '{name}' on WeCom "
                            f"channel '{action.channel}', and its {{{{ {personal[0]} }}}} "
                            "differs from customer to customer: a WeCom group-message task "
                            "carries one text, so each customer gets a task of their own and "
                            "the owner confirms them one by one",
                            "keep per-customer placeholders out of WeCom campaign texts "
                            "(params, today, now and owner are the same for a whole task)")


def _timing(rule: m.Rule) -> tuple[str | None, int | None, str | None, str | None]:
    return rule.cooldown, rule.max_times, rule.delay, rule.cancel_if


def _same_sends(a: m.Rule, b: m.Rule) -> tuple[int, str, str] | None:
    """(action index in b, channel, template) of a send both rules make, or None."""
    sends = {(x.channel, x.template) for x in a.actions if isinstance(x, m.SendAction)}
    for j, action in enumerate(b.actions):
        if isinstance(action, m.SendAction) and (action.channel, action.template) in sends:
            return j, action.channel, action.template
    return None
