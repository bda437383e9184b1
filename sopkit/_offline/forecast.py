"""`sopkit forecast`: what the playbook will do over the next days, with intervals.

The history (`--events`, up to `--at`) or a live store gives every customer's state and
purchase summary at the forecast instant. BG/NBD and Gamma-Gamma are fitted on those
summaries (the [clv] code: playbook days, time in weeks). Each of K samples draws one
future: per customer, alive or not from P(alive); if alive, a purchase rate and a dropout
probability from their posteriors given the customer's history (λ ~ Gamma(r + x, α + T),
p ~ Beta(a, b + x)); purchases as a Poisson process that may stop after each purchase; each
purchase's amount from the spend model's posterior (ν ~ Gamma(q + p·x, γ + x·m), amount ~
Gamma(p, ν)); the time of day from the history's purchases. The playbook then runs forward
over that future on the virtual clock, from the same state, exactly as `simulate` would.

Counted per sample, reported as the mean and the 10th-90th percentile over the samples (an
80% interval): actions delivered per day and channel (messages by channel, staff tasks as
`task`, webhooks as `webhook`; on the day they go out), tasks made per owner per day against
`task_capacity` (the demand; the capacity moves the overflow to later days, counted too),
messages suppressed by a cap, messages deferred by quiet hours or quiet days, and cost where
a channel declares `cost` per message.

What the model does not capture, said in every forecast's notes: customers who have not
bought yet and new customers are not forecast to buy; events other than purchases (opt-outs,
complaints, visits ...) are not forecast at all; profiles stay as they are.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sopkit._errors import EventError, UsageError
from sopkit._offline.drive import LATENESS, Driver, Progress
from sopkit._playbook.load import LoadedPlaybook
from sopkit._runtime import clvfacts as _clvfacts
from sopkit._runtime.records import Action
from sopkit._runtime.runtime import Runtime

DELIVERED = frozenset({"planned", "deferred"})
LOW, HIGH = 10, 90  # the percentiles of the 80% interval
NOTES = (
    "Only purchases are forecast, from each customer's own history (BG/NBD and "
    "Gamma-Gamma); other events (opt-outs, complaints, visits ...) are not forecast and "
    "profiles stay as they are.",
    "Customers who have not bought yet, and customers who are not known yet, are not "
    "forecast to buy.",
)
Summary = list[Any]  # a customer's purchase summary: clvfacts.observe's list


@dataclass
class Interval:
    """The mean over the samples and an 80% interval (10th and 90th percentiles)."""

    mean: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"mean": round(self.mean, 3), "low": round(self.low, 3),
                "high": round(self.high, 3)}

    def text(self) -> str:
        """`12.3 (10–15)` for a table cell: one decimal at most."""
        return f"{_num(self.mean)} ({_num(self.low)}–{_num(self.high)})"


def _num(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


@dataclass
class Sample:
    """What one future did: the counts of one forecast run."""

    by_day: Counter[tuple[str, str]] = field(default_factory=Counter)  # (day, channel)
    tasks: Counter[tuple[str, str]] = field(default_factory=Counter)  # (owner, day made)
    pushed: Counter[str] = field(default_factory=Counter)  # owner: moved on by capacity
    capped: int = 0
    deferred: int = 0
    purchases: int = 0

    def count(self, action: Action, cal: Any) -> None:
        """Count one action of the forecast window."""
        reason = str(action.details.get("reason", ""))
        if action.status == "suppressed" and reason.startswith("cap"):
            self.capped += 1
        if action.status == "deferred" and ("quiet hours" in reason or "quiet days" in reason):
            self.deferred += 1
        if action.status not in DELIVERED:
            return
        if action.action == "send":
            channel = str(action.details.get("channel", "send"))
        elif action.action in ("task", "webhook"):
            channel = action.action
        else:
            return  # tags, stages and the like: nothing goes out
        self.by_day[cal.local(action.deliver_ts).date().isoformat(), channel] += 1
        if channel == "task":
            owner = str(action.details.get("assignee") or "(no owner)")
            self.tasks[owner, cal.local(action.ts).date().isoformat()] += 1
            if "task capacity" in reason:
                self.pushed[owner] += 1


@dataclass
class OwnerLoad:
    """One staff member's forecast tasks: made per day on average, on the busiest day, the
    days more were made than the capacity, and how many the capacity moved to a later day."""

    owner: str
    per_day: Interval
    peak: Interval
    days_over: Interval
    pushed: Interval

    def to_json(self) -> dict[str, Any]:
        return {"owner": self.owner, "per_day": self.per_day.to_json(),
                "peak": self.peak.to_json(), "days_over_capacity": self.days_over.to_json(),
                "moved_by_capacity": self.pushed.to_json()}


@dataclass
class Forecast:
    """The forecast: per day and channel, totals, staff load, caps, deferrals and cost."""

    playbook: str
    start: str
    end: str
    days: list[str]
    samples: int
    seed: int
    customers: int
    buyers: int
    model: dict[str, Any]
    channels: list[str]
    by_day: dict[str, dict[str, Interval]]
    totals: dict[str, Interval]
    purchases: Interval
    capped: Interval
    deferred: Interval
    capacity: int | None
    owners: list[OwnerLoad]
    cost: dict[str, Interval]
    notes: list[str]
    actual: dict[str, Any] | None = None  # --backtest: what the real history did

    def to_json(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook, "start": self.start, "end": self.end,
            "days": len(self.days), "samples": self.samples, "seed": self.seed,
            "customers": self.customers, "buyers": self.buyers, "model": self.model,
            "totals": {c: i.to_json() for c, i in self.totals.items()},
            "purchases": self.purchases.to_json(), "capped": self.capped.to_json(),
            "deferred": self.deferred.to_json(), "task_capacity": self.capacity,
            "owners": [o.to_json() for o in self.owners],
            "cost": {c: i.to_json() for c, i in self.cost.items()},
            "notes": self.notes, "actual": self.actual,
        }

    def day_lines(self) -> list[dict[str, Any]]:
        """One record per day and channel (`--output jsonl`)."""
        return [{"day": day, "channel": channel, **self.by_day[day][channel].to_json()}
                for day in self.days for channel in self.channels]


def interval(values: Iterable[float]) -> Interval:
    """Mean and 10th/90th percentiles (linear interpolation) of the samples' values."""
    import numpy as np

    arr = np.array(list(values), dtype=float)
    low, high = np.percentile(arr, [LOW, HIGH])
    return Interval(float(arr.mean()), float(low), float(high))


class _History:
    """Runs the history to the forecast instant and keeps each customer's purchases."""

    def __init__(self, runtime: Runtime, event: str, amount: str | None) -> None:
        self.runtime, self.event, self.amount = runtime, event, amount
        self.summaries: dict[str, Summary] = {}
        self.times: list[int] = []  # seconds after the day start of each purchase
        self._last: tuple[int, str, int, float] | None = None  # (line, customer, day, amount)

    def before(self, event: tuple[str, str, int, dict[str, Any]], line: int) -> None:
        self._commit()
        customer, etype, ts, fields = event
        if etype == self.event:
            raw = fields.get(self.amount) if self.amount else 0
            amount = float(raw) if raw is not None else 0.0
            self._last = (line, customer, ts, amount)

    def refused(self, line: int) -> None:
        if self._last is not None and self._last[0] == line:
            self._last = None

    def _commit(self) -> None:
        if self._last is None:
            return
        _line, customer, ts, amount = self._last
        cal = self.runtime.calendar
        day = cal.day_index(ts)
        self.summaries[customer] = _clvfacts.observe(self.summaries.get(customer), day, amount)
        self.times.append(ts - cal.day_start(day))
        self._last = None

    def finish(self) -> None:
        self._commit()


def _purchase_event(loaded: LoadedPlaybook, event: str | None,
                    amount: str | None) -> tuple[str, str | None]:
    """The purchase event type and its amount field: the options, else [clv]'s, else
    `purchase` and `amount` when the playbook declares them."""
    model = loaded.model
    clv = model.clv
    name = event or (clv.event if clv else "purchase")
    if name not in model.events:
        raise UsageError(f"--purchase-event {name}: not an event type of the playbook "
                         f"(its types: {', '.join(sorted(model.events)) or 'none'})")
    fields = model.events[name] or {}
    field_name = amount if amount is not None else (
        clv.amount if clv and clv.amount else ("amount" if "amount" in fields else None))
    if field_name is not None and field_name not in fields:
        raise UsageError(f"--amount-field {field_name}: event '{name}' has no such field")
    return name, field_name


def _future(rng: Any, models: Any, params: tuple[Any, Any],
            rows: list[tuple[float, float, float, float]],
            horizon_weeks: float) -> list[list[tuple[float, float]]]:
    """One sample: per customer, the (weeks after the forecast instant, amount) purchases."""
    import numpy as np

    bg, gg = params
    x, t_x, T, m = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    n = len(rows)
    alive = rng.random(n) < models.p_alive(bg, x, t_x, T)
    lam = rng.gamma(bg.r + x, 1.0 / (bg.alpha + T))
    drop = rng.beta(bg.a, bg.b + x)
    if gg is not None:
        spender = (x > 0) & (m > 0)
        nu = rng.gamma(np.where(spender, gg.q + gg.p * x, gg.q),
                       1.0 / np.where(spender, gg.gamma + x * m, gg.gamma))
    out: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    now = np.zeros(n)
    active = alive.copy()
    while np.any(active):
        idx = np.flatnonzero(active)
        now[idx] += rng.exponential(1.0, idx.size) / lam[idx]
        bought = idx[now[idx] <= horizon_weeks]
        if gg is not None:
            amounts = rng.gamma(gg.p, 1.0 / nu[bought])
        else:
            amounts = np.where(m[bought] > 0, m[bought], 0.0)
        for i, amount in zip(bought.tolist(), amounts.tolist(), strict=True):
            out[i].append((float(now[i]), float(amount)))
        stays = rng.random(bought.size) >= drop[bought]
        active[:] = False
        active[bought[stays]] = True
    return out


def forecast(loaded: LoadedPlaybook, *, events: Path | None = None,
             profiles: Path | None = None, store: Any = None, at: str | None = None,
             days: int = 30, samples: int = 20, seed: int = 0, engine: str = "native",
             purchase_event: str | None = None, amount_field: str | None = None,
             backtest: bool = False, progress: Progress | None = None) -> Forecast:
    """Forecast `days` days from `at` (default: the history's end, or the store's clock).
    `progress(label, done, total)` hears how far it is: the history's bytes ("history"),
    the futures run ("futures"), the backtest's bytes ("backtest")."""
    import numpy as np

    if days < 1 or samples < 2:
        raise UsageError("--days must be at least 1 and --samples at least 2")
    if (events is None) == (store is None):
        raise UsageError("forecast needs one of --events HISTORY or --store URL")
    if backtest and events is None:
        raise UsageError("--backtest compares with the history after --at: give --events")
    event, amount = _purchase_event(loaded, purchase_event, amount_field)
    models = _clvfacts.load_models()
    runtime = Runtime(loaded, engine=engine)
    cal = runtime.calendar
    history = _History(runtime, event, amount)
    if events is not None:
        at_ts = None if at is None else _parse_at(cal, at)

        def left_out(source: str, line: int, reason: str, record: Any, kind: str) -> None:
            history.refused(line)

        Driver(runtime, emit=lambda actions: None, quarantine=left_out, end_ts=at_ts,
               before_event=history.before, lateness=LATENESS,  # as simulate: the same events count
               progress=_relabel(progress)).run(events, profiles)
        history.finish()
    else:
        _from_store(runtime, store, history)
        if at is not None:
            runtime.advance_ts(_parse_at(cal, at))
    start = runtime.now_ts
    if start is None:
        raise UsageError("nothing to forecast from: the history has no event before --at")
    today = cal.day_index(start)
    ids = sorted(history.summaries)
    rows = [_clvfacts.rft(history.summaries[c], today) for c in ids]
    params = _clvfacts.fit(models, rows, amount is not None)
    if params is None:
        raise UsageError(f"cannot fit the purchase model on {len(rows)} customers' '{event}' "
                         "events: it needs customers who bought again (a longer history?)")
    end = start + days * 86400
    clock = runtime.dump_clock()
    blobs = [(c, runtime.dump_customer(c)) for c in sorted(runtime.customer_ids())]
    rng = np.random.default_rng(seed)  # the futures
    clock_rng = np.random.default_rng([seed, 1])  # their times of day: a stream of its own
    times = history.times or [0]
    runs: list[Sample] = []
    for done in range(samples):
        if progress is not None:
            progress("futures", done, samples)
        future = _future(rng, models, params, rows, days / 7)
        records = []
        for customer, bought in zip(ids, future, strict=True):
            for weeks, spent in bought:
                day = cal.day_index(start + int(weeks * 7 * 86400))
                ts = max(start + 1, cal.day_start(day) + times[int(clock_rng.integers(len(times)))])
                if ts <= end:
                    records.append((ts, customer, spent))
        records.sort()
        runs.append(_run_future(loaded, engine, clock, blobs, records, event, amount, end))
    if progress is not None:
        progress("futures", samples, samples)
    dates = [cal.local(start + 1).date() + dt.timedelta(days=i) for i in range(days + 1)]
    day_names = [d.isoformat() for d in dates if d <= cal.local(end - 1).date()]
    result = _aggregate(loaded, runs, day_names, start, end, cal)
    bg, gg = params
    result.model = {"bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b},
                    "gamma_gamma": None if gg is None else
                    {"p": gg.p, "q": gg.q, "gamma": gg.gamma}, "unit": "weeks",
                    "purchase_event": event, "amount_field": amount}
    result.samples, result.seed = samples, seed
    result.customers, result.buyers = len(blobs), len(ids)
    if backtest and events is not None:
        result.actual = _actual(loaded, engine, clock, blobs, events, start, end, result,
                                progress)
    return result


def _relabel(progress: Progress | None) -> Progress | None:
    """The driver's "profiles"/"events" reading as the forecast's "history"."""
    if progress is None:
        return None
    return lambda label, done, total: progress(f"history ({label})", done, total)


def _parse_at(cal: Any, at: str) -> int:
    try:
        return int(cal.parse(at))
    except ValueError:
        raise UsageError(f"--at {at!r} is not an ISO 8601 date or time, e.g. 2024-05-01") \
            from None


def _from_store(runtime: Runtime, store: Any, history: _History) -> None:
    """The runtime and purchase summaries from a live store (they need [clv] to be kept)."""
    if runtime.ir.get("clv") is None:
        raise UsageError("forecast --store needs a playbook with [clv] (only then does the "
                         "store keep each customer's purchases); or give --events HISTORY")
    clock = store.get_meta("runtime")
    runtime.restore(clock.encode() if clock else None, store.load_customers())
    for customer_id in runtime.customer_ids():
        summary = runtime.customers[customer_id].purchases
        if summary is not None:
            history.summaries[customer_id] = list(summary)
    history.times = [9 * 3600]  # a store keeps days, not times of day: at 9:00 after day start


def _restored(loaded: LoadedPlaybook, engine: str, clock: bytes,
              blobs: list[tuple[str, bytes]]) -> Runtime:
    runtime = Runtime(loaded, engine=engine)
    runtime.restore(clock, blobs)
    return runtime


def _run_future(loaded: LoadedPlaybook, engine: str, clock: bytes,
                blobs: list[tuple[str, bytes]], records: list[tuple[int, str, float]],
                event: str, amount: str | None, end: int) -> Sample:
    """Run the playbook from the saved state over one drawn future; count what it does."""
    runtime = _restored(loaded, engine, clock, blobs)
    cal = runtime.calendar
    sample = Sample(purchases=len(records))
    for ts, customer, spent in records:
        fields: dict[str, Any] = {"customer_id": customer, "type": event, "ts": cal.format(ts)}
        if amount is not None:
            fields[amount] = round(spent, 2)
        for action in runtime.apply(runtime.parse_event(fields)):
            sample.count(action, cal)
    for action in runtime.advance_ts(end):
        sample.count(action, cal)
    return sample


def _actual(loaded: LoadedPlaybook, engine: str, clock: bytes, blobs: list[tuple[str, bytes]],
            events: Path, start: int, end: int, result: Forecast,
            progress: Progress | None = None) -> dict[str, Any]:
    """--backtest: the real history after `start` from the same state, against the forecast:
    per channel the actual count, the forecast's error, and how many days fell inside the
    80% interval."""
    from sopkit._io import BadRecord, read_records

    runtime = _restored(loaded, engine, clock, blobs)
    cal = runtime.calendar
    sample = Sample()
    size = events.stat().st_size
    tick = None if progress is None else (lambda done: progress("backtest", done, size))
    for item in read_records(events, tick):
        if isinstance(item, BadRecord):
            continue
        try:
            parsed = runtime.parse_event(item.data)
            if not start < parsed[2] <= end:
                continue
            for action in runtime.apply(parsed):
                sample.count(action, cal)
        except EventError:
            continue  # left out of the real run as simulate would leave it out
        sample.purchases += parsed[1] == result.model["purchase_event"]
    for action in runtime.advance_ts(end):
        sample.count(action, cal)
    channels: dict[str, Any] = {}
    for channel in result.channels:
        actual = sum(n for (day, c), n in sample.by_day.items() if c == channel)
        predicted = result.totals[channel].mean
        inside = sum(1 for day in result.days
                     if result.by_day[day][channel].low <= sample.by_day[day, channel]
                     <= result.by_day[day][channel].high)
        channels[channel] = {
            "actual": actual, "forecast": round(predicted, 3),
            "error": None if actual == 0 else round((predicted - actual) / actual, 4),
            "days_inside": inside, "coverage": round(inside / len(result.days), 4)}
    return {"channels": channels, "purchases": sample.purchases}


def _aggregate(loaded: LoadedPlaybook, runs: list[Sample], days: list[str], start: int,
               end: int, cal: Any) -> Forecast:
    """The intervals over the samples."""
    channels = sorted({c for s in runs for (_d, c) in s.by_day})
    by_day = {day: {c: interval(s.by_day[day, c] for s in runs) for c in channels}
              for day in days}
    totals = {c: interval(sum(n for (_d, ch), n in s.by_day.items() if ch == c) for s in runs)
              for c in channels}
    policy = loaded.model.policy
    capacity = policy.task_capacity if policy else None
    owners = []
    for owner in sorted({o for s in runs for (o, _d) in s.tasks}):
        per_day = [[s.tasks[owner, d] for d in days] for s in runs]
        owners.append(OwnerLoad(
            owner, interval(sum(p) / len(days) for p in per_day),
            interval(max(p) for p in per_day),
            interval(sum(1 for n in p if capacity is not None and n > capacity)
                     for p in per_day),
            interval(s.pushed[owner] for s in runs)))
    cost = {}
    for name, channel in loaded.model.channels.items():
        if channel.cost is not None and name in totals:
            cost[name] = interval(
                channel.cost * sum(n for (_d, ch), n in s.by_day.items() if ch == name)
                for s in runs)
    return Forecast(
        playbook=loaded.name, start=cal.format(start), end=cal.format(end), days=days,
        samples=len(runs), seed=0, customers=0, buyers=0, model={}, channels=channels,
        by_day=by_day, totals=totals, purchases=interval(s.purchases for s in runs),
        capped=interval(s.capped for s in runs), deferred=interval(s.deferred for s in runs),
        capacity=capacity, owners=owners, cost=cost, notes=list(NOTES))

