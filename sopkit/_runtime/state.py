"""Stored state by name: one customer, and the runtime-wide clock, as documented JSON.

In memory a customer's state is kept by position (rule 3's counters are `fired[3]`), which is
fast and small. Stored, every item is keyed by the playbook's own names, so a new version
whose rules, metrics or scores moved, appeared or went away reads the old state correctly:
a name the new version knows gets its value, a name it does not know is left behind
(`sopkit migrate` lists those changes from the two versions' compiled playbooks), a new name
starts empty. Values are written by `_codec`
(docs/live.md#stored-state has the whole format). Nothing here runs code when it reads.

A customer (format 3):

    {"v": 3, "id": "c1", "profile": {...}, "owner": "s1", "stage": "growth",
     "computed_stage": "growth", "tags": ["VIP"], "sticky": [],
     "rules": {"recall": {"armed_true": true, "fired": 1, "attempts": 1, "last": 1714550400}},
     "metrics": {"purchases_90d": {...}}, "scores": {"churn_risk": 30.0},
     "pending": [{"rule": "thanks_later", "due": 1714809600, "seq": 7, "occurrence": 1,
                  "facts": {...}, "scheduled": 1714550400, "event": ["purchase", {...}]}],
     "wake_at": 1714809600, "opt_out": ["sms"], "deliveries": [[1714550400, "wecom"]],
     "rfm": [5, 3, 4, "重要价值客户"], "tag_changes": 2, "purchases": [...], "clv": [...],
     "event_ids": {"e-1": 1714550400}}

Empty items are left out; a missing item reads as empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sopkit._runtime import codec as _codec
from sopkit._runtime.codec import StateError
from sopkit._runtime.policy import PolicyState
from sopkit._runtime.records import NO_TIME, CustomerState, Pending

if TYPE_CHECKING:
    from sopkit._runtime.runtime import Runtime

FORMAT = 3  # bump when the stored shape changes; docs/live.md#stored-state



@dataclass
class Renames:
    """How stored names map onto the running playbook's: a migration's `renamed_from`, and
    the metrics it redefined (their stored values are not read)."""

    rules: dict[str, str] = field(default_factory=dict)  # old name -> new name
    fresh_metrics: frozenset[str] = frozenset()  # stored values not to be read (redefined)


def dump_customer(rt: Runtime, cs: CustomerState) -> bytes:
    """One customer's whole state, keyed by names (an empty item is left out)."""
    # profile, owner, stages, rules, metrics and scores by code made for the playbook
    # (dumpcode.py); `check`: what the stored state's writer must look inside
    # (`_codec.dumps_checked`), values that came from input or from the playbook's
    # expressions. The rest is ints, names and lists of those by construction (a name
    # starting with "$" puts all of it in `check`)
    out, check = rt.dump_layout(cs)
    if cs.tags:
        out["tags"] = tags = sorted(cs.tags)
        check.append(tags)
    if cs.sticky_truth:
        out["sticky"] = sticky = sorted(cs.sticky_truth)
        check.append(sticky)
    if cs.pending:
        out["pending"] = pending = [
            {"rule": rt.rules[p.rule]["name"], "due": p.due, "seq": p.seq,
             "occurrence": p.occurrence, "facts": p.facts, "scheduled": p.scheduled,
             "event": None if p.event is None else list(p.event)}
            for p in cs.pending]
        check.append(pending)
    if cs.opt_out:
        out["opt_out"] = opt_out = sorted(cs.opt_out)
        check.append(opt_out)
    if cs.deliveries:
        out["deliveries"] = [list(d) for d in cs.deliveries]  # [int, channel name]
    if cs.rfm:
        out["rfm"] = rfm = list(cs.rfm)
        check.append(rfm)
    if cs.purchases:
        out["purchases"] = cs.purchases
        check.append(cs.purchases)
    if cs.clv:
        out["clv"] = clv = list(cs.clv)
        check.append(clv)
    if cs.event_ids:
        out["event_ids"] = cs.event_ids
        check.append(cs.event_ids)
    return _codec.dumps_checked(out, check)


def load_customer(rt: Runtime, customer_id: str, blob: bytes,
                  renames: Renames | None = None) -> CustomerState:
    """A customer as `dump_customer` wrote it, placed into the running playbook's layout."""
    what = f"customer {customer_id}"
    data = _read(blob, what)
    renames = renames or Renames()
    try:
        cs = rt.core.blank(customer_id)
        cs.profile = dict(data.get("profile") or {})
        cs.owner = data.get("owner")
        cs.stage = data.get("stage")
        cs.computed_stage = data.get("computed_stage")
        cs.tags = rt.population.interned(frozenset(data.get("tags") or ()))
        cs.sticky_truth = rt.population.interned(frozenset(data.get("sticky") or ()))
        rule_index = {rule["name"]: r for r, rule in enumerate(rt.rules)}
        for name, item in (data.get("rules") or {}).items():
            r = rule_index.get(renames.rules.get(name, name))
            if r is None:  # a rule this version does not have: left behind
                continue
            cs.rule_truth[r] = 1 if item.get("armed_true") else 0
            cs.fired[r] = int(item.get("fired") or 0)
            cs.attempts[r] = int(item.get("attempts") or 0)
            last = item.get("last")
            cs.last_fired[r] = NO_TIME if last is None else int(last)
        metric_index = {m.name: k for k, m in enumerate(rt.metrics)}
        for name, value in (data.get("metrics") or {}).items():
            k = metric_index.get(name)
            if k is not None and name not in renames.fresh_metrics:
                cs.metrics[k] = rt.metrics[k].load_state(value)
        score_index = {s["name"]: i for i, s in enumerate(rt.ir["scores"])}
        for name, value in (data.get("scores") or {}).items():
            if name in score_index:
                cs.scores[score_index[name]] = float(value)
        for item in data.get("pending") or ():
            name = item["rule"]
            r = rule_index.get(renames.rules.get(name, name))
            if r is None:  # the rule is gone: `migrate` cancels these before it loads
                continue
            event = item.get("event")
            cs.pending.append(Pending(
                int(item["due"]), int(item["seq"]), r, int(item["occurrence"]),
                dict(item.get("facts") or {}), int(item["scheduled"]),
                None if event is None else (str(event[0]), dict(event[1]))))
        cs.wake_at = data.get("wake_at")
        cs.opt_out = frozenset(data.get("opt_out") or ())
        cs.deliveries = [(int(t), str(c)) for t, c in data.get("deliveries") or ()]
        rfm = data.get("rfm")
        cs.rfm = None if rfm is None else (int(rfm[0]), int(rfm[1]), int(rfm[2]), str(rfm[3]))
        cs.tag_changes = int(data.get("tag_changes") or 0)
        cs.purchases = data.get("purchases")
        clv = data.get("clv")
        cs.clv = None if clv is None else tuple(clv)
        cs.event_ids = data.get("event_ids")
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise StateError(f"{what}: stored state is damaged ({type(exc).__name__}: {exc})") \
            from None
    return cs


def pending_rules(blob: bytes, customer_id: str) -> list[dict[str, Any]]:
    """The stored pending items of a customer, as written (rule names as stored)."""
    return list(_read(blob, f"customer {customer_id}").get("pending") or ())


def _read(blob: bytes, what: str) -> dict[str, Any]:
    if bytes(blob[:1]) == b"\x80":
        raise StateError(
            f"{what}: this store was written by an older sopkit in a format that runs code "
            "when read (pickle), which sopkit no longer reads; rebuild it from the history "
            "with `sopkit migrate PLAYBOOK --store URL --rebuild --events HISTORY` "
            "(docs/live.md#stored-state)")
    data = _codec.loads(bytes(blob), what)
    if not isinstance(data, dict) or data.get("v") != FORMAT:
        version = data.get("v") if isinstance(data, dict) else None
        raise StateError(f"{what}: stored state format {version!r} is not {FORMAT}; this "
                         "store was written by another sopkit")
    return data


# ---- the runtime-wide state -----------------------------------------------------------------


def dump_clock(rt: Runtime, seq: int) -> bytes:
    """The clock, the sequence, policy counters and population fits, as data."""
    policy = rt.policy_state
    clv = None
    if rt.clv_params is not None:
        bgnbd, gamma = rt.clv_params
        clv = [list(bgnbd.as_tuple()), None if gamma is None else list(gamma.as_tuple())]
    return _codec.dumps({
        "v": FORMAT, "now": rt.now_ts, "seq": seq, "unstarted": list(rt.coordinator.unstarted),
        "tasks": {staff: [[day, n] for day, n in sorted(days.items())]
                  for staff, days in sorted(policy.tasks.items())},
        "tasks_today": policy.today,
        "rfm_breaks": None if rt.rfm_breaks is None else [list(b) for b in rt.rfm_breaks],
        "rfm_next": rt.coordinator.rfm_next, "clv_params": clv,
        "clv_next": rt.coordinator.clv_next,
        "staff_event_ids": rt.staff_event_ids,
    })


def load_clock(rt: Runtime, blob: bytes) -> dict[str, Any]:
    """What `dump_clock` wrote, with the policy counters and fits rebuilt."""
    from sopkit._stats.clv import BGNBDParams, GammaGammaParams  # numpy, scipy: when needed

    data = _read(blob, "runtime state")
    try:
        state = PolicyState()
        state.tasks = {staff: {int(d): int(n) for d, n in days}
                       for staff, days in (data.get("tasks") or {}).items()}
        state.today = int(data.get("tasks_today") or 0)
        breaks = data.get("rfm_breaks")
        clv = data.get("clv_params")
        params = None
        if clv is not None:
            params = (BGNBDParams(*clv[0]), None if clv[1] is None else GammaGammaParams(*clv[1]))
        return {
            "now": data.get("now"), "seq": int(data.get("seq") or 0),
            "unstarted": list(data.get("unstarted") or ()), "policy": state,
            "rfm": (None if breaks is None else tuple(tuple(b) for b in breaks),
                    data.get("rfm_next")),
            "clv": (params, data.get("clv_next")),
            "staff_event_ids": data.get("staff_event_ids"),
        }
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise StateError(f"runtime state: stored state is damaged ({exc})") from None

