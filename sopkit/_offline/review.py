"""review (复盘): did a campaign work? Goal conversion per variant against the holdout.

For each customer an experiment put in an arm (a variant that was sent, or the holdout that
was recorded but never sent), the first action of the experiment's rules is the exposure; the
customer converts when a goal event arrives within the goal window after it. Per arm: exposed
customers, conversions, the rate with a Wilson interval; per variant: the uplift over the
holdout with a Newcombe interval (the difference of two Wilson intervals, which behaves at
small counts where the Wald interval does not). A comparison whose arms are too small to say
anything is labelled so in words, not left to a reader to infer from a wide interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sopkit._errors import UsageError, did_you_mean
from sopkit._io import BadRecord, read_records
from sopkit._lang.clock import Calendar
from sopkit._offline.simulate import simulate
from sopkit._playbook.models import parse_duration

Z95 = 1.959963984540054
MIN_ARM = 30  # customers in an arm below which no rate is worth reporting as evidence
MIN_EVENTS = 5  # conversions and non-conversions each arm needs for the interval to mean much


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(s1: int, n1: int, s0: int, n0: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p0 (method 10 in Newcombe 1998)."""
    p1 = s1 / n1 if n1 else 0.0
    p0 = s0 / n0 if n0 else 0.0
    l1, u1 = wilson(s1, n1, z)
    l0, u0 = wilson(s0, n0, z)
    diff = p1 - p0
    lower = diff - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    upper = diff + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return lower, upper


@dataclass
class Arm:
    """One variant or the holdout."""

    name: str
    customers: int = 0
    converted: int = 0

    @property
    def rate(self) -> float:
        return self.converted / self.customers if self.customers else 0.0

    def interval(self) -> tuple[float, float]:
        return wilson(self.converted, self.customers)

    def too_small(self) -> str:
        if self.customers < MIN_ARM:
            return f"only {self.customers} customers (at least {MIN_ARM} needed)"
        if min(self.converted, self.customers - self.converted) < MIN_EVENTS:
            return (f"only {min(self.converted, self.customers - self.converted)} "
                    f"{'conversions' if self.converted < MIN_EVENTS else 'non-conversions'} "
                    f"(at least {MIN_EVENTS} needed)")
        return ""


@dataclass
class Comparison:
    """A variant against the holdout."""

    variant: str
    uplift: float
    low: float
    high: float
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "uplift": round(self.uplift, 6),
                "ci95": [round(self.low, 6), round(self.high, 6)], "verdict": self.verdict}


@dataclass
class Review:
    """The outcome of an experiment."""

    experiment: str
    goal: str
    window_days: float
    arms: list[Arm] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "goal": self.goal, "window_days": self.window_days,
            "arms": [{"arm": a.name, "customers": a.customers, "converted": a.converted,
                      "rate": round(a.rate, 6),
                      "ci95": [round(x, 6) for x in a.interval()],
                      "too_small": a.too_small() or None} for a in self.arms],
            "comparisons": [c.to_json() for c in self.comparisons],
        }


def compare(arm: Arm, holdout: Arm) -> Comparison:
    """The uplift of one arm over the holdout, with a plain-words verdict."""
    low, high = newcombe(arm.converted, arm.customers, holdout.converted, holdout.customers)
    uplift = arm.rate - holdout.rate
    small = [f"{a.name}: {reason}" for a in (arm, holdout) if (reason := a.too_small())]
    if small:
        verdict = "sample too small to tell: " + "; ".join(small)
    elif low > 0:
        verdict = f"better than holdout by {uplift * 100:.1f} points (95% CI excludes 0)"
    elif high < 0:
        verdict = f"worse than holdout by {-uplift * 100:.1f} points (95% CI excludes 0)"
    else:
        verdict = "no clear difference (95% CI includes 0)"
    return Comparison(arm.name, uplift, low, high, verdict)


def review(exposures: Mapping[str, tuple[str, int]], goals: Mapping[str, Iterable[int]],
           window: int, *, experiment: str, goal: str, holdout: str = "holdout") -> Review:
    """Conversion per arm: `exposures` maps customer -> (arm, first exposure ts); `goals`
    maps customer -> the timestamps of their goal events; a goal counts within `window`
    seconds after the exposure (at or after it)."""
    arms: dict[str, Arm] = {}
    for customer in sorted(exposures):
        name, at = exposures[customer]
        arm = arms.setdefault(name, Arm(name))
        arm.customers += 1
        if any(at <= ts <= at + window for ts in goals.get(customer, ())):
            arm.converted += 1
    result = Review(experiment, goal, window / 86400)
    control = arms.get(holdout, Arm(holdout))
    result.arms = [*(arms[n] for n in sorted(arms) if n != holdout), control]
    result.comparisons = [compare(arms[n], control) for n in sorted(arms) if n != holdout]
    return result


def gather(playbook: Any, events: Any, *, experiment: str | None = None,
           rule: str | None = None, profiles: Any = None, end: str | None = None,
           engine: str = "native", goal: str | None = None,
           within: int | None = None, workers: int = 1, executor: str = "processes",
           scheduler: str | None = None) -> Review:
    """Replay a history and review one experiment (or one pilot rule's sample).

    Exposure: a customer's first message or task of the experiment's rules that was sent
    (planned or deferred) or held out; suppressed ones (opt-outs, caps) were neither treated
    nor controls, and are left out. The arm is the record's variant, "treated" when the
    experiment has no variants, and "holdout" for the held-out group. `workers` splits the
    replay among processes, or Dask workers with `executor="dask"` (`simulate`), with the
    same result.
    """
    import io

    model = playbook.model
    if (experiment is None) == (rule is None):
        raise UsageError("review needs one of --experiment NAME or --rule NAME (a pilot)")
    if experiment is not None:
        spec = model.experiments.get(experiment)
        if spec is None:
            raise UsageError(f"unknown experiment '{experiment}'; "
                             + (did_you_mean(experiment, model.experiments) or
                                "the playbook declares none"))
        rules = {r.name for r in [*model.rules, *model.campaigns]  # campaigns act alike
                 if r.experiment == experiment}
        goal = goal or (spec.goal.event if spec.goal else None)
        if within is None and spec.goal is not None:
            within = parse_duration(spec.goal.within)
        label = experiment
    else:
        found = [r for r in [*model.rules, *model.campaigns] if r.name == rule]
        if not found or found[0].sample is None:
            raise UsageError(f"rule '{rule}' is not a pilot (no `sample`)")
        rules = {found[0].name}
        label = f"pilot {rule}"
    if goal is None:
        raise UsageError("no goal: give --goal EVENT or declare goal = { event = ... } in the "
                         "experiment")
    if goal not in model.events:
        raise UsageError(f"--goal '{goal}' is not an event type of the playbook")
    window = within if within is not None else 14 * 86400
    out = io.StringIO()
    simulate(playbook, events, profiles=profiles, end=end, out=out, engine=engine,
             masked=False, workers=workers, executor=executor, scheduler=scheduler)
    exposures: dict[str, tuple[str, int]] = {}
    meta = model.playbook
    hours, minutes = (int(x) for x in meta.day_starts.split(":"))
    cal = Calendar(meta.timezone, hours * 60 + minutes)
    for line in out.getvalue().splitlines():
        record = json.loads(line)
        if record["rule"] not in rules or record["action"] not in ("send", "webhook", "task"):
            continue
        status = record["status"]
        if status not in ("planned", "deferred", "holdout") or \
                record["customer_id"] in exposures:
            continue
        arm = "holdout" if status == "holdout" else record.get("variant") or (
            "treated" if experiment else "sample")
        exposures[record["customer_id"]] = (arm, cal.parse(record["time"]))
    goals: dict[str, list[int]] = {}
    for item in read_records(events):
        if isinstance(item, BadRecord) or item.data.get("type") != goal:
            continue
        try:
            ts = cal.parse(str(item.data.get("ts")))
        except ValueError:
            continue
        goals.setdefault(str(item.data.get("customer_id")), []).append(ts)
    return review(exposures, goals, window, experiment=label, goal=goal)
