"""[clv] facts for rules: BG/NBD and Gamma-Gamma refitted on a schedule, per customer.

Each customer keeps a tiny purchase summary (first and last purchase day, purchase days,
spend on the first day and in all); purchases on one playbook day count as one, as in the
papers. At each refit (a day start every `every` days, counted from Monday 2024-01-01) the
models are fitted on every customer's summary at that instant (time unit: weeks) and every
customer's facts are recomputed; a customer's own purchase recomputes theirs at once with
the current fit. Between, the facts hold: they are "as of the last refit or purchase".
Facts are rounded to 6 decimals so that output is the same on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sopkit._errors import UsageError

Facts = tuple[float, float, float, float | None]


def load_models() -> Any:
    """The model module; a UsageError naming the extra when numpy/scipy are missing."""
    try:
        from sopkit._stats import clv as _clv
    except ImportError as exc:
        raise UsageError(f"[clv] needs numpy and scipy ({exc}): pip install 'sopkit[clv]'") \
            from None
    return _clv


def observe(summary: list[Any] | None, day: int, amount: float) -> list[Any]:
    """The purchase summary after a purchase: [first day, last day, days, first, total]."""
    if summary is None:
        return [day, day, 1, amount, amount]
    if day != summary[1]:
        summary[1] = day
        summary[2] += 1
    if day == summary[0]:
        summary[3] += amount
    summary[4] += amount
    return summary


def rft(summary: Sequence[Any], today: int) -> tuple[float, float, float, float]:
    """(x, t_x, T, m) in weeks: repeat days, span, age, mean spend of a repeat day."""
    x = summary[2] - 1
    repeat = summary[4] - summary[3]
    return (float(x), (summary[1] - summary[0]) / 7, (today - summary[0]) / 7,
            repeat / x if x > 0 else 0.0)


def fit(models: Any, rows: Sequence[tuple[float, float, float, float]],
        with_spend: bool) -> tuple[Any, Any] | None:
    """Fitted (BG/NBD, Gamma-Gamma or None) params on these customers, None if it fails."""
    import numpy as np

    if len(rows) < 3 or not any(r[0] > 0 for r in rows):
        return None
    x, t_x, T, m = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    try:
        found = models.fit_bgnbd(x, t_x, T)
    except (ValueError, FloatingPointError, ArithmeticError):
        return None
    if not found.converged:
        return None
    spend = None
    if with_spend:
        try:
            spend = models.fit_gamma_gamma(x, m).params
        except (ValueError, FloatingPointError, ArithmeticError):
            spend = None
    return found.params, spend


def one(models: Any, params: tuple[Any, Any], row: tuple[float, float, float, float],
        horizon_weeks: float) -> Facts:
    """`facts_of` for one customer, with the scalar formulas (a purchase, between refits)."""
    bgnbd, gamma = params
    x, t_x, T, m = row
    seen = models.outlook(bgnbd, x, t_x, T, horizon_weeks)
    spend = None
    if gamma is not None:
        p, q, g = gamma.as_tuple()
        denom = p * x + q - 1
        if denom > 0:
            spend = round(p * (g + x * (m if x > 0 else 0.0)) / denom, 6)
    return (round(seen.p_alive, 6), round(seen.expected_purchases, 6),
            round(seen.p_no_purchase, 6), spend)


def facts_of(models: Any, params: tuple[Any, Any], rows: Sequence[tuple[float, ...]],
             horizon_weeks: float) -> list[Facts]:
    """Each customer's (p_alive, expected purchases, p_no_purchase, expected spend)."""
    import numpy as np

    if not rows:
        return []
    x, t_x, T, m = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    bgnbd, gamma = params
    alive = models.p_alive(bgnbd, x, t_x, T)
    expect = models.expected_purchases(bgnbd, horizon_weeks, x, t_x, T)
    quiet = models.p_no_purchase(bgnbd, horizon_weeks, x, t_x, T)
    spend = models.expected_spend(gamma, x, m) if gamma is not None else None
    out: list[Facts] = []
    for i in range(len(rows)):
        value = None if spend is None or not np.isfinite(spend[i]) else round(float(spend[i]), 6)
        out.append((round(float(alive[i]), 6), round(float(expect[i]), 6),
                    round(float(quiet[i]), 6), value))
    return out
