"""Partitions by staff for `task_capacity`: customers who may share a staff member together.

Staff task capacity is counted per staff member per day over every customer whose tasks go
to them, in the order one process places those tasks. A partition can count it alone if it
owns every customer whose task may ever go to a staff member: so customers are grouped by
the connected components of "may be owned by, or get tasks for" (union-find over customers
and staff), and a component goes wholly to one partition: the components, largest first
(ties by smallest customer id), each to the partition with the fewest customers so far
(ties by index), so a few big staff portfolios still spread over the workers.

The links, found in a pre-pass over every record (each partition makes the same one) and the
playbook: a profile's or profile event's `owner`; a `staff_departed` event's staff member
and its `to`; the `[handover]` team and named successors with each other and with every
departing staff member; and a rule or campaign action that can reach any customer (a
`reassign` to, or a `task` for a named assignee) links every customer with that staff
member. Too many links are only slower (one bigger partition), never wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sopkit._errors import EventError
from sopkit._io import BadRecord, InputError, read_records
from sopkit._ir.types import PlaybookIR
from sopkit._runtime.inputs import PROFILE_EVENT, STAFF_DEPARTED, record_customer_id

EVERYONE = "\0everyone"  # the node every customer links to when an action reaches anyone


class _Union:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, node: str) -> str:
        parent = self.parent
        root = parent.setdefault(node, node)
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:  # path compression
            parent[node], node = root, parent[node]
        return root

    def join(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _staff(name: Any) -> str | None:
    return None if name in (None, "") else "s:" + str(name)


def _playbook_links(ir: PlaybookIR, union: _Union) -> bool:
    """Link the staff the playbook names; True if an action can reach any customer."""
    everyone = False
    actions = [a for r in ir["rules"] for a in r["actions"]]
    actions += [a for c in ir.get("campaigns", ()) for a in c["actions"]]
    for action in actions:
        staff = _staff(action.get("to")) if action.get("type") == "reassign" else \
            _staff(action.get("assignee")) if action.get("type") == "task" else None
        if staff is not None:
            union.join(EVERYONE, staff)
            everyone = True
    handover: Mapping[str, Any] = ir.get("handover") or {}
    names = list(handover.get("team") or [])
    for departing, successor in (handover.get("successors") or {}).items():
        names += [departing, successor]
    for name in names:
        union.join("s:" + str(names[0]), "s:" + str(name))
    return everyone


def staff_groups(ir: PlaybookIR, sources: Iterable[Path]) -> dict[str, str]:
    """Each customer -> the smallest customer id of its component (its own when alone)."""
    union = _Union()
    everyone = _playbook_links(ir, union)
    team = [str(t) for t in (ir.get("handover") or {}).get("team") or []]
    customers: set[str] = set()
    for path in sources:
        try:
            for item in read_records(path):
                if isinstance(item, BadRecord) or not isinstance(item.data, Mapping):
                    continue
                record = item.data
                if record.get("type") == STAFF_DEPARTED:
                    staff = _staff(record.get("staff"))
                    if staff is not None:
                        for other in (_staff(record.get("to")), _staff(team[0] if team
                                                                       else None)):
                            if other is not None:
                                union.join(staff, other)
                    continue
                try:
                    customer = "c:" + record_customer_id(record)
                except EventError:
                    continue
                customers.add(customer)
                if "type" not in record or record.get("type") == PROFILE_EVENT:
                    owner = _staff(record.get("owner"))
                    if owner is not None:
                        union.join(customer, owner)
        except InputError:  # a truncated .gz: the run itself reports it
            pass
    if everyone:
        for customer in customers:
            union.join(customer, EVERYONE)
    smallest: dict[str, str] = {}
    for customer in sorted(customers):  # a customer alone is its own smallest
        smallest.setdefault(union.find(customer), customer[2:])
    return {customer[2:]: smallest[union.find(customer)] for customer in customers}


def placement(groups: Mapping[str, str], count: int) -> dict[str, int]:
    """Each customer's partition: its whole component in the one with fewest customers."""
    members: dict[str, list[str]] = {}
    for customer, smallest in groups.items():
        members.setdefault(smallest, []).append(customer)
    load = [0] * count
    placed: dict[str, int] = {}
    for smallest in sorted(members, key=lambda s: (-len(members[s]), s)):
        index = min(range(count), key=lambda i: (load[i], i))
        load[index] += len(members[smallest])
        for customer in members[smallest]:
            placed[customer] = index
    return placed
