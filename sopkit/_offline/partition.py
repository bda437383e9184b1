"""Simulation by customer partition (`sopkit simulate --workers N`), one process each.

Every partition keeps the one clock exactly as a single run does. With local processes the
parent reads and checks the history once and feeds each partition its own customers'
events and the time of every other accepted event, to which its clock moves (feed.py). On
Dask (and in `explain`) a partition reads the whole history itself: it parses every
record, refuses what a single run refuses (a duplicate event_id is remembered for every
customer, its own or not) and moves the clock to each event it would apply. Either way it
keeps the state of, and acts for, only the customers it owns (a stable hash of the
customer id). The same driver steps (`Driver`, `split=True`) happen in every partition
in the same order, so each action is keyed by (step, time, customer id): within a step a
single run acts in that order too (wake-ups by time, then customer id; an event for its one
customer; a hand-over by customer id). Merging the partitions' keyed actions gives the single
run's output byte for byte; summaries add up.

`--report` data (`ReportData`) is gathered in each partition and added up: the day samples
happen at the same driver steps everywhere, so the per-day stage counts add up too.

Population-wide features read every customer at once. RFM and CLV refits and a hand-over
the [handover] team shares out meet at barriers (barrier.py): every partition reaches the
same refit instants and staff departures, sends its own customers' part (RFM values, CLV
rows, the departed staff member's customers and the team's loads) to the coordinator, the
parent process, which computes the breakpoints, the fit or the successors' order once, as
one process would, and hands each partition its answer. Barriers rather than each partition
keeping every customer's inputs and fitting alone: those inputs depend on rule evaluation
(an owner a rule changes, metrics over profiles), not just on the history, and the fit runs
once. The cost: partitions wait for the slowest at each refit and team hand-over, and every
buyer's few numbers cross to the coordinator per refit. Campaigns need no barrier (the
audience, pilot sample and experiment arm are per customer): each partition fires for its
own customers. Within one instant a refit or firing's actions come in a phase of their own
(PHASE_*), part of the merge key. Rules counted from their first action (campaigns,
hand-over) are ordered in the merged summary by that action's merge key (`in_first_order`).
Staff task capacity (tasks per staff member per day over all customers) is kept by placing
customers who may share a staff member in one partition (components.py). `population`
names every such feature (`explain` then keeps every customer).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

from sopkit._errors import EventError
from sopkit._ir.types import PlaybookIR
from sopkit._offline.barrier import Barrier, clv_params
from sopkit._offline.report import ReportData
from sopkit._playbook.load import LoadedPlaybook
from sopkit._runtime.clvfacts import Facts
from sopkit._runtime.coordinator import Coordinator
from sopkit._runtime.core import CustomerCore
from sopkit._runtime.firings import CampaignPlan
from sopkit._runtime.inputs import EVENT_ID, STAFF_DEPARTED, record_customer_id, remember
from sopkit._runtime.records import Action
from sopkit._runtime.runtime import Runtime, refusal
from sopkit._stats import rfm as _rfm
from sopkit._stats.rfm import Breaks

Event = tuple[str, str, int, dict[str, Any]]
V = TypeVar("V")
_OWNED_KEPT = 1 << 20  # customers whose partition a PartitionRuntime remembers


def partition_of(customer_id: str, count: int) -> int:
    """The partition that owns a customer: stable across processes, runs and machines."""
    return zlib.crc32(customer_id.encode("utf-8")) % count


def _population_features(ir: PlaybookIR) -> list[tuple[str, str]]:
    """(feature, why) of each population-wide feature the playbook uses."""
    policy: Mapping[str, Any] = ir.get("policy") or {}
    handover: Mapping[str, Any] = ir.get("handover") or {}
    reasons = [
        ("rfm", "[rfm] scores every customer against all the others", bool(ir.get("rfm"))),
        ("clv", "[clv] fits its model on every customer", bool(ir.get("clv"))),
        ("campaigns", "campaigns choose their audience among all customers",
         bool(ir.get("campaigns"))),
        ("task_capacity", "task_capacity counts every customer's tasks per staff member",
         bool(policy.get("task_capacity"))),
        ("handover", "the [handover] team shares customers out across the population",
         bool(handover.get("team"))),
    ]
    return [(feature, text) for feature, text, present in reasons if present]


def meets(ir: PlaybookIR) -> bool:
    """Whether the partitions meet at barriers (RFM/CLV refits, a team's hand-overs), so
    they must all run at once."""
    features = {feature for feature, _ in _population_features(ir)}
    return bool(features & {"rfm", "clv", "handover"})


def population(ir: PlaybookIR) -> str | None:
    """Why one customer's run needs the others (`explain` keeps them all), or None."""
    found = [text for _, text in _population_features(ir)]
    return "; ".join(found) if found else None


# where an action comes within one instant of a driver step (the merge key): the refits'
# (CLV, then RFM: their queue entries sort first), customers' own wake-ups, then each
# campaign firing by file order
PHASE_CLV, PHASE_RFM, PHASE_WAKE, PHASE_FIRING = 0, 1, 2, 3
# the actions of a step that are not wake-ups: id(action) -> (phase, the action itself, held
# so that its id cannot pass to another action before the step is emitted and this cleared)
Phases = dict[int, tuple[int, Action]]


class PartitionCampaigns(CampaignPlan):
    """The campaign firings of a partition: its own customers of each audience."""

    def __init__(self, core: CustomerCore, phases: Phases) -> None:
        super().__init__(core)
        self.phases = phases

    def fire(self, index: int, when: int) -> list[Action]:
        return _marked(super().fire(index, when), PHASE_FIRING + index, self.phases)


class PartitionCoordinator(Coordinator):
    """The coordinator of a partition: the population steps go through the barrier."""

    def __init__(self, runtime: Runtime, barrier: Barrier | None, phases: Phases) -> None:
        super().__init__(runtime.ir, runtime.calendar, runtime.core)
        self.barrier = barrier
        self.phases = phases
        self.campaign_plan = PartitionCampaigns(runtime.core, phases)

    def _exchange(self, kind: str, payload: Any) -> Any:
        if self.barrier is None:
            raise RuntimeError(f"a partition without a barrier reached a {kind} step")
        return self.barrier.exchange(kind, payload)

    def rfm_refit(self, now: int) -> list[Action]:
        return _marked(super().rfm_refit(now), PHASE_RFM, self.phases)

    def clv_refit(self, now: int) -> list[Action]:
        return _marked(super().clv_refit(now), PHASE_CLV, self.phases)

    def rfm_fit(self, bought: list[tuple[float, float, float]]) -> list[Breaks | None]:
        found = self._exchange("rfm", [list(v) for v in bought])
        return [None if b is None else (b[0], b[1], b[2], b[3]) for b in found]

    def clv_fit(self, ids: list[str], rows: list[tuple[float, float, float, float]]
                ) -> list[Facts] | None:
        params, facts = self._exchange("clv", [ids, [list(row) for row in rows]])
        self.population.clv_params = None if params is None else clv_params(params)
        return None if facts is None else [(f[0], f[1], f[2], f[3]) for f in facts]

    def handover_scope(self, staff: str, team: list[str], least_loaded: bool
                       ) -> tuple[list[str], dict[str, int]]:
        owned, load = super().handover_scope(staff, team, least_loaded)
        if not team:  # a named successor: only its own customers matter
            return owned, load
        everyone, loads = self._exchange("handover", [owned, load])
        return list(everyone), dict(loads)


def _marked(actions: list[Action], phase: int, phases: Phases) -> list[Action]:
    for action in actions:
        phases[id(action)] = (phase, action)
    return actions


class PartitionRuntime(Runtime):
    """A runtime that owns the customers of one partition and keeps the clock of all;
    `barrier` reaches the other partitions at population steps (barrier.py)."""

    def __init__(self, playbook: LoadedPlaybook, *, engine: str, index: int,
                 count: int, barrier: Barrier | None = None) -> None:
        super().__init__(playbook, engine=engine)
        self.index, self.count = index, count
        self.foreign_ids: dict[str, dict[str, int]] = {}  # other partitions' event ids
        self.owned_profiles = 0
        self.phases: Phases = {}  # the step's refit and firing actions, until emitted
        # a rule counted from its first action (campaigns, hand-over): that action's merge key
        self.first_keys: dict[str, list[Any]] = {}
        self.coordinator = PartitionCoordinator(self, barrier, self.phases)
        # with task_capacity: customer -> partition, staff components together (components.py)
        self.placed: dict[str, int] | None = None
        self._owned: dict[str, bool] = {}  # owns(), remembered (set `placed` before a run)

    def phase(self, action: Action) -> int:
        """Where the action comes within its instant (PHASE_*), for the merge key."""
        marked = self.phases.get(id(action))  # held there: no other live object has its id
        return PHASE_WAKE if marked is None else marked[0]

    def owns(self, customer_id: str) -> bool:
        owned = self._owned.get(customer_id)
        if owned is None:
            if self.placed is not None and customer_id in self.placed:
                owned = self.placed[customer_id] == self.index
            else:
                owned = partition_of(customer_id, self.count) == self.index
            if len(self._owned) >= _OWNED_KEPT:  # bounded: a huge history costs no more
                self._owned.clear()
            self._owned[customer_id] = owned
        return owned

    def reports(self, record: Any) -> bool:
        """Whether this partition reports (quarantines) a record: its customer's owner, or
        the first partition for a record without a usable customer id."""
        if isinstance(record, Mapping):
            try:
                return self.owns(record_customer_id(record))
            except EventError:
                pass
        return self.index == 0

    def add_profile(self, record: Mapping[str, Any]) -> None:
        """Add the profile if this partition owns the customer; the owner reports a bad one
        (the first partition, a record without a usable customer id)."""
        if not self.reports(record):
            return
        super().add_profile(record)
        self.owned_profiles += 1

    def _refusal(self, event: Event) -> EventError | None:
        customer_id, etype, ts, fields = event
        if etype == STAFF_DEPARTED or self.owns(customer_id):
            return super()._refusal(event)
        return refusal(self.calendar, self.foreign_ids.get(customer_id), fields.get(EVENT_ID),
                       ts, self.coordinator.now_ts)

    def _apply_checked(self, event: Event) -> list[Action]:
        """An event of an owned customer (or a staff event, which every partition applies to
        its own customers) as in one runtime; another's only has its event id remembered
        (the clock is at its time already)."""
        customer_id, etype, ts, fields = event
        if etype == STAFF_DEPARTED or self.owns(customer_id):
            return super()._apply_checked(event)
        event_id = fields.get(EVENT_ID)
        if event_id is not None:
            self.foreign_ids[customer_id] = remember(self.foreign_ids.get(customer_id),
                                                     str(event_id), ts)
        return []


# -- merging the partitions' results ---------------------------------------------------------

# an action's merge key as text that sorts as the key does, so the merge compares lines
# in C: fixed-width numbers (timestamps from 1900, below zero, to 2999 fit once offset), the
# customer id's UTF-8 in hex (byte order is code point order; a space, below any hex digit,
# ends it, so a shorter id sorts first as in Python) and the partition's running number,
# which keeps one partition's actions of one key in their order
_TS_OFFSET = 10**11


def keyed_line(step: int, action: Action, text: str, phase: int, seq: int) -> str:
    """One action of a partition's output, keyed for the merge (`text` ends with a newline);
    `seq` counts the partition's lines."""
    customer = action.customer_id.encode("utf-8", "surrogatepass").hex()
    return f"{step:016d}{action.ts + _TS_OFFSET:012d}{phase:06d}{customer} {seq:012d}\t{text}"


def merge_actions(paths: Iterable[Path], out: IO[str]) -> None:
    """Write the partitions' keyed actions to `out` in the order of a single run."""
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(p.open("rb")) for p in paths]
        lines = (line[line.index(b"\t") + 1:] for line in heapq.merge(*files))
        raw = getattr(out, "buffer", None)
        if raw is None or (getattr(out, "encoding", "") or "").lower() not in ("utf-8", "utf8"):
            out.writelines(line.decode("utf-8") for line in lines)
            return
        out.flush()  # what was written as text comes first
        raw.writelines(lines)


def merge_quarantine(paths: Iterable[Path], dest: Path, sources: list[str]) -> None:
    """One quarantine file in a single run's order: by input file (profiles first), line."""
    entries: list[tuple[int, int, str]] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            entry = json.loads(line)
            entries.append((sources.index(entry["source"]), int(entry["line"]), line))
    if not entries:
        return
    entries.sort()
    dest.write_text("".join(text for _, _, text in entries), encoding="utf-8")


def _sum(dicts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


def merge_summaries(parts: list[dict[str, Any]], ir: PlaybookIR) -> dict[str, Any]:
    """A single run's summary from the partitions' (in partition order)."""
    first = parts[0]
    merged = dict(first)
    for key in ("profiles", "quarantined", "customers", "actions",
                "warmup_actions", "pending_at_end"):
        merged[key] = sum(int(p[key]) for p in parts)
    merged["quarantine_reasons"] = dict(sorted(_sum(p["quarantine_reasons"]
                                                    for p in parts).items()))
    by_rule: dict[str, Counter[str]] = {}
    for part in parts:
        for rule, counts in part["by_rule"].items():
            by_rule.setdefault(rule, Counter()).update(counts)
    merged["by_rule"] = {rule: dict(sorted(c.items())) for rule, c in by_rule.items()}
    for key in ("by_day", "by_type", "by_channel"):
        merged[key] = dict(sorted(_sum(p[key] for p in parts).items()))
    statuses = list(dict.fromkeys(s for p in parts for s in p["policy"]))
    order = ("deferred", "suppressed", "holdout")
    merged["policy"] = {s: dict(sorted(_sum(p["policy"].get(s, {}) for p in parts).items()))
                        for s in sorted(statuses, key=order.index)}
    stage_order = {s["name"]: i for i, s in enumerate(ir["stages"])}
    stages = _sum(p["stages"] for p in parts)
    merged["stages"] = dict(sorted(stages.items(),
                                   key=lambda kv: stage_order.get(kv[0], 1 << 30)))
    merged["tags"] = {t["name"]: sum(p["tags"].get(t["name"], 0) for p in parts)
                      for t in ir["tags"]}
    # every partition sees every firing, in the same order: its own part of each audience
    merged["campaigns"] = [
        {key: (sum(int(p["campaigns"][i][key]) for p in parts)
               if key not in ("campaign", "time") else value)
         for key, value in firing.items()}
        for i, firing in enumerate(first["campaigns"])]
    segments = _sum(p["rfm_segments"] for p in parts)
    merged["rfm_segments"] = {name: segments.get(name, 0) for name in _rfm.SEGMENT_NAMES} \
        if any(segments.values()) else {}
    # one note per year (the notes of one year are the same text): by year, as one run's
    merged["calendar_warnings"] = sorted({n for p in parts for n in p["calendar_warnings"]})
    return merged


def in_first_order(counts: dict[str, V], firsts: list[dict[str, list[Any]]]
                   ) -> dict[str, V]:
    """`counts` by rule in a single run's order: the playbook's rules first (they are there
    from the start), then the ones counted from their first action (campaigns, hand-over)
    in the order of that action in the merged output (`firsts`: each partition's keys)."""
    first: dict[str, tuple[Any, ...]] = {}
    for part in firsts:
        for rule, key in part.items():
            first[rule] = min(first.get(rule, tuple(key)), tuple(key))
    fixed = [rule for rule in counts if rule not in first]
    later = sorted((rule for rule in counts if rule in first), key=lambda r: first[r])
    return {rule: counts[rule] for rule in fixed + later}


def report_part(data: ReportData) -> dict[str, Any]:
    """A partition's report data as plain JSON values, for `merge_reports`."""
    return {
        "description": data.description, "timezone": data.timezone,
        "stage_order": data.stage_order, "stage_descriptions": data.stage_descriptions,
        "rule_descriptions": data.rule_descriptions, "tag_groups": data.tag_groups,
        "first": data.first,
        "outreach": [[day, series, n] for (day, series), n in data.outreach.items()],
        "internal": dict(data.internal),
        "rules": {rule: dict(counts) for rule, counts in data.rules.items()},
        "reasons": [[status, group, dict(rules)]
                    for (status, group), rules in data.reasons.items()],
        "tasks": [[who, day, n] for (who, day), n in data.tasks.items()],
        "stage_days": data.stage_days, "segments": data.segments,
    }


def merge_reports(parts: list[dict[str, Any]], into: ReportData) -> None:
    """Fill `into` with a single run's report data from the partitions' (`report_part`).

    What comes from the playbook or the clock (names, descriptions, the first moment, the
    days sampled) is the same in every partition; the counts add up, the day samples per
    stage too. The report reads every count by key, so the order they were filled in does
    not change a byte of it.
    """
    first = parts[0]
    into.description, into.timezone = first["description"], first["timezone"]
    into.stage_order = list(first["stage_order"])
    into.stage_descriptions = dict(first["stage_descriptions"])
    into.rule_descriptions = dict(first["rule_descriptions"])
    into.tag_groups = dict(first["tag_groups"])
    into.first = first["first"]
    for part in parts:
        for day, series, n in part["outreach"]:
            into.outreach[day, series] += n
        into.internal.update(part["internal"])
        for rule, counts in part["rules"].items():
            into.rules.setdefault(rule, Counter()).update(counts)
        for status, group, rules in part["reasons"]:
            into.reasons.setdefault((status, group), Counter()).update(rules)
        for who, day, n in part["tasks"]:
            into.tasks[who, day] += n
        for day, stages in part["stage_days"].items():
            into.stage_days[day] = _sum([into.stage_days.get(day, {}), stages])
        into.segments = _sum([into.segments, part["segments"]])
    into.stage_days = dict(sorted(into.stage_days.items()))
