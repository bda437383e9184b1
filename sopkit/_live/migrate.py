"""`sopkit migrate`: deploy a new version of a live playbook (or roll back to an old one).

The store keeps every customer's state by name and the compiled playbook it runs (meta
`ir`). A migration compares that with the new version, name by name, decides what becomes
of the customers in flight, and writes it all in one transaction (docs/live.md#deploying-a-
new-version):

- an unchanged rule keeps every counter, cooldown and pending action (same due time);
- a removed rule's pending actions are `cancelled` ("rule removed in version N"), also the
  ones waiting in the outbox;
- a rule with `renamed_from = "old"` keeps the old rule's state; without it, remove + add;
- a new entry rule is forward-only: customers whose condition already holds are armed as
  "already true" and do not fire; `backfill = "qualifying"` fires it once for them now,
  through every policy;
- a changed delay: pending actions keep their time; a changed condition re-evaluates at the
  next tick;
- a new (or redefined) metric is replayed from `--events` (nothing sent) or starts empty;
- the same version with different rules is refused.

`plan` computes everything in memory; `apply` commits it. Nothing runs before `apply`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sopkit._errors import EventError, UsageError
from sopkit._io import BadRecord, read_records
from sopkit._live.loop import StoreMismatch, fingerprint
from sopkit._live.outbox import outbox_rows
from sopkit._live.store import OutboxRow, Store
from sopkit._mask import mask_text
from sopkit._playbook.load import LoadedPlaybook
from sopkit._runtime import state as _state
from sopkit._runtime.runtime import Action, Runtime

SAMPLE = 5  # customer ids shown per change
_POSITIONAL = ("index", "predicate", "cancel_predicate", "reads")


@dataclass
class Change:
    """One difference between the running version and the new one, and whom it touches."""

    kind: str  # rule added | rule removed | rule renamed | rule changed | metric added | ...
    name: str
    effect: str  # what happens to customers in flight
    customers: int = 0
    sample: list[str] = field(default_factory=list)

    def count(self, customer_id: str) -> None:
        self.customers += 1
        if len(self.sample) < SAMPLE:
            self.sample.append(customer_id)

    def to_json(self, unmasked: bool = False) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "effect": self.effect,
                "customers": self.customers,
                "sample": self.sample if unmasked else [mask_text(c) for c in self.sample]}


@dataclass
class Migration:
    """A deployment worked out in memory: the changes, and what `apply` will write."""

    old: str  # playbook:version running in the store
    new: str
    at: int  # the store's clock: the deploy instant
    changes: list[Change]
    runtime: Runtime
    rows: list[OutboxRow]
    cancel: dict[str, tuple[str, int]]  # removed rule -> (reason, now) for outbox rows
    unchanged: list[str]
    replayed: int = 0  # history events replayed into new metrics


def _rule_shape(ir: Mapping[str, Any], rule: Mapping[str, Any]) -> dict[str, Any]:
    """A rule without its positions, with its conditions as text (comparable across IRs)."""
    shape = {k: v for k, v in rule.items() if k not in _POSITIONAL}
    texts = ir["predicates"]
    shape["when"] = None if rule["predicate"] is None else texts[rule["predicate"]]["text"]
    cancel = rule["cancel_predicate"]
    shape["cancel_if"] = None if cancel is None else texts[cancel]["text"]
    return json.loads(json.dumps(shape, sort_keys=True, default=str))  # type: ignore[no-any-return]  # plain JSON data


def _metric_shape(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "slot"}


def plan(loaded: LoadedPlaybook, store: Store, *, engine: str = "native",
         events: Path | None = None) -> Migration:
    """Work out the deployment of `loaded` onto `store`; writes nothing."""
    old_pk = store.get_meta("playbook")
    saved = store.get_meta("ir")
    clock = store.get_meta("runtime")
    if old_pk is None or saved is None or clock is None:
        raise UsageError(f"{store.url} has no running playbook to migrate from; start it "
                         "with `sopkit run`")
    old_ir = json.loads(saved)
    rt = Runtime(loaded, engine=engine)
    new_ir = rt.ir
    if old_pk.split(":")[0] != rt.pk.split(":")[0]:
        raise StoreMismatch(f"{store.url} belongs to playbook '{old_pk}', not '{rt.pk}'")
    if old_pk == rt.pk and store.get_meta("fingerprint") != fingerprint(new_ir):
        raise StoreMismatch(f"'{rt.pk}' differs from the version {store.url} runs, but its "
                            "version is the same; bump [playbook].version")
    version = new_ir["version"]
    old_rules = {r["name"]: r for r in old_ir["rules"]}
    new_rules = {r["name"]: r for r in new_ir["rules"]}
    models = {r.name: r for r in loaded.model.rules}
    renames: dict[str, str] = {}
    for name in new_rules:
        source = models[name].renamed_from
        if source is not None and name not in old_rules and source in old_rules and \
                source not in new_rules:
            renames[source] = name
    changes: list[Change] = []
    unchanged: list[str] = []
    added = [n for n in new_rules if n not in old_rules and n not in renames.values()]
    removed = [n for n in old_rules if n not in new_rules and n not in renames]
    by_rule: dict[str, Change] = {}
    for name in added:
        rule = new_rules[name]
        if rule["on"] is not None:
            effect = f"new: fires on the next '{rule['on']}' event"
        elif models[name].backfill == "qualifying":
            effect = "new, backfill = qualifying: fires now for customers who already qualify"
        else:
            effect = "new: customers who already qualify are armed without firing"
        by_rule[name] = Change("rule added", name, effect)
    for name in removed:
        by_rule[name] = Change("rule removed", name, f"pending actions cancelled: rule "
                               f"removed in version {version}")
    for old, new in renames.items():
        by_rule[new] = Change("rule renamed", f"{old} → {new}",
                              "keeps counters, cooldowns and pending actions")
    for name in new_rules:
        source = next((o for o, n in renames.items() if n == name), name)
        if source not in old_rules:
            continue
        before, after = _rule_shape(old_ir, old_rules[source]), _rule_shape(new_ir,
                                                                          new_rules[name])
        before.pop("name")
        after.pop("name")
        what = sorted(k for k in after if before.get(k) != after[k])
        if not what:
            if name not in by_rule:
                unchanged.append(name)
            continue
        notes = []
        if "when" in what or "on" in what:
            notes.append("condition re-evaluated at the next tick")
        if "delay" in what or "delay_workdays" in what:  # `N workdays`: delay_workdays
            notes.append("pending actions keep their due time")
        rest = [k for k in what if k not in ("when", "on", "delay", "delay_workdays")]
        if rest:
            notes.append(f"{', '.join(rest)} apply from now; counters kept")
        change = by_rule.get(name)
        if change is None:
            by_rule[name] = Change("rule changed", name, "; ".join(notes))
        else:
            change.effect += "; " + "; ".join(notes)
    old_metrics = {m["name"]: m for m in old_ir["metrics"]}
    fresh: dict[str, Change] = {}
    for spec in new_ir["metrics"]:
        was = old_metrics.get(spec["name"])
        if was is not None and _metric_shape(was) == _metric_shape(spec):
            continue
        kind = "metric added" if was is None else "metric changed"
        fresh[spec["name"]] = Change(kind, spec["name"], "")
    for name in old_metrics:
        if name not in {m["name"] for m in new_ir["metrics"]}:
            changes.append(Change("metric removed", name, "its values are dropped"))

    # -- the customers in flight -------------------------------------------------------
    rt.restore(clock.encode(), [])
    now = rt.now_ts
    if now is None:
        raise UsageError(f"{store.url} has not started its clock yet; nothing to migrate")
    removed_set = set(removed)
    cancel_records: list[Action] = []
    old_actions = {n: r["actions"] for n, r in old_rules.items()}
    names = _state.Renames(rules=renames, fresh_metrics=frozenset(fresh))
    for customer_id, blob in store.load_customers():
        for item in _state.pending_rules(blob, customer_id):
            rule_name = item["rule"]
            if rule_name in removed_set:
                by_rule[rule_name].count(customer_id)
                for i, spec in enumerate(old_actions[rule_name]):
                    cancel_records.append(Action(
                        rt.calendar.format(now), customer_id, rule_name, spec["type"],
                        "cancelled", "delayed", f"{old_pk}:{rule_name}:{customer_id}:"
                        f"{item['occurrence']}:{i}",
                        {"reason": f"rule removed in version {version}"},
                        dict(item.get("facts") or {}), now, now))
            elif renames.get(rule_name, rule_name) in by_rule and \
                    by_rule[renames.get(rule_name, rule_name)].kind in ("rule renamed",
                                                                        "rule changed"):
                by_rule[renames.get(rule_name, rule_name)].count(customer_id)
        rt._adopt(_state.load_customer(rt, customer_id, blob, names))
    replayed = _replay(rt, events, fresh, now) if fresh and events is not None else 0
    for name, change in fresh.items():
        readers = sorted(r["name"] for r in new_ir["rules"]
                         if any(new_ir["slots"][s]["name"] == name for s in r["reads"]))
        if events is not None:
            change.effect = f"replayed from {events.name} ({replayed} events), nothing sent"
        else:
            change.effect = "starts empty (no --events given)" + (
                f"; rules reading it without history: {', '.join(readers)}" if readers else "")
        changes.append(change)
    rows = _arm(rt, loaded, added, by_rule, now)
    cancel = {name: (f"rule removed in version {version}", now) for name in removed}
    rows = outbox_rows(rt, cancel_records) + rows
    changes = [*by_rule.values(), *changes]
    changes.sort(key=lambda c: (c.kind, c.name))
    return Migration(old_pk, rt.pk, now, changes, rt, rows, cancel, unchanged, replayed)


def _replay(rt: Runtime, events: Path, fresh: dict[str, Change], now: int) -> int:
    """Feed the history's events up to the store's clock into the new metrics only."""
    targets = [(k, m) for k, m in enumerate(rt.metrics) if m.name in fresh]
    count = 0
    for item in read_records(events):
        if isinstance(item, BadRecord):
            continue
        try:
            customer_id, etype, ts, fields = rt.parse_event(item.data)
        except EventError:
            continue
        if ts > now:
            break
        cs = rt.customers.get(customer_id)
        if cs is None:
            continue
        day = rt.calendar.day_index(ts)
        for k, metric in targets:
            if metric.matches(etype):
                cs.metrics[k] = metric.observe(cs.metrics[k], ts, day, fields)
                count += 1
        cs.wake_cache = None
    return count


def _arm(rt: Runtime, loaded: LoadedPlaybook, added: list[str], by_rule: dict[str, Change],
         now: int) -> list[OutboxRow]:
    """New entry rules meet customers who already qualify: armed as already true, or (with
    `backfill = "qualifying"`) fired now; every customer is rescheduled for the new
    thresholds. Returns the outbox rows of what fired."""
    entry = [(r, rule) for r, rule in enumerate(rt.rules)
             if rule["name"] in added and rule["on"] is None]
    backfills = {rule.name for rule in loaded.model.rules if rule.backfill == "qualifying"}
    today = rt.calendar.day_index(now)
    actions: list[Action] = []
    for customer_id in sorted(rt.customers):
        cs = rt.customers[customer_id]
        cs.wake_cache = None
        fire = False
        if entry:
            true = rt.engine.evaluate(rt.facts.facts(cs, now, today, None))
            for r, rule in entry:
                pid = rule["predicate"]
                if pid is None or pid in true:
                    by_rule[rule["name"]].count(customer_id)
                    if rule["name"] in backfills:
                        fire = True
                    else:
                        cs.rule_truth[r] = 1
        if fire:
            actions.extend(rt.core.tick(cs, now, None))
        else:
            rt.core.schedule(cs, now)
    return outbox_rows(rt, actions)


def apply(migration: Migration, store: Store, wall: int) -> int:
    """Write the migration in one transaction; return the new outbox rows."""
    rt = migration.runtime
    customers = {cid: rt.dump_customer(cid) for cid in sorted(rt.customers)}
    history = json.loads(store.get_meta("migrations") or "[]")
    history.append({"at": rt.calendar.format(migration.at), "wall": wall,
                    "from": migration.old, "to": migration.new,
                    "changes": [c.to_json() for c in migration.changes]})
    meta = {"playbook": rt.pk, "fingerprint": fingerprint(rt.ir),
            "ir": json.dumps(rt.ir, ensure_ascii=False, sort_keys=True, default=str),
            "runtime": rt.dump_clock().decode(),
            "migrations": json.dumps(history, ensure_ascii=False)}
    return store.commit(customers, meta, migration.rows, None, migration.cancel)
