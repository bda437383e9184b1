"""Cross-reference checks of a shape-valid playbook. Each finding is a located Problem."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sopkit._errors import Problem, did_you_mean
from sopkit._lang import expr as e
from sopkit._lang.cncal import HOLIDAYS
from sopkit._lang.cron import MAX_ZONE_NAME, known_zone
from sopkit._lang.templates import TemplateError, placeholders
from sopkit._playbook import models as m
from sopkit._playbook.campaign_check import check_campaigns
from sopkit._playbook.ingest_check import check_ingest
from sopkit._playbook.models import parse_duration
from sopkit._playbook.names import (
    BUILTIN_EVENTS,
    BUILTINS,
    CLV_FACTS,
    POLICY_ACTIONS,
    TIME_RELATIVE,
    scope_names,
    template_names,
)
from sopkit._playbook.source import KeyPath

if TYPE_CHECKING:  # load imports this module (in functions) to validate what it loads
    from sopkit._playbook.load import LoadedPlaybook

_SECRET_KEY = re.compile(
    r"(secret|token|password|passwd|api_?key|private_?key|signing_?key|credential|"
    r"authorization|cookie)", re.IGNORECASE)
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def validate(loaded: LoadedPlaybook) -> list[Problem]:
    return list(_Checker(loaded).run())


class _Checker:
    def __init__(self, loaded: LoadedPlaybook) -> None:
        self.pb = loaded.model
        self.origins = loaded.origins
        self.tag_names = frozenset(self.pb.tags)
        self.stage_names = frozenset(s.name for s in self.pb.stages)
        # polarity use of tags per rule condition, for the cycle check
        self.rule_reads: dict[int, dict[str, set[bool]]] = {}
        self.rule_reads_stage: set[int] = set()
        self.rule_settled: dict[int, dict[str, bool]] = {}
        self.last_settled: dict[str, bool] = {}

    def problem(self, path: KeyPath, message: str, suggestion: str = "") -> Problem:
        return Problem(self.origins.locate(path), message, suggestion)

    def run(self) -> Iterator[Problem]:
        yield from self.meta()
        yield from self.events_and_metrics()
        yield from self.conditions()
        yield from self.stages()
        yield from self.channels()
        yield from self.handover()
        yield from self.rfm()
        yield from self.clv()
        yield from self.rules()
        yield from self.policy()
        yield from self.cycles()
        yield from check_campaigns(self)
        yield from check_ingest(self)

    def meta(self) -> Iterator[Problem]:
        meta = self.pb.playbook
        if known_zone(meta.timezone) is None:
            zone = meta.timezone
            if len(zone) > MAX_ZONE_NAME:
                yield self.problem(("playbook", "timezone"), f"unknown timezone "
                                   f"'{zone[:40]}…' ({len(zone):,} characters; IANA names "
                                   f"have at most {MAX_ZONE_NAME})", "e.g. Asia/Shanghai")
            else:
                zones = zoneinfo.available_timezones()
                yield self.problem(("playbook", "timezone"), f"unknown timezone '{zone}'",
                                   did_you_mean(zone, zones) or "e.g. Asia/Shanghai")
        if not _TIME.match(meta.day_starts):
            yield self.problem(("playbook", "day_starts"),
                               f"bad time of day '{meta.day_starts}'", "write HH:MM, e.g. 09:00")

    def events_and_metrics(self) -> Iterator[Problem]:
        for etype, fields in self.pb.events.items():
            if etype in BUILTIN_EVENTS:
                yield self.problem(("events", etype), f"'{etype}' is the built-in event type "
                                   f"that {BUILTIN_EVENTS[etype]}", "pick another name")
            for reserved in ("customer_id", "type", "ts"):
                if reserved in fields:
                    yield self.problem(("events", etype, reserved),
                                       f"'{reserved}' is part of every event; do not declare it")
        for name, metric in self.pb.metrics.items():
            yield from self.metric(name, metric)

    def metric(self, name: str, metric: m.Metric) -> Iterator[Problem]:
        path: KeyPath = ("metrics", name)
        kind = metric.kind
        uses_attr = kind in ("days_until", "days_to_anniversary")
        needs_field = kind in ("sum", "avg", "last", "max_count_per_key")
        if name in self.pb.scores or name in BUILTINS:
            yield self.problem(path, f"the name '{name}' is already used by a score or built-in")
        if uses_attr:
            if metric.event or metric.field or metric.window:
                extra = "event" if metric.event else "field" if metric.field else "window"
                yield self.problem((*path, extra), f"a {kind} metric takes `attribute`, not "
                                   f"`{extra}`")
            if metric.attribute is None:
                yield self.problem(path, f"a {kind} metric needs `attribute` (a profile date)",
                                   did_you_mean("", self.date_attrs()))
            elif metric.attribute not in self.pb.profile:
                yield self.problem((*path, "attribute"),
                                   f"unknown profile attribute '{metric.attribute}'",
                                   did_you_mean(metric.attribute, self.pb.profile))
            elif self.pb.profile[metric.attribute] != "date":
                yield self.problem((*path, "attribute"),
                                   f"'{metric.attribute}' is a {self.pb.profile[metric.attribute]}"
                                   f", {kind} needs a date")
            if metric.calendar != "gregorian" and kind != "days_to_anniversary":
                yield self.problem((*path, "calendar"), f"a {kind} metric takes no `calendar` "
                                   "(only days_to_anniversary counts in the lunar calendar)")
            return
        if metric.calendar != "gregorian":
            yield self.problem((*path, "calendar"), f"a {kind} metric takes no `calendar` "
                               "(only days_to_anniversary counts in the lunar calendar)")
        if metric.attribute is not None:
            yield self.problem((*path, "attribute"), f"a {kind} metric takes `event`, not "
                               "`attribute`")
        if metric.event is None:
            yield self.problem(path, f"a {kind} metric needs `event`",
                               did_you_mean("", self.pb.events))
            return
        if metric.event == "*":
            if kind not in ("days_since", "days_since_first", "count"):
                yield self.problem((*path, "event"), f"'*' (any event) does not fit a {kind}")
        elif metric.event not in self.pb.events:
            yield self.problem((*path, "event"), f"unknown event type '{metric.event}'",
                               did_you_mean(metric.event, self.pb.events))
            return
        if needs_field:
            fields = self.pb.events.get(metric.event, {})
            if metric.field is None:
                yield self.problem(path, f"a {kind} metric needs `field`",
                                   did_you_mean("", fields))
            elif metric.field not in fields:
                yield self.problem((*path, "field"),
                                   f"event '{metric.event}' has no field '{metric.field}'",
                                   did_you_mean(metric.field, fields))
            elif kind in ("sum", "avg") and fields[metric.field] not in ("int", "decimal"):
                yield self.problem((*path, "field"), f"{kind} needs a number field, "
                                   f"'{metric.field}' is a {fields[metric.field]}")
        elif metric.field is not None:
            yield self.problem((*path, "field"), f"a {kind} metric takes no `field`")
        if kind == "max_count_per_key" and metric.window is None:
            yield self.problem(path, "max_count_per_key needs a `window`", "e.g. window = \"7d\"")
        if kind in TIME_RELATIVE | {"last"} and metric.window is not None:
            yield self.problem((*path, "window"), f"a {kind} metric takes no `window`")

    def date_attrs(self) -> list[str]:
        return [a for a, t in self.pb.profile.items() if t == "date"]

    def expr(self, path: KeyPath, text: str, event: str | None = None,
             allow_scores: bool = True) -> tuple[Problem | None, e.Scope]:
        names = scope_names(self.pb, event)
        if not allow_scores:
            for score in self.pb.scores:
                names.pop(score, None)
        scope = e.Scope(names, self.tag_names, self.stage_names, allow_event=event is not None)
        try:
            node = e.parse(text)
            self.last_settled = e.settled_tags(node)
            e.check(node, scope)
        except e.ExprError as exc:
            loc = self.origins.locate_value(path, exc.offset)
            if not allow_scores and exc.message.startswith("unknown name") and \
                    any(f"'{s}'" in exc.message for s in self.pb.scores):
                return Problem(loc, "a scorecard factor cannot use a score",
                               "use the metrics the other score uses"), scope
            return Problem(loc, exc.message, exc.suggestion), scope
        return None, scope

    def conditions(self) -> Iterator[Problem]:
        for sname, score in self.pb.scores.items():
            if sname in BUILTINS:
                yield self.problem(("scores", sname), f"'{sname}' is a built-in name")
            for i, factor in enumerate(score.factors):
                bad, _ = self.expr(("scores", sname, "factors", i, "when"), factor.when,
                                   allow_scores=False)
                if bad:
                    yield bad
        for tname, tag in self.pb.tags.items():
            if tag.when is not None:
                bad, scope = self.expr(("tags", tname, "when"), tag.when)
                if bad:
                    yield bad
                elif tname in scope.tags_read:
                    yield self.problem(("tags", tname, "when"),
                                       f"tag '{tname}' depends on itself: its `when` reads it",
                                       "a dynamic tag's condition must not test the tag")
            elif tag.sticky:
                yield self.problem(("tags", tname, "sticky"),
                                   "`sticky` needs a `when`: a tag without one is set by actions "
                                   "and already kept")
        for i, stage in enumerate(self.pb.stages):
            if stage.when is not None:
                bad, _ = self.expr(("stages", i, "when"), stage.when)
                if bad:
                    yield bad

    def stages(self) -> Iterator[Problem]:
        seen: dict[str, int] = {}
        catch_all: str | None = None
        targets = {a.stage for r in self.pb.rules for a in r.actions
                   if isinstance(a, m.SetStageAction)}
        for i, stage in enumerate(self.pb.stages):
            if stage.name in seen:
                yield self.problem(("stages", i, "name"), f"stage '{stage.name}' is declared twice")
            seen[stage.name] = i
            if catch_all is not None and stage.name not in targets:
                yield self.problem(("stages", i, "name"),
                                   f"stage '{stage.name}' can never be reached: stage "
                                   f"'{catch_all}' above it has no `when` and always holds",
                                   f"move '{catch_all}' last or give it a `when`")
            if stage.when is None and catch_all is None:
                catch_all = stage.name

    def channels(self) -> Iterator[Problem]:
        for cname, channel in self.pb.channels.items():
            yield from self.secrets(("channels", cname), channel.model_extra or {}, cname)

    def rfm(self) -> Iterator[Problem]:
        rfm = self.pb.rfm
        if rfm is None:
            return
        wanted = {"recency": ("days_since",), "frequency": ("count",),
                  "monetary": ("sum", "avg")}
        for key, kinds in wanted.items():
            name = getattr(rfm, key)
            metric = self.pb.metrics.get(name)
            if metric is None:
                fitting = [n for n, x in self.pb.metrics.items() if x.kind in kinds]
                yield self.problem(("rfm", key), f"unknown metric '{name}'",
                                   did_you_mean(name, fitting or self.pb.metrics) or
                                   f"declare a metric of kind {' or '.join(kinds)}")
            elif metric.kind not in kinds:
                yield self.problem(("rfm", key), f"metric '{name}' is a {metric.kind}; "
                                   f"{key} needs a {' or '.join(kinds)} metric")
        if parse_duration(rfm.every) % 86400:
            yield self.problem(("rfm", "every"), f"every = \"{rfm.every}\" is not whole days: "
                               "the population is rescored at day starts",
                               "e.g. every = \"7d\" (each Monday) or \"1d\"")
        for fact in ("rfm_r", "rfm_f", "rfm_m", "rfm_segment"):
            if fact in self.pb.metrics or fact in self.pb.scores:
                yield self.problem(("metrics" if fact in self.pb.metrics else "scores", fact),
                                   f"'{fact}' is an RFM fact of [rfm]", "pick another name")

    def clv(self) -> Iterator[Problem]:
        clv = self.pb.clv
        if clv is None:
            return
        if clv.event not in self.pb.events:
            yield self.problem(("clv", "event"), f"unknown event type '{clv.event}'",
                               did_you_mean(clv.event, self.pb.events) or
                               f"declare it: [events.{clv.event}]")
        elif clv.amount is not None and \
                self.pb.events[clv.event].get(clv.amount) not in ("decimal", "int"):
            fields = [f for f, k in self.pb.events[clv.event].items() if k in ("decimal", "int")]
            yield self.problem(("clv", "amount"), f"'{clv.amount}' is not a number field of "
                               f"event '{clv.event}'", did_you_mean(clv.amount, fields) or
                               "name a decimal or int field, or leave amount out")
        if parse_duration(clv.every) % 86400:
            yield self.problem(("clv", "every"), f"every = \"{clv.every}\" is not whole days",
                               "e.g. every = \"30d\"")
        for fact in CLV_FACTS:
            if fact in self.pb.metrics or fact in self.pb.scores:
                yield self.problem(("metrics" if fact in self.pb.metrics else "scores", fact),
                                   f"'{fact}' is a fact of [clv]", "pick another name")

    def handover(self) -> Iterator[Problem]:
        ho = self.pb.handover
        if ho is None:
            return
        if ho.policy in ("round_robin", "least_loaded") and not ho.team:
            yield self.problem(("handover", "policy"), f"policy '{ho.policy}' needs a team",
                               'add team = ["staff-id", ...]')
        if ho.policy == "named" and not ho.successors:
            yield self.problem(("handover", "policy"), "policy 'named' needs successors",
                               'add successors = { departing = "successor" }')
        for staff, successor in ho.successors.items():
            if staff == successor:
                yield self.problem(("handover", "successors", staff),
                                   f"'{staff}' cannot succeed themselves")
        if ho.channel is not None:
            channel = self.pb.channels.get(ho.channel)
            if channel is None:
                yield self.problem(("handover", "channel"), f"unknown channel '{ho.channel}'",
                                   did_you_mean(ho.channel, self.pb.channels) or
                                   f"declare it: [channels.{ho.channel}] with type = \"wecom\"")
            elif channel.type != "wecom":
                yield self.problem(("handover", "channel"),
                                   f"channel '{ho.channel}' has type '{channel.type}'; the "
                                   "resigned-staff transfer is a WeCom API",
                                   "name a channel of type wecom, or leave channel out")

    def secrets(self, path: KeyPath, table: dict[str, Any], cname: str) -> Iterator[Problem]:
        """Keys that look like secrets, at any depth; `*_env` keys name variables and pass."""
        for key, value in table.items():
            if isinstance(value, dict):
                yield from self.secrets((*path, key), value, cname)
            elif _SECRET_KEY.search(key) and not key.endswith("_env"):
                yield self.problem((*path, key),
                                   f"'{key}' looks like a secret; secrets never go in a "
                                   "playbook", f"name an environment variable: {key}_env = "
                                   f"\"{cname.upper()}_{key.upper()}\"")

    def rules(self) -> Iterator[Problem]:
        names: set[str] = set()
        for i, rule in enumerate(self.pb.rules):
            path: KeyPath = ("rules", i)
            if rule.name in names:
                yield self.problem((*path, "name"), f"rule '{rule.name}' is declared twice",
                                   "rule names must be unique")
            names.add(rule.name)
            if rule.on is not None and rule.on not in self.pb.events:
                yield self.problem((*path, "on"), f"unknown event type '{rule.on}'",
                                   did_you_mean(rule.on, self.pb.events))
                continue
            if rule.on is None and rule.when is None:
                yield self.problem(path, f"rule '{rule.name}' needs `when` or `on`",
                                   "e.g. when = \"days_since_purchase > 90\"")
            if rule.when is not None:
                bad, scope = self.expr((*path, "when"), rule.when, rule.on)
                if bad:
                    yield bad
                self.rule_reads[i] = scope.tags_read
                self.rule_settled[i] = self.last_settled
                if "stage" in scope.used:
                    self.rule_reads_stage.add(i)
            if rule.cancel_if is not None:
                if rule.delay is None:
                    yield self.problem((*path, "cancel_if"), "`cancel_if` needs a `delay`",
                                       "it cancels delayed actions before they run")
                bad, _ = self.expr((*path, "cancel_if"), rule.cancel_if)
                if bad:
                    yield bad
            for j, action in enumerate(rule.actions):
                yield from self.action((*path, "actions", j), action, rule.on)
            if rule.experiment is not None:
                yield from self.experiment_use(path, rule.experiment, rule.actions,
                                               f"rule '{rule.name}'")
            if rule.sample is not None and not 0 < rule.sample <= 1:
                yield self.problem((*path, "sample"), f"sample {rule.sample:g} is outside "
                                   "(0, 1]: it is the share of customers in the pilot",
                                   "e.g. sample = 0.05 pilots the rule on 5% of customers")
            for j, action in enumerate(rule.actions):
                if isinstance(action, m.SendAction) and action.variants:
                    yield from self.send_variants((*path, "actions", j), action,
                                                  rule.experiment, f"rule '{rule.name}'")

    def experiment_use(self, path: KeyPath, name: str, actions: Sequence[m.Action],
                       owner: str, still: str = "tags and stages") -> Iterator[Problem]:
        """An `experiment` key of a rule or campaign (`owner`, e.g. "rule 'recall'"): it
        names a declared experiment, and there is something to hold out."""
        if name not in self.pb.experiments:
            yield self.problem((*path, "experiment"), f"unknown experiment '{name}'",
                               did_you_mean(name, self.pb.experiments) or
                               f"declare it: [experiments.{name}] with holdout = 0.1")
        elif not any(a.type in POLICY_ACTIONS for a in actions):
            yield self.problem((*path, "experiment"),
                               f"experiment '{name}' holds nothing out: {owner} has "
                               "no send, webhook or task action",
                               f"a holdout withholds messages and tasks; {still} "
                               "still change")

    def send_variants(self, path: KeyPath, action: m.SendAction, experiment_name: str | None,
                      owner: str) -> Iterator[Problem]:
        """A send's `variants` name variants of its owner's experiment and real templates;
        `owner` says whose (e.g. "rule 'recall'", "campaign 'double12'")."""
        experiment = self.pb.experiments.get(experiment_name or "")
        names = experiment.variants if experiment is not None else []
        for variant, content in action.variants.items():
            where: KeyPath = (*path, "variants", variant)
            if variant not in names:
                yield self.problem(where, f"'{variant}' is not a variant of "
                                   + (f"experiment '{experiment_name}'" if experiment else
                                      f"an experiment of {owner}"),
                                   did_you_mean(variant, names) or
                                   "declare it in [experiments.NAME] variants = [...] and set "
                                   f"the {owner.split()[0]}'s experiment")
            if content.template is not None and content.template not in self.pb.templates:
                yield self.problem((*where, "template"),
                                   f"unknown template '{content.template}'",
                                   did_you_mean(content.template, self.pb.templates))

    def policy(self) -> Iterator[Problem]:
        policy = self.pb.policy
        quiet = policy.quiet_hours
        if quiet is not None:
            path: KeyPath = ("policy", "quiet_hours")
            bad = False
            for key in ("start", "end"):
                if not _TIME.match(getattr(quiet, key)):
                    bad = True
                    yield self.problem((*path, key), f"bad time of day '{getattr(quiet, key)}'",
                                       "write HH:MM (24-hour), e.g. 21:00")
            if not bad and quiet.start == quiet.end:
                yield self.problem(path, f"quiet hours start and end at {quiet.start}: no "
                                   "window", "e.g. start = \"21:00\", end = \"09:00\" "
                                   "(overnight)")
        for i, holiday in enumerate(policy.quiet_days):
            if holiday not in HOLIDAYS:
                yield self.problem(("policy", "quiet_days", i),
                                   f"unknown holiday '{holiday}'",
                                   did_you_mean(holiday, HOLIDAYS) or
                                   "the holidays: " + ", ".join(HOLIDAYS))
        attr = policy.consent_attribute
        if attr is not None:
            lists = [a for a, t in self.pb.profile.items() if t == "list"]
            if attr not in self.pb.profile:
                yield self.problem(("policy", "consent_attribute"),
                                   f"unknown profile attribute '{attr}'",
                                   did_you_mean(attr, lists) or
                                   f"declare it: [profile] {attr} = \"list\"")
            elif self.pb.profile[attr] != "list":
                yield self.problem(("policy", "consent_attribute"),
                                   f"'{attr}' is a {self.pb.profile[attr]}; consent_attribute "
                                   "needs a list attribute (channel names or \"all\")",
                                   "list attributes: " + ", ".join(f"'{a}'" for a in lists)
                                   if lists else
                                   "declare one, e.g. [profile] opt_out = \"list\"")
        for i, cap in enumerate(policy.caps):
            if cap.channel is not None and cap.channel not in self.pb.channels:
                yield self.problem(("policy", "caps", i, "channel"),
                                   f"unknown channel '{cap.channel}'",
                                   did_you_mean(cap.channel, self.pb.channels) or
                                   "leave `channel` out to cap all channels together")
        for name, experiment in self.pb.experiments.items():
            seen: set[str] = set()
            for k, variant in enumerate(experiment.variants):
                if variant in seen or variant == "holdout" or not variant.strip():
                    yield self.problem(("experiments", name, "variants", k),
                                       f"variant name '{variant}' is empty, repeated or "
                                       "reserved ('holdout' names the held-out group)",
                                       "give each variant its own name")
                seen.add(variant)
            goal = experiment.goal
            if goal is not None and goal.event not in self.pb.events:
                yield self.problem(("experiments", name, "goal", "event"),
                                   f"unknown event type '{goal.event}'",
                                   did_you_mean(goal.event, self.pb.events) or
                                   f"declare it: [events.{goal.event}]")
            share = experiment.holdout
            if not 0 <= share < 1:
                hint = (f"a share, not a percentage: holdout = {share / 100:g} holds out "
                        f"{share:g}% of customers" if 1 < share < 100 else
                        "e.g. holdout = 0.1 holds out 10% of customers")
                yield self.problem(("experiments", name, "holdout"),
                                   f"holdout {share:g} is outside [0, 1): it is the share of "
                                   "customers held out", hint)

    def action(self, path: KeyPath, action: m.Action, event: str | None) -> Iterator[Problem]:
        if isinstance(action, m.TagAction | m.UntagAction):
            if action.tag not in self.pb.tags:
                yield self.problem((*path, "tag"), f"unknown tag '{action.tag}'",
                                   did_you_mean(action.tag, self.pb.tags) or
                                   f"declare it: [tags.\"{action.tag}\"]")
            elif self.pb.tags[action.tag].when is not None and not self.pb.tags[action.tag].sticky:
                yield self.problem((*path, "tag"), f"tag '{action.tag}' is dynamic (held while "
                                   "its `when` holds); an action cannot set or remove it",
                                   "make it sticky, or drop its `when`")
        elif isinstance(action, m.SetStageAction):
            if action.stage not in self.stage_names:
                yield self.problem((*path, "stage"), f"unknown stage '{action.stage}'",
                                   did_you_mean(action.stage, self.stage_names))
        elif isinstance(action, m.SendAction):
            if action.channel not in self.pb.channels:
                yield self.problem((*path, "channel"), f"unknown channel '{action.channel}'",
                                   did_you_mean(action.channel, self.pb.channels) or
                                   f"declare it: [channels.{action.channel}]")
            if action.template not in self.pb.templates:
                yield self.problem((*path, "template"), f"unknown template '{action.template}'",
                                   did_you_mean(action.template, self.pb.templates))
            else:
                template = self.pb.templates[action.template]
                yield from self.template(("templates", action.template, "text"), template.text,
                                         event, set(action.params), path)
                if template.title is not None:
                    yield from self.template(("templates", action.template, "title"),
                                             template.title, event, set(action.params), path)
        elif isinstance(action, m.TaskAction):
            yield from self.template((*path, "note"), action.note, event, set(), path)
        elif isinstance(action, m.WebhookAction):
            channel = self.pb.channels.get(action.channel)
            if channel is None:
                yield self.problem((*path, "channel"), f"unknown channel '{action.channel}'",
                                   did_you_mean(action.channel, self.pb.channels))
            elif channel.type != "webhook":
                yield self.problem((*path, "channel"), f"channel '{action.channel}' has type "
                                   f"'{channel.type}'; a webhook action needs a channel of type "
                                   "'webhook'")
            for key_path, text in _strings(action.payload, (*path, "payload")):
                yield from self.template(key_path, text, event, set(), path)

    def template(self, path: KeyPath, text: str, event: str | None, params: set[str],
                 action_path: KeyPath) -> Iterator[Problem]:
        try:
            used = placeholders(text)
        except TemplateError as exc:
            yield self.problem(path, str(exc), "placeholders look like {{ profile.name }}")
            return
        valid = template_names(self.pb, event) | {f"params.{p}" for p in params}
        for name in used:
            if name in valid:
                continue
            if name.startswith("params."):
                yield self.problem((*action_path, "params"),
                                   f"template uses '{name}' but the action gives no such param",
                                   did_you_mean(name, valid) or f"add params = {{ {name[7:]} = "
                                   "\"…\" }")
            else:
                yield self.problem(path, f"unknown name '{name}' in template",
                                   did_you_mean(name, valid))

    def cycles(self) -> Iterator[Problem]:
        """Rules that can re-enable each other through tag and stage changes."""
        rules = self.pb.rules
        writes: dict[int, list[tuple[str, bool]]] = {}
        for i, rule in enumerate(rules):
            out: list[tuple[str, bool]] = []
            settled = self.rule_settled.get(i, {})
            for action in rule.actions:
                # tagging a tag the condition requires (or untagging one it forbids) is a no-op
                if isinstance(action, m.TagAction) and settled.get(action.tag) is not True:
                    out.append((action.tag, True))
                elif isinstance(action, m.UntagAction) and settled.get(action.tag) is not False:
                    out.append((action.tag, False))
                elif isinstance(action, m.SetStageAction):
                    out.append(("\0stage", True))
            writes[i] = out
        edges: dict[int, list[tuple[int, str]]] = {i: [] for i in range(len(rules))}
        for i, outs in writes.items():
            for j in range(len(rules)):
                if i == j or rules[j].on is not None:
                    continue
                if rules[j].max_times is not None or rules[j].cooldown is not None:
                    continue  # a rule that cannot refire at once breaks any loop
                for tag, added in outs:
                    if tag == "\0stage":
                        if j in self.rule_reads_stage:
                            edges[i].append((j, "set_stage"))
                    elif added in self.rule_reads.get(j, {}).get(tag, set()):
                        verb = "tag" if added else "untag"
                        edges[i].append((j, f"{verb} '{tag}'"))
        reported: set[frozenset[int]] = set()
        for start in range(len(rules)):
            cycle = _find_cycle(start, edges)
            if cycle and frozenset(n for n, _ in cycle) not in reported:
                reported.add(frozenset(n for n, _ in cycle))
                steps = " → ".join(f"{rules[n].name} ({how})" for n, how in cycle)
                yield self.problem(("rules", start, "actions"),
                                   f"rules can trigger each other without end: {steps} → "
                                   f"{rules[start].name}",
                                   "break the loop with max_times, cooldown, or a stricter `when`")


def _strings(value: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    """Every string inside a payload, with its key path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _find_cycle(start: int, edges: dict[int, list[tuple[int, str]]]) -> list[tuple[int, str]]:
    """A path start -> ... -> start as (node, how it reaches the next) pairs, or []."""
    stack: list[tuple[int, list[tuple[int, str]]]] = [(start, [])]
    visited: set[int] = set()
    while stack:
        node, path = stack.pop()
        for nxt, how in edges[node]:
            if nxt == start:
                return [*path, (node, how)]
            if nxt not in visited:
                visited.add(nxt)
                stack.append((nxt, [*path, (node, how)]))
    return []
