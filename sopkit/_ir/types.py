"""The compiled playbook (IR) as types: what `compile_playbook` returns and the runtime reads.

TypedDicts, so the IR stays the plain JSON-ready data it always was (`sopkit compile` prints
it, a store keeps it to compare versions) while a misspelt key is a type error. Actions keep
their kind's own fields (`ActionIR`); `load_ir` checks IR read back from JSON.
"""


from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, cast

from sopkit._errors import SopkitError

IR_VERSION = 1

Cond = list[Any]  # ["and", [c, ...]], ["cmp", op, a, b], ... (compile.py's docstring)
ActionIR = dict[str, Any]  # an action's own fields by its `type` (send, task, tag, ...)


class SlotIR(TypedDict):
    """A fact a condition can read: its name, type and where its value comes from."""

    name: str
    type: str
    source: str  # builtin | profile | metric | score | rfm | clv | tag | event | contains
    event: NotRequired[str]  # source event: the event type and field
    field: NotRequired[str]
    label: NotRequired[str]  # how a person reads it (event.amount)
    list: NotRequired[str]  # source contains: the list attribute and the item
    value: NotRequired[Any]


class PredicateIR(TypedDict):
    id: int
    owner: str
    text: str
    cond: Cond
    reads: list[int]


class MetricIR(TypedDict):
    name: str
    slot: int
    kind: str
    event: str | None
    field: str | None
    attribute: str | None
    window: int | None
    calendar: NotRequired[str]  # days_to_anniversary: lunar | lunar_of_birth (else gregorian)


class FactorIR(TypedDict):
    predicate: int | None
    points: float
    label: str


class ScoreIR(TypedDict):
    name: str
    slot: int
    factors: list[FactorIR]


class TagIR(TypedDict):
    name: str
    slot: int
    predicate: int | None
    sticky: bool
    group: str | None


class StageIR(TypedDict):
    name: str
    predicate: int | None


class RuleIR(TypedDict):
    name: str
    index: int
    on: str | None
    predicate: int | None
    priority: int
    cooldown: int | None
    max_times: int | None
    experiment: str | None
    sample: float | None
    delay: int | None
    cancel_predicate: int | None
    reads: list[int]
    actions: list[ActionIR]
    delay_workdays: NotRequired[int]  # `N workdays`: delay is 0, the due time is computed


class CampaignIR(TypedDict):
    name: str
    index: int
    at: str | None
    every: str | None
    until: str | None
    audience: int
    experiment: str | None
    sample: float | None
    actions: list[ActionIR]


class LimitIR(TypedDict):
    """The constants a time-relative or windowed fact is compared with (wake-ups)."""

    slot: int
    any: bool
    thresholds: list[float]
    boundaries: list[int]


class RfmIR(TypedDict):
    recency: str
    frequency: str
    monetary: str
    every: int


class ClvIR(TypedDict):
    event: str
    amount: str | None
    every: int
    horizon: int


class GoalIR(TypedDict):
    event: str
    within: int


class ExperimentIR(TypedDict):
    holdout: float
    variants: list[str]
    goal: GoalIR | None


class PlaybookIR(TypedDict):
    """A compiled playbook."""

    ir_version: int
    playbook: str
    version: str
    timezone: str
    day_starts_minutes: int
    slots: list[SlotIR]
    metrics: list[MetricIR]
    predicates: list[PredicateIR]
    scores: list[ScoreIR]
    tags: list[TagIR]
    stages: list[StageIR]
    rules: list[RuleIR]
    rule_order: list[int]
    wakeups: dict[str, LimitIR]
    windows: dict[str, LimitIR]
    channels: dict[str, dict[str, Any]]
    handover: NotRequired[dict[str, Any]]
    rfm: NotRequired[RfmIR]
    clv: NotRequired[ClvIR]
    policy: dict[str, Any]
    experiments: dict[str, ExperimentIR]
    campaigns: NotRequired[list[CampaignIR]]


class IRError(SopkitError):
    """Data that is not a compiled playbook this sopkit can run (another IR version)."""


def load_ir(data: Mapping[str, Any]) -> PlaybookIR:
    """IR read back (JSON, or a host's own copy) as a PlaybookIR; IRError unless it is one
    of this IR version."""
    if not isinstance(data, Mapping):
        raise IRError(f"a compiled playbook is a mapping, not {type(data).__name__}")
    version = data.get("ir_version")
    if version != IR_VERSION:
        raise IRError(f"compiled playbook of IR version {version!r}; this sopkit runs "
                      f"version {IR_VERSION}: compile the playbook again")
    missing = sorted(set(PlaybookIR.__required_keys__) - set(data))
    if missing:
        raise IRError(f"compiled playbook without {', '.join(missing)}")
    return cast(PlaybookIR, data)
