"""diff: what a playbook change changes, as differences between two lists of action records.

Pure functions over action records (the dicts `Action.to_json` gives, in the order a run
emits them); `sopkit diff` replays both playbooks and feeds them here.

Records are matched by (customer id, rule, action type, occurrence), where the occurrence
counts that customer's records of that rule and action type in emission order (1 = the
first). The idempotency key is not used: it holds the playbook version, which a change bumps.
A matched pair is *moved* when its time differs and *changed* when, at the same time, its
status or content differs (a rendered message, a param, a suppression reason …). An unmatched
record is *gained* (only the new playbook makes it) or *lost* (only the old one did).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sopkit._mask import mask_record, mask_text

KINDS = ("gained", "lost", "moved", "changed")
MatchKey = tuple[str, str, str, int]

# never compared: the match key itself, the key (holds the version) and the facts (why)
_NOT_COMPARED = frozenset({"time", "customer_id", "rule", "action", "key", "facts"})
# follow the action's own time: when it moves they move with it, which is no extra change
_TIME_DERIVED = frozenset({"fired_at", "due"})


@dataclass(frozen=True)
class Difference:
    """One action that a change adds, removes, moves in time or alters."""

    kind: str  # gained | lost | moved | changed
    customer_id: str
    rule: str
    action: str
    occurrence: int  # 1-based, among the customer's records of this rule and action type
    old: Mapping[str, Any] | None
    new: Mapping[str, Any] | None
    fields: tuple[str, ...] = ()  # besides the time: the fields whose values differ

    @property
    def time(self) -> str:
        """When it happens: the new time, or the old one for a lost action."""
        record = self.new if self.new is not None else self.old
        assert record is not None
        return str(record["time"])

    def changes(self) -> list[tuple[str, Any, Any]]:
        """(field, old value, new value) for each differing field besides the time."""
        old, new = self.old or {}, self.new or {}
        return [(name, old.get(name), new.get(name)) for name in self.fields]

    def masked(self) -> Difference:
        """The same difference with phone numbers and e-mails masked in both records and in
        the customer id, as `sopkit simulate` writes them."""
        return Difference(self.kind, mask_text(self.customer_id), self.rule, self.action,
                          self.occurrence, _mask_record(self.old), _mask_record(self.new),
                          self.fields)

    def to_json(self) -> dict[str, Any]:
        return {
            "change": self.kind, "customer_id": self.customer_id, "rule": self.rule,
            "action": self.action, "occurrence": self.occurrence,
            "old_time": self.old["time"] if self.old is not None else None,
            "new_time": self.new["time"] if self.new is not None else None,
            "fields": {name: [a, b] for name, a, b in self.changes()},
            "old": dict(self.old) if self.old is not None else None,
            "new": dict(self.new) if self.new is not None else None,
        }


def _mask_record(record: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if record is None:
        return None
    return mask_record(record)


def instant(time: str) -> float:
    """An ISO 8601 record time as a POSIX timestamp, so different offsets compare rightly."""
    return dt.datetime.fromisoformat(time).timestamp()


def index(records: Iterable[Mapping[str, Any]]) -> dict[MatchKey, Mapping[str, Any]]:
    """Records by match key: (customer id, rule, action type, occurrence from 1)."""
    seen: dict[tuple[str, str, str], int] = {}
    out: dict[MatchKey, Mapping[str, Any]] = {}
    for record in records:
        base = (str(record["customer_id"]), str(record["rule"]), str(record["action"]))
        seen[base] = seen.get(base, 0) + 1
        out[(*base, seen[base])] = record
    return out


def differing_fields(old: Mapping[str, Any], new: Mapping[str, Any],
                     moved: bool = False) -> tuple[str, ...]:
    """The compared fields whose values differ, sorted (status first, then by name).

    When the status differs (planned -> suppressed …) the content one record has and the
    other lacks is not listed: the status and the reason say it.
    """
    skip = _NOT_COMPARED | (_TIME_DERIVED if moved else frozenset())
    if old.get("status") == new.get("status"):
        names = set(old) | set(new)
    else:
        names = (set(old) & set(new)) | ({"reason"} & (set(old) | set(new)))
    names -= skip
    differ = [name for name in names if old.get(name) != new.get(name)]
    return tuple(sorted(differ, key=lambda name: (name != "status", name)))


def compare(old: Iterable[Mapping[str, Any]],
            new: Iterable[Mapping[str, Any]]) -> list[Difference]:
    """Every difference between two runs' action records, in `sort_key` order."""
    before, after = index(old), index(new)
    out: list[Difference] = []
    for key in before.keys() | after.keys():
        a, b = before.get(key), after.get(key)
        if a is None:
            out.append(Difference("gained", *key, None, b))
        elif b is None:
            out.append(Difference("lost", *key, a, None))
        elif instant(str(a["time"])) != instant(str(b["time"])):
            out.append(Difference("moved", *key, a, b, differing_fields(a, b, moved=True)))
        else:
            fields = differing_fields(a, b)
            if fields:
                out.append(Difference("changed", *key, a, b, fields))
    out.sort(key=sort_key)
    return out


def sort_key(diff: Difference) -> tuple[str, float, str, str, int, int]:
    """Per customer, by time (the earlier of old and new), then rule, action, occurrence."""
    times = [instant(str(r["time"])) for r in (diff.old, diff.new) if r is not None]
    return (diff.customer_id, min(times), diff.rule, diff.action, diff.occurrence,
            KINDS.index(diff.kind))


def totals(diffs: Iterable[Difference]) -> dict[str, int]:
    """How many differences of each kind, in KINDS order (zeros included)."""
    counts = dict.fromkeys(KINDS, 0)
    for diff in diffs:
        counts[diff.kind] += 1
    return counts


def by_rule(diffs: Iterable[Difference], order: Sequence[str] = ()) -> dict[str, dict[str, int]]:
    """Differences per rule and kind: rules in `order` first, then any others by name."""
    counts: dict[str, dict[str, int]] = {}
    for diff in diffs:
        counts.setdefault(diff.rule, dict.fromkeys(KINDS, 0))[diff.kind] += 1
    rank: dict[str, int] = {}
    for name in order:
        rank.setdefault(name, len(rank))
    return dict(sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def sample(diffs: Iterable[Difference], n: int) -> list[str]:
    """The first `n` customer ids (in sorted order) among those with differences."""
    return sorted({diff.customer_id for diff in diffs})[:n]


def summary_line(counts: Mapping[str, int]) -> str:
    """`2 gained, 1 lost, 4 moved, 0 changed`."""
    return ", ".join(f"{counts.get(kind, 0)} {kind}" for kind in KINDS)


def what(record: Mapping[str, Any]) -> str:
    """A one-line account of what an action record does, as a person would read it."""
    status = record.get("status", "planned")
    kind = record.get("action")
    if status != "planned":
        reason = record.get("reason")
        return f"{status}" + (f" ({reason})" if reason else "")
    if kind == "send":
        return f"{record.get('channel')}: {record.get('message')}"
    if kind == "task":
        return f"task for {record.get('assignee') or '(owner)'}, due {record.get('due')}: " \
               f"{record.get('note')}"
    if kind in ("tag", "untag"):
        return f"{kind} {record.get('tag')}"
    if kind == "set_stage":
        return f"stage {record.get('from_stage')} -> {record.get('stage')}"
    if kind == "reassign":
        return f"owner {record.get('from_owner')} -> {record.get('to')}"
    if kind == "webhook":
        payload = json.dumps(record.get("payload"), ensure_ascii=False, sort_keys=True)
        return f"{record.get('channel')}: {payload}"
    return str(kind)


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def describe(diff: Difference) -> list[str]:
    """The lines `sopkit diff` prints for one difference (mask the records first)."""
    head = f"{diff.rule} {diff.action} #{diff.occurrence}"
    if diff.kind in ("gained", "lost"):
        record = diff.new if diff.kind == "gained" else diff.old
        assert record is not None
        return [f"{diff.kind:<8} {record['time']}  {head}  {what(record)}"]
    assert diff.old is not None and diff.new is not None
    if diff.kind == "moved":
        lines = [f"moved    {diff.old['time']} -> {diff.new['time']}  {head}"]
    else:
        lines = [f"changed  {diff.new['time']}  {head}"]
    for name, a, b in diff.changes():
        lines.append(f"           {name}: {_value(a)} -> {_value(b)}")
    return lines
