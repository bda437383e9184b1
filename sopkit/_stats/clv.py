"""Customer-base analysis: who is still a customer, how often they will buy, what they are worth.

Two probability models from the marketing-science literature, fitted by maximum likelihood:

* **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way", Marketing
  Science 24(2)): while alive, a customer buys as a Poisson process with rate λ; after each
  repeat purchase they drop out for good with probability p. λ ~ Gamma(r, α) and
  p ~ Beta(a, b) across customers. Gives P(alive) and the expected number of purchases in a
  coming period, from three numbers per customer: frequency x (repeat purchases), recency t_x
  (time of the last purchase, from the first) and age T (time from the first purchase to the
  end of the calibration period).
* **Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV", Journal of Marketing Research
  42(4)): the value of each purchase is Gamma(p, ν) with ν ~ Gamma(q, γ) across customers.
  Gives the expected value of a customer's future purchases from x and their mean repeat
  purchase value m.

Everything here is a pure function of plain data returning plain dataclasses. Time is counted
in one unit, weeks or days, chosen when summarising; the fitted α is in that unit.
Purchases on the same calendar day are one transaction (their values added), as in the papers.

numpy and scipy are an optional extra: `pip install 'sopkit[clv]'`.

This module is the front door (its `__all__`), with `clv` and the whole analysis; the parts
are in purchases.py (reading and summarising), mle.py (the likelihood search), bgnbd.py and
gammagamma.py (the two models).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sopkit._stats.bgnbd import (
    BGNBDFit,
    BGNBDParams,
    Outlook,
    bgnbd_log_likelihood,
    expected_purchases,
    expected_purchases_new,
    fit_bgnbd,
    outlook,
    p_alive,
    p_no_purchase,
    simulate_bgnbd,
)
from sopkit._stats.gammagamma import (
    GammaGammaFit,
    GammaGammaParams,
    expected_spend,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
)
from sopkit._stats.mle import FloatArray, floats
from sopkit._stats.purchases import (
    DAYS_PER_YEAR,
    RFM,
    UNIT_DAYS,
    BadPurchase,
    Purchase,
    PurchaseLog,
    check_unit,
    customer_rfm,
    read_purchases,
    summarize,
)


def clv(bgnbd: BGNBDParams, gg: GammaGammaParams, x: npt.ArrayLike, t_x: npt.ArrayLike,
        T: npt.ArrayLike, m: npt.ArrayLike, horizon: float, unit: str,
        annual_discount_rate: float = 0.0) -> FloatArray:
    """Expected revenue from each customer over the next `horizon` units.

    Expected purchases times expected spend per purchase. With a discount rate, the horizon is
    cut into months (or shorter steps for a short horizon) and the purchases expected in each
    step are discounted to today from the step's end: value / (1 + rate)^years.
    """
    step_days = UNIT_DAYS[check_unit(unit)]
    if horizon < 0 or annual_discount_rate < 0:
        raise ValueError("horizon and discount rate must be >= 0")
    xb, txb, tb, mb = np.broadcast_arrays(floats(x), floats(t_x), floats(T), floats(m))
    spend = expected_spend(gg, xb, mb)
    if annual_discount_rate == 0 or horizon == 0:
        return floats(expected_purchases(bgnbd, horizon, xb, txb, tb) * spend)
    horizon_days = horizon * step_days
    steps = max(1, math.ceil(horizon_days / (DAYS_PER_YEAR / 12)))
    ends = np.linspace(horizon / steps, horizon, steps)
    grid = expected_purchases(bgnbd, ends[:, None], xb[None, :], txb[None, :], tb[None, :])
    increments = np.diff(grid, axis=0, prepend=0.0)
    years = ends * step_days / DAYS_PER_YEAR
    factors = (1.0 + annual_discount_rate) ** -years
    return floats(np.sum(increments * factors[:, None], axis=0) * spend)


@dataclass(frozen=True)
class ClvReport:
    """Both models fitted on one summary, and every customer's outlook over `horizon` units."""

    rfm: RFM
    bgnbd: BGNBDFit
    spend: GammaGammaFit | None
    spend_note: str  # why there is no spend model, or ""
    horizon: float
    annual_discount_rate: float
    p_alive: FloatArray
    expected_purchases: FloatArray
    p_no_purchase: FloatArray
    expected_spend: FloatArray | None
    clv: FloatArray | None
    holdout_predicted: float | None  # expected repeat purchases in the holdout period
    holdout_quiet: float | None  # expected customers without a purchase in it

    def to_json(self) -> dict[str, Any]:
        """The parameters, fit statistics and totals as plain JSON data."""
        rfm, fit = self.rfm, self.bgnbd
        out: dict[str, Any] = {
            "unit": rfm.unit,
            "calibration_end": rfm.calibration_end.isoformat(),
            "customers": len(rfm),
            "repeat_customers": int(np.sum(rfm.x > 0)),
            "purchases": rfm.purchases,
            "late_customers": rfm.late_customers,
            "bgnbd": {
                **_named(fit.params), "log_likelihood": _round(fit.log_likelihood),
                "customers": fit.customers, "converged": fit.converged,
                "at_limit": list(fit.at_limit),
                "std_errors": _named(fit.std_errors) if fit.std_errors else None,
            },
            "gamma_gamma": None,
            "horizon": self.horizon,
            "annual_discount_rate": self.annual_discount_rate,
            "mean_p_alive": _round(float(np.mean(self.p_alive))),
            "expected_purchases": _round(float(np.sum(self.expected_purchases))),
            "mean_p_no_purchase": _round(float(np.mean(self.p_no_purchase))),
            "expected_revenue": (_round(float(np.nansum(self.clv)))
                                 if self.clv is not None else None),
            "holdout": None,
        }
        if self.spend is not None:
            gg = self.spend
            out["gamma_gamma"] = {
                **_named(gg.params), "log_likelihood": _round(gg.log_likelihood),
                "customers": gg.customers, "excluded": gg.excluded,
                "correlation": _round(gg.correlation), "converged": gg.converged,
                "at_limit": list(gg.at_limit),
                "mean_spend": _round(gg.params.mean_spend),
                "std_errors": _named(gg.std_errors) if gg.std_errors else None,
            }
        else:
            out["gamma_gamma_note"] = self.spend_note
        if self.holdout_predicted is not None:
            out["holdout"] = {"end": rfm.holdout_end.isoformat(),
                              "length": _round(rfm.holdout_length),
                              "predicted": _round(self.holdout_predicted),
                              "actual": int(np.sum(rfm.holdout_x)),
                              "predicted_no_purchase": _round(self.holdout_quiet or 0.0),
                              "actual_no_purchase": int(np.sum(rfm.holdout_x == 0))}
        return out

    def customers(self) -> Iterator[dict[str, Any]]:
        """One JSON-ready row per customer, in customer_id order."""
        rfm = self.rfm
        for i, customer in enumerate(rfm.customer_ids):
            row: dict[str, Any] = {
                "customer_id": customer,
                "frequency": int(rfm.x[i]),
                "recency": _round(float(rfm.t_x[i])),
                "age": _round(float(rfm.T[i])),
                "mean_spend": _round(float(rfm.m[i])) if rfm.x[i] > 0 else None,
                "p_alive": _round(float(self.p_alive[i])),
                "expected_purchases": _round(float(self.expected_purchases[i])),
                "p_no_purchase": _round(float(self.p_no_purchase[i])),
                "expected_spend": (_round(float(self.expected_spend[i]))
                                   if self.expected_spend is not None else None),
                "clv": _round(float(self.clv[i])) if self.clv is not None else None,
            }
            if self.holdout_predicted is not None:
                row["holdout_purchases"] = int(rfm.holdout_x[i])
            yield row


def _round(value: float) -> float | None:
    """Six significant digits; None for NaN or infinity (JSON has neither)."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _named(params: BGNBDParams | GammaGammaParams) -> dict[str, float | None]:
    return {k: _round(v) for k, v in vars(params).items()}


def analyse(rfm: RFM, horizon: float, annual_discount_rate: float = 0.0) -> ClvReport:
    """Fit BG/NBD and (where the data allow) Gamma-Gamma; score every customer.

    ValueError when no customer bought again by the calibration end (nothing to learn the
    purchase and dropout processes from). A BG/NBD fit that did not converge is returned as
    it is (see `BGNBDFit.converged`); a spend fit that did not is dropped, with a note.
    """
    if not np.any(rfm.x > 0):
        raise ValueError(f"no customer bought again by the calibration end "
                         f"{rfm.calibration_end}: the models learn from repeat purchases "
                         "(use a later --calibration-end or a longer history)")
    fit = fit_bgnbd(rfm.x, rfm.t_x, rfm.T)
    spend: GammaGammaFit | None = None
    note = ""
    try:
        spend = fit_gamma_gamma(rfm.x, rfm.m)
    except ValueError as exc:
        note = str(exc)
    if spend is not None and not spend.converged:
        note = f"the spend model did not converge: {spend.message}"
        spend = None
    if spend is not None and spend.params.q <= 1:
        note = (f"the fitted spend model has q = {spend.params.q:.3g} <= 1: spend per purchase "
                "has no finite mean, so no spend or CLV is given")
        spend = None
    alive = p_alive(fit.params, rfm.x, rfm.t_x, rfm.T)
    expected = expected_purchases(fit.params, horizon, rfm.x, rfm.t_x, rfm.T)
    quiet = p_no_purchase(fit.params, horizon, rfm.x, rfm.t_x, rfm.T)
    spends = expected_spend(spend.params, rfm.x, rfm.m) if spend else None
    value = (clv(fit.params, spend.params, rfm.x, rfm.t_x, rfm.T, rfm.m, horizon, rfm.unit,
                 annual_discount_rate) if spend else None)
    holdout = holdout_quiet = None
    if rfm.holdout_length > 0:
        span = rfm.holdout_length
        holdout = float(np.sum(expected_purchases(fit.params, span, rfm.x, rfm.t_x, rfm.T)))
        holdout_quiet = float(np.sum(p_no_purchase(fit.params, span, rfm.x, rfm.t_x, rfm.T)))
    return ClvReport(rfm, fit, spend, note, horizon, annual_discount_rate, alive, expected,
                     quiet, spends, value, holdout, holdout_quiet)


__all__ = [
    "RFM", "UNIT_DAYS", "BGNBDFit", "BGNBDParams", "BadPurchase", "ClvReport", "GammaGammaFit",
    "GammaGammaParams", "Outlook", "Purchase", "PurchaseLog", "analyse",
    "bgnbd_log_likelihood", "clv", "customer_rfm", "expected_purchases",
    "expected_purchases_new", "expected_spend", "fit_bgnbd", "fit_gamma_gamma",
    "gamma_gamma_log_likelihood", "outlook", "p_alive", "p_no_purchase", "read_purchases",
    "simulate_bgnbd", "summarize",
]
