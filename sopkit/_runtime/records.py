"""The runtime's records: what it emits (`Action`), what it holds per customer
(`CustomerState`, `Pending`) and what it shows (`CustomerView`). Plain data, no logic."""

from __future__ import annotations

import datetime as dt
from array import array
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

NO_TIME = -(1 << 63)  # "never" in CustomerState.last_fired (an array of timestamps)


@dataclass
class Action:
    """One thing a rule did or would do for one customer, with why and when."""

    time: str
    customer_id: str
    rule: str
    action: str
    status: str = "planned"  # planned | deferred | suppressed | holdout | cancelled
    trigger: str = "entry"  # entry | event:<type> | delayed
    key: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    ts: int = 0
    deliver_ts: int = 0  # when it is due for delivery: `ts`, or later when deferred

    def __post_init__(self) -> None:
        if not self.deliver_ts:
            self.deliver_ts = self.ts

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": self.time, "customer_id": self.customer_id, "rule": self.rule,
            "action": self.action, "status": self.status, "trigger": self.trigger,
            "key": self.key,
        }
        out.update(self.details)
        out["facts"] = self.facts
        return out


@dataclass(slots=True)
class Pending:
    """A delayed rule firing a customer holds until `due`."""

    due: int
    seq: int
    rule: int
    occurrence: int
    facts: dict[str, Any]
    scheduled: int
    event: tuple[str, dict[str, Any]] | None = None


@dataclass(slots=True)
class CustomerState:
    """Everything sopkit knows about one customer; the engine keeps none of it."""

    customer_id: str
    profile: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    metrics: list[Any] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    # tags and sticky_truth are shared, interned frozensets (Population.interned): a million
    # customers hold a handful of distinct sets
    tags: frozenset[str] = frozenset()
    sticky_truth: frozenset[str] = frozenset()  # sticky tags whose condition held last time
    stage: str | None = None
    computed_stage: str | None = None
    rule_truth: bytearray = field(default_factory=bytearray)  # 1: seen true, not re-armed
    fired: list[int] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    last_fired: array[int] = field(default_factory=lambda: array("q"))  # NO_TIME: never
    pending: list[Pending] = field(default_factory=list)
    wake_at: int | None = None
    # per day wake-up j: [2j] what the answer depends on, [2j + 1] the next crossing day; then
    # per window its next crossing instant; UNKNOWN: not cached, NONE: never (core.schedule).
    # None when nothing is cached
    wake_cache: array[int] | None = None
    # policy (policy.py): the channels (or "all") opted out of; the messages delivered, as
    # (delivery time, channel) in delivery order, kept for the longest cap window
    opt_out: frozenset[str] = frozenset()
    deliveries: list[tuple[int, str]] = field(default_factory=list)
    # RFM (_stats/rfm.py): the scores and segment last computed, to see which a refit changes
    rfm: tuple[int, int, int, str] | None = None
    tag_changes: int = 0  # how many net tag changes were observed (mirroring to WeCom)
    # [clv] (clvfacts.py): the purchase summary and the facts last computed
    purchases: list[Any] | None = None
    clv: tuple[float, float, float, float | None] | None = None
    # the event ids applied within inputs.EVENT_ID_WINDOW (id -> event time); None until one
    event_ids: dict[str, int] | None = None


@dataclass(frozen=True)
class CustomerView:
    """A read-only snapshot of a customer's facts, for `Runtime.state`."""

    customer_id: str
    owner: str | None
    stage: str | None
    tags: frozenset[str]
    metrics: dict[str, Any]
    scores: dict[str, float]
    profile: dict[str, Any]
    pending: int


def json_value(value: Any, exact: bool = False) -> Any:
    """A fact as JSON: decimals as numbers (as exact strings with `exact`), dates as ISO text,
    sets as sorted lists."""
    kind = type(value)
    if kind is str or kind is int or kind is float or value is None:  # most facts: as they are
        return value
    if isinstance(value, Decimal):
        return str(value) if exact else float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return value
