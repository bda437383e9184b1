"""Purchase histories for the CLV models: reading them, and each customer's frequency, recency,
age and mean value (RFM) in weeks or days."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from sopkit._errors import EventError
from sopkit._io import BadRecord, read_records
from sopkit._stats.mle import FloatArray

Unit = Literal["weeks", "days"]
UNIT_DAYS: dict[str, int] = {"weeks": 7, "days": 1}
DAYS_PER_YEAR = 365.25


class Purchase(NamedTuple):
    """One purchase: who, on which calendar day, for how much."""

    customer_id: str
    day: dt.date
    amount: float


@dataclass(frozen=True)
class RFM:
    """Per-customer summary of a purchase history, the input of both models.

    Arrays are aligned with `customer_ids` (sorted). `x` counts repeat purchase days up to and
    including `calibration_end`; `t_x` and `T` are in `unit`s from the first purchase; `m` is
    the mean value of the repeat purchase days (0 where x = 0). `holdout_x` counts purchase
    days after `calibration_end` up to `holdout_end`, for checking predictions.
    """

    customer_ids: tuple[str, ...]
    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    m: FloatArray
    holdout_x: FloatArray
    unit: Unit
    calibration_end: dt.date
    holdout_end: dt.date
    purchases: int  # purchase records counted (calibration and holdout)
    late_customers: int  # customers whose first purchase is after calibration_end (left out)

    @property
    def holdout_length(self) -> float:
        """The holdout period in `unit`s (0 when there is none)."""
        return (self.holdout_end - self.calibration_end).days / UNIT_DAYS[self.unit]

    def __len__(self) -> int:
        return len(self.customer_ids)


def check_unit(unit: str) -> Unit:
    if unit == "weeks":
        return "weeks"
    if unit == "days":
        return "days"
    raise ValueError(f"unknown time unit {unit!r}: use 'weeks' or 'days'")


def summarize(purchases: Iterable[Purchase], calibration_end: dt.date | None = None,
              unit: str = "weeks", holdout_end: dt.date | None = None) -> RFM:
    """Frequency, recency, age and mean repeat value of every customer.

    `calibration_end` (inclusive; default the last purchase day) closes the period the models
    are fitted on; purchases after it, up to `holdout_end` (default the last purchase day),
    are counted in `holdout_x`. Customers who first buy after `calibration_end` are left out.
    """
    unit_ = check_unit(unit)
    per_day: dict[str, dict[dt.date, float]] = {}
    count = 0
    last_day: dt.date | None = None
    for customer, day, amount in purchases:
        count += 1
        days = per_day.setdefault(customer, {})
        days[day] = days.get(day, 0.0) + amount
        if last_day is None or day > last_day:
            last_day = day
    if last_day is None:
        raise ValueError("no purchases to summarise")
    cal_end = calibration_end or last_day
    end = holdout_end or max(last_day, cal_end)
    if end < cal_end:
        raise ValueError(f"holdout end {end} is before the calibration end {cal_end}")
    step = UNIT_DAYS[unit_]
    ids: list[str] = []
    rows: list[tuple[float, float, float, float, float]] = []
    late = 0
    for customer in sorted(per_day):
        days = per_day[customer]
        cal = sorted(d for d in days if d <= cal_end)
        if not cal:
            late += 1
            continue
        first = cal[0]
        repeat = cal[1:]
        spend = sum(days[d] for d in repeat) / len(repeat) if repeat else 0.0
        holdout = sum(1 for d in days if cal_end < d <= end)
        ids.append(customer)
        rows.append((len(repeat), (cal[-1] - first).days / step, (cal_end - first).days / step,
                     spend, holdout))
    table = np.array(rows, dtype=np.float64).reshape(len(rows), 5)
    return RFM(tuple(ids), table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy(),
               table[:, 3].copy(), table[:, 4].copy(), unit_, cal_end, end, count, late)


def customer_rfm(days: Iterable[dt.date], at: dt.date,
                 unit: str = "weeks") -> tuple[int, float, float]:
    """One customer's (x, t_x, T) on day `at` from their purchase days (later days ignored).

    Raises ValueError when the customer had not bought by `at`.
    """
    step = UNIT_DAYS[check_unit(unit)]
    seen = sorted({d for d in days if d <= at})
    if not seen:
        raise ValueError(f"no purchase on or before {at}")
    return len(seen) - 1, (seen[-1] - seen[0]).days / step, (at - seen[0]).days / step


@dataclass(frozen=True)
class BadPurchase:
    """A record that could not be used: where, why, and the record itself."""

    line: int
    reason: str
    kind: str
    record: Any


@dataclass
class PurchaseLog:
    """What `read_purchases` found in a history file."""

    purchases: list[Purchase] = field(default_factory=list)
    bad: list[BadPurchase] = field(default_factory=list)
    records: int = 0
    other_events: int = 0  # records of another type, skipped on purpose


def _parse_day(raw: Any) -> dt.date:
    value = dt.datetime.fromisoformat(str(raw).strip().replace("Z", "+00:00"))
    return value.date()


def _purchase(data: dict[str, Any], amount_field: str) -> tuple[str, dt.date, float]:
    """(customer, day, amount) of a purchase record; EventError naming what is wrong."""
    customer = data.get("customer_id")
    if customer is None or str(customer).strip() == "":
        raise EventError("missing 'customer_id'")
    raw_ts = data.get("ts")
    if raw_ts is None:
        raise EventError("missing 'ts' (an ISO 8601 time)")
    try:
        day = _parse_day(raw_ts)
    except ValueError:
        raise EventError(f"bad 'ts' {raw_ts!r}: expected ISO 8601, e.g. 2024-05-01T09:30:00",
                         "bad 'ts'") from None
    if amount_field not in data:
        raise EventError(f"missing '{amount_field}' (the purchase value; choose the field "
                         "with --amount-field)", f"missing '{amount_field}'")
    raw = data[amount_field]
    kind = f"bad '{amount_field}'"
    try:
        if isinstance(raw, bool) or raw is None:
            raise ValueError
        amount = float(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        raise EventError(f"bad '{amount_field}' {raw!r}: not a number", kind) from None
    if not math.isfinite(amount) or amount < 0:
        raise EventError(f"bad '{amount_field}' {raw!r}: must be a finite number >= 0", kind)
    return str(customer), day, amount


def read_purchases(path: Path, event: str = "purchase",
                   amount_field: str = "amount") -> PurchaseLog:
    """Purchase events from a JSONL or CSV history (as `sopkit simulate` reads them).

    A record of type `event` needs `customer_id`, an ISO 8601 `ts` (its calendar date, as
    written, is the purchase day) and a number >= 0 in `amount_field`. Records that fail are
    collected in `bad` with the reason; records of other types are counted and skipped.
    """
    log = PurchaseLog()
    for item in read_records(path):
        log.records += 1
        if isinstance(item, BadRecord):
            log.bad.append(BadPurchase(item.line, item.reason, item.kind, item.raw))
            continue
        data = item.data
        if data.get("type") != event:
            log.other_events += 1
            continue
        try:
            customer, day, amount = _purchase(data, amount_field)
        except EventError as exc:
            log.bad.append(BadPurchase(item.line, str(exc), exc.kind, data))
            continue
        log.purchases.append(Purchase(str(customer), day, amount))
    return log
