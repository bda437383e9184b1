"""Pydantic models of a playbook: shape and types only, no I/O, no cross-references.

Cross-references (a rule naming a tag, a metric naming an event type) are checked in
`_validate.py`, which has the whole playbook in view and the source positions for errors.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

AttrType = Literal["string", "int", "decimal", "date", "bool", "list"]
FieldType = Literal["string", "int", "decimal", "date", "bool"]
MetricKind = Literal[
    "count",
    "sum",
    "avg",
    "last",
    "days_since",
    "days_since_first",
    "days_until",
    "days_to_anniversary",
    "max_count_per_key",
]
TagGroup = Literal["basic", "behaviour", "interaction", "value", "emotion"]


def parse_duration(text: str) -> int:
    """Seconds in a duration such as `90d`, `12h`, `30m`, `2w`, `45s`; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(
            f"bad duration '{text}': write a whole number and a unit, "
            "like 90d, 12h, 30m, 2w (units: s m h d w)"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


_WORKDAYS = re.compile(r"^(\d+)\s*workdays?$")


def parse_workdays(text: str) -> int | None:
    """The N of a delay such as `3 workdays` (China's working days, docs/calendar.md), or
    None when `text` is not one."""
    match = _WORKDAYS.match(text.strip())
    return int(match.group(1)) if match else None


def parse_delay(text: str) -> int:
    """Seconds in a delay written as a duration; ValueError for anything else but `N
    workdays` (whose length depends on when the rule fires: 0 here)."""
    workdays = parse_workdays(text)
    if workdays is not None:
        if workdays <= 0:
            raise ValueError(f"bad delay '{text}': write a whole number of workdays from 1, "
                             "like 3 workdays")
        return 0
    try:
        return parse_duration(text)
    except ValueError:
        raise ValueError(f"bad delay '{text}': write a duration like 90d, 12h, 30m, 2w, or "
                         "working days like 3 workdays") from None


DURATION_SCHEMA: JsonDict = {"pattern": r"^\d+\s*[smhdw]$", "examples": ["90d", "12h", "30m", "2w"]}
DELAY_SCHEMA: JsonDict = {"pattern": r"^\d+\s*([smhdw]|workdays?)$",
                          "examples": ["2d", "12h", "3 workdays"]}
TIME_SCHEMA: JsonDict = {"pattern": r"^([01]\d|2[0-3]):[0-5]\d$", "examples": ["21:00", "09:00"]}


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


def _check_delay(value: str | None) -> str | None:
    if value is not None:
        parse_delay(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Meta(_Model):
    """The `[playbook]` table: identity, calendar and includes."""

    name: str = Field(description="Playbook name; part of every action's idempotency key.")
    version: str = Field("1", description="Bump when the logic changes.")
    description: str = ""
    timezone: str = Field(
        "UTC", description="IANA zone for calendar arithmetic, e.g. Asia/Shanghai."
    )
    day_starts: str = Field(
        "00:00",
        json_schema_extra={"pattern": r"^([01]\d|2[0-3]):[0-5]\d$"},
        description="Local time (HH:MM) at which day-based metrics (days_since …) roll over.",
    )
    include: list[str] = Field(
        default_factory=list, description="Fragment files merged into this playbook."
    )


class Metric(_Model):
    """A fact computed from events or a profile date."""

    kind: MetricKind
    event: str | None = Field(
        None, description="Event type; `*` (any event) for count, days_since, days_since_first."
    )
    field: str | None = Field(None, description="Event field for sum/avg/last/max_count_per_key.")
    attribute: str | None = Field(
        None, description="Profile date attribute for days_until/days_to_anniversary."
    )
    window: str | None = Field(None, description="Only events in this trailing window, e.g. 90d.",
                               json_schema_extra=DURATION_SCHEMA)
    calendar: Literal["gregorian", "lunar", "lunar_of_birth"] = Field(
        "gregorian", description="days_to_anniversary: `lunar` reads the profile date's "
        "month and day as a lunar (农历) month and day; `lunar_of_birth` converts the "
        "Gregorian date to its lunar date and counts to that lunar anniversary.")
    description: str = ""

    _window = field_validator("window")(classmethod(lambda cls, v: _check_duration(v)))


class Factor(_Model):
    """One line of a scorecard: points added while the condition holds."""

    when: str
    points: float
    label: str = ""


class Score(_Model):
    """A weighted scorecard: the sum of the points of the factors that hold."""

    factors: list[Factor] = Field(min_length=1)
    description: str = ""


class Stage(_Model):
    """A lifecycle stage; the first stage whose `when` holds is the customer's stage."""

    name: str
    when: str | None = Field(None, description="No condition: a catch-all (put it last).")
    description: str = ""


class Tag(_Model):
    """A tag: dynamic (held while `when` holds), sticky, or manual (set by actions only)."""

    when: str | None = None
    sticky: bool = Field(False, description="Once set by `when`, kept until an untag action.")
    group: TagGroup | None = None
    description: str = ""


class Channel(_Model):
    """A delivery channel. Secrets are never written here: name environment variables."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(description="console, jsonl, webhook, smtp, wecom, sms, or a plugin's type.")
    description: str = ""
    cost: float | None = Field(
        None, ge=0, description="What one message costs (any currency, e.g. 0.045 元 an SMS): "
        "`sopkit forecast` adds it up.")


class Template(_Model):
    """A message with `{{ name }}` placeholders over the customer's facts and the params."""

    text: str
    title: str | None = None


class TagAction(_Model):
    type: Literal["tag"]
    tag: str


class UntagAction(_Model):
    type: Literal["untag"]
    tag: str


class SetStageAction(_Model):
    type: Literal["set_stage"]
    stage: str


ParamValue = str | int | float | bool


class VariantContent(_Model):
    """What one experiment variant sends instead: another template and/or other params."""

    template: str | None = None
    params: dict[str, ParamValue] | None = Field(
        None, description="Replace the action's params (keys left out keep their value).")


class SendAction(_Model):
    type: Literal["send"]
    channel: str
    template: str
    params: dict[str, ParamValue] = Field(default_factory=dict)
    variants: dict[str, VariantContent] = Field(
        default_factory=dict, description="Per variant of the rule's experiment: the "
        "template and/or params that variant sends.")
    expires: str | None = Field(
        None, description="Never deliver it later than this long after it was due (an outbox "
        "row not delivered by then becomes `expired`), e.g. \"1d\" for a birthday coupon.",
        json_schema_extra=DURATION_SCHEMA)

    _expires = field_validator("expires")(classmethod(lambda cls, v: _check_duration(v)))


class TaskAction(_Model):
    type: Literal["task"]
    note: str = Field(description="Template text for the follow-up.")
    due: str = Field("1d", description="Due this long after the action.",
                     json_schema_extra=DURATION_SCHEMA)
    assignee: str | None = Field(None, description="Default: the customer's owner.")
    expires: str | None = Field(
        None, description="Never deliver it later than this long after it was due (an outbox "
        "row not delivered by then becomes `expired`), e.g. \"1d\" for a birthday coupon.",
        json_schema_extra=DURATION_SCHEMA)

    _due = field_validator("due", "expires")(classmethod(lambda cls, v: _check_duration(v)))


class ReassignAction(_Model):
    type: Literal["reassign"]
    to: str = Field(description="Staff id who takes the customer over.")


class WebhookAction(_Model):
    type: Literal["webhook"]
    channel: str
    payload: dict[str, Any] = Field(default_factory=dict)
    expires: str | None = Field(
        None, description="Never deliver it later than this long after it was due (an outbox "
        "row not delivered by then becomes `expired`), e.g. \"1d\" for a birthday coupon.",
        json_schema_extra=DURATION_SCHEMA)

    _expires = field_validator("expires")(classmethod(lambda cls, v: _check_duration(v)))


Action = Annotated[
    TagAction
    | UntagAction
    | SetStageAction
    | SendAction
    | TaskAction
    | ReassignAction
    | WebhookAction,
    Field(discriminator="type"),
]
ACTION_TYPES = ("tag", "untag", "set_stage", "send", "task", "reassign", "webhook")


class Rule(_Model):
    """Fires on entry of `when`, or on each event of type `on` (filtered by `when`)."""

    name: str
    description: str = ""
    on: str | None = Field(None, description="Event type that triggers the rule.")
    when: str | None = None
    priority: int = Field(0, description="Higher fires first; ties keep file order.")
    cooldown: str | None = Field(None, description="No refiring within this long.",
                                 json_schema_extra=DURATION_SCHEMA)
    max_times: int | None = Field(None, ge=1)
    experiment: str | None = Field(
        None, description="An [experiments] name: its holdout share gets no send, webhook or "
        "task from this rule (tags and stages still change).")
    sample: float | None = Field(
        None, description="Pilot: only this share of customers (0 < sample <= 1, a stable "
        "hash) get the rule's messages and tasks; the rest are recorded as holdout.")
    delay: str | None = Field(None, description="Run the actions this long after firing, or "
                              "at the same local time N working days later (`3 workdays`).",
                              json_schema_extra=DELAY_SCHEMA)
    cancel_if: str | None = None
    actions: list[Action] = Field(min_length=1)
    renamed_from: str | None = Field(
        None, description="Deploying this version (`sopkit migrate`): the rule's name in the "
        "version before; its counters, cooldowns and pending actions carry over.")
    backfill: Literal["none", "qualifying"] = Field(
        "none", description="Deploying this rule as new (`sopkit migrate`): `none` arms "
        "customers whose condition already holds without firing; `qualifying` fires it once "
        "for them at deploy time, through every policy.")

    _durations = field_validator("cooldown")(
        classmethod(lambda cls, v: _check_duration(v))
    )
    _delay = field_validator("delay")(
        classmethod(lambda cls, v: _check_delay(v)))


class Handover(_Model):
    """Who takes over a departing staff member's customers (离职继承) on `staff_departed`."""

    policy: Literal["named", "round_robin", "least_loaded"] = Field(
        "round_robin", description="named: the `successors` table; round_robin: the team in "
        "turn; least_loaded: the team member who owns fewest customers.")
    team: list[str] = Field(default_factory=list, description="Staff ids who can take over.")
    successors: dict[str, str] = Field(
        default_factory=dict, description="Departing staff id -> successor (policy named; "
        "a missing entry falls back to the team in turn).")
    channel: str | None = Field(
        None, description="A wecom channel: also call WeCom's resigned-staff transfer.")


class QuietHours(_Model):
    """Local hours (playbook timezone) in which no message is delivered."""

    start: str = Field(description="HH:MM at which quiet hours begin, e.g. 21:00.",
                       json_schema_extra=TIME_SCHEMA)
    end: str = Field(description="HH:MM at which they end; messages due inside wait for it. "
                     "Before `start` means the window crosses midnight.",
                     json_schema_extra=TIME_SCHEMA)


class Cap(_Model):
    """At most `max` messages per customer in any rolling `per` window."""

    max: int = Field(ge=1, description="Messages allowed in the window.")
    per: str = Field(description="The rolling window, e.g. 7d.", json_schema_extra=DURATION_SCHEMA)
    channel: str | None = Field(None, description="Only this channel; absent: all channels.")

    _per = field_validator("per")(classmethod(lambda cls, v: _check_duration(v)))


class Policy(_Model):
    """The `[policy]` table: consent, caps, quiet hours and staff capacity for every rule."""

    quiet_hours: QuietHours | None = Field(
        default=None, description="Messages due inside are deferred to its end.")
    consent_attribute: str | None = Field(
        default=None, description="A profile attribute of type list: the channels (or \"all\") the "
        "customer opted out of.")
    task_capacity: int | None = Field(
        default=None, ge=1, description="Tasks per staff member per day; the overflow moves to the "
        "next day.")
    caps: list[Cap] = Field(default_factory=list, description="Message frequency caps.")
    quiet_days: list[str] = Field(
        default_factory=list, description="China's statutory holidays (春节, 国庆节 ...) whose "
        "days off deliver no message: deferred to the same local time on the first day after.")


class Goal(_Model):
    """A conversion: an event of this type within `within` after the first exposure."""

    event: str = Field(description="An event type, e.g. purchase.")
    within: str = Field("14d", description="The window after the exposure.",
                        json_schema_extra=DURATION_SCHEMA)

    _within = field_validator("within")(classmethod(lambda cls, v: _check_duration(v)))


class Experiment(_Model):
    """A holdout experiment: a stable share of customers gets no messages or tasks from its
    rules, so their outcome can be compared with everyone else's."""

    holdout: float = Field(description="Share of customers held out, 0 <= holdout < 1.")
    variants: list[str] = Field(
        default_factory=list, description="Names of the treatments; the customers not held "
        "out are split evenly between them (a stable hash).")
    goal: Goal | None = Field(None, description="What counts as a conversion, for review.")
    description: str = ""


class Rfm(_Model):
    """RFM scores against the customer population (facts rfm_r, rfm_f, rfm_m, rfm_segment)."""

    recency: str = Field(description="A days_since metric: days since the last purchase.")
    frequency: str = Field(description="A count metric, e.g. purchases in 365 days.")
    monetary: str = Field(description="A sum or avg metric, e.g. spend in 365 days.")
    every: str = Field("7d", description="How often the population's breakpoints are "
                       "recomputed.", json_schema_extra=DURATION_SCHEMA)
    tags: bool = Field(True, description="Also hold the segment name as a tag (group value).")

    _every = field_validator("every")(classmethod(lambda cls, v: _check_duration(v)))


class Clv(_Model):
    """BG/NBD (and Gamma-Gamma) facts: p_alive, expected_purchases, p_no_purchase,
    expected_spend; needs the `clv` extra (numpy, scipy)."""

    event: str = Field(description="The purchase event type.")
    amount: str | None = Field(None, description="A decimal or int field of the event: "
                               "also fit the spend model (expected_spend).")
    every: str = Field("30d", description="How often the models are refitted on the "
                       "history so far.", json_schema_extra=DURATION_SCHEMA)
    horizon: str = Field("90d", description="The window of expected_purchases and "
                         "p_no_purchase.", json_schema_extra=DURATION_SCHEMA)

    _durations = field_validator("every", "horizon")(
        classmethod(lambda cls, v: _check_duration(v)))


def _local_time_text(value: Any) -> Any:
    """A TOML local date-time (or date) as the ISO text the string form would have."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


class Campaign(_Model):
    """A scheduled send to an audience (群发): once `at` a local time, or `every` schedule."""

    name: str = Field(description="Unique among campaigns and rules; part of every key.")
    description: str = ""
    at: str | None = Field(None, description="One firing at this local date-time (playbook "
                           "timezone), e.g. 2024-12-12T10:00.",
                           json_schema_extra={"examples": ["2024-12-12T10:00"]})
    every: str | None = Field(None, description="Recurring: a 5-field cron expression or "
                              "a simple form such as `weekly mon 09:00`.",
                              json_schema_extra={"examples": ["weekly mon 09:00",
                                                              "0 9 * * 1"]})
    until: str | None = Field(None, description="With `every`: no firing after this local "
                              "date (inclusive) or date-time.")
    audience: str = Field(description="Condition over the customer's facts at the firing "
                          "instant.")
    experiment: str | None = Field(None, description="An [experiments] name: its holdout "
                                   "gets none of the messages and tasks; its variants split "
                                   "the rest (send actions may say what each variant sends).")
    sample: float | None = Field(
        None, description="Pilot: only this share of the audience (0 < sample <= 1, a stable "
        "hash) gets the messages and tasks; the rest are recorded as holdout.")
    actions: list[Action] = Field(min_length=1)

    _times = field_validator("at", "until", mode="before")(
        classmethod(lambda cls, v: _local_time_text(v)))


class SegmentEvent(_Model):
    """How one Segment `track` event (by its name) becomes a sopkit event."""

    type: str = Field(description="The sopkit event type: one under [events], or opt_out / "
                      "opt_in.")
    properties: dict[str, str] = Field(
        default_factory=dict, description="Renames: Segment property name -> event field "
        "(properties not named keep their names).")


class SegmentIngest(_Model):
    """`sopkit serve`: how Segment `track` / `identify` calls become sopkit records."""

    events: dict[str, SegmentEvent] = Field(
        default_factory=dict, description="Segment event name -> sopkit event. An event "
        "named like a declared event type needs no entry; any other is quarantined.")
    traits: dict[str, str] = Field(
        default_factory=dict, description="Renames: identify trait -> profile attribute.")


class Ingest(_Model):
    """How `sopkit serve` maps events of other shapes onto the playbook's events."""

    segment: SegmentIngest | None = Field(default=None,
                                          description="Segment's HTTP Tracking API.")


class Playbook(_Model):
    """A retention playbook."""

    playbook: Meta
    profile: dict[str, AttrType] = Field(default_factory=dict)
    events: dict[str, dict[str, FieldType]] = Field(default_factory=dict)
    metrics: dict[str, Metric] = Field(default_factory=dict)
    scores: dict[str, Score] = Field(default_factory=dict)
    stages: list[Stage] = Field(default_factory=list)
    tags: dict[str, Tag] = Field(default_factory=dict)
    channels: dict[str, Channel] = Field(default_factory=dict)
    templates: dict[str, Template] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    policy: Policy = Field(default_factory=Policy)
    experiments: dict[str, Experiment] = Field(default_factory=dict)
    handover: Handover | None = None
    rfm: Rfm | None = None
    clv: Clv | None = None
    campaigns: list[Campaign] = Field(default_factory=list)
    ingest: Ingest = Field(default_factory=lambda: Ingest(),
                           description="For `sopkit serve`.")
