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
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import integrate, optimize, special

from sopkit._errors import EventError
from sopkit._io import BadRecord, read_records

FloatArray = npt.NDArray[np.float64]
Unit = Literal["weeks", "days"]
UNIT_DAYS: dict[str, int] = {"weeks": 7, "days": 1}
DAYS_PER_YEAR = 365.25

_LOG_BOUND = 25.0  # parameters are searched within e^-25 .. e^25
_LIMIT = 18.0  # a parameter beyond e^±18 (6.6e7) stands for a limit of the model
_SERIES_MAX_TERMS = 20_000
_SERIES_MAX_Z = 0.995  # beyond this the series converges too slowly: integrate instead
_SERIES_EPS = 1e-16


def _floats(value: npt.ArrayLike) -> FloatArray:
    return np.asarray(value, dtype=np.float64)


# --------------------------------------------------------------------------- summaries


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


def _check_unit(unit: str) -> Unit:
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
    unit_ = _check_unit(unit)
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
    step = UNIT_DAYS[_check_unit(unit)]
    seen = sorted({d for d in days if d <= at})
    if not seen:
        raise ValueError(f"no purchase on or before {at}")
    return len(seen) - 1, (seen[-1] - seen[0]).days / step, (at - seen[0]).days / step


# --------------------------------------------------------------------------- reading files


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


# --------------------------------------------------------------------------- BG/NBD


@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD parameters: λ ~ Gamma(shape r, rate α), p ~ Beta(a, b); α is in the time unit."""

    r: float
    alpha: float
    a: float
    b: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.r, self.alpha, self.a, self.b)


@dataclass(frozen=True)
class BGNBDFit:
    """A fitted BG/NBD model.

    `std_errors` are asymptotic standard errors from the observed information (None when the
    Hessian is not positive definite, or at a limit). `converged` is False when the optimiser
    stopped before the gradient was flat. `at_limit` names parameters that ran beyond e^±18:
    the likelihood is highest in a limit, such as r and alpha growing together (every
    customer buys at the same rate) or a and b growing together (every customer has the same
    dropout probability).
    """

    params: BGNBDParams
    log_likelihood: float
    customers: int
    converged: bool
    message: str
    std_errors: BGNBDParams | None
    at_limit: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Histories:
    """x, t_x, T with the distinct x values, so special functions run once per distinct x."""

    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    xu: FloatArray
    inv: npt.NDArray[np.intp]

    @classmethod
    def of(cls, x: FloatArray, t_x: FloatArray, T: FloatArray) -> _Histories:
        xu, inv = np.unique(x, return_inverse=True)
        return cls(x, t_x, T, _floats(xu), inv.reshape(x.shape))


def _bgnbd_terms(theta: FloatArray, h: _Histories,
                 grad: bool) -> tuple[FloatArray, FloatArray | None]:
    """Per-customer log-likelihood and, if asked, its gradient in log-parameters (n x 4).

    L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
        + [x > 0] B(a+1, b+x-1)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x)),
    summed in log space (logaddexp), so no term under- or overflows.
    """
    r, alpha, a, b = np.exp(theta)
    xu, inv = h.xu, h.inv
    repeat_u = xu > 0
    xs_u = np.where(repeat_u, xu, 1.0)  # keeps the x = 0 branch away from Beta(a+1, b-1)
    base = special.betaln(a, b)
    # Per distinct x: the parts that need special functions.
    ln_a1 = (special.gammaln(r + xu) - special.gammaln(r) + r * math.log(alpha))[inv]
    beta2 = (special.betaln(a, b + xu) - base)[inv]
    beta3 = (special.betaln(a + 1, b + xs_u - 1) - base)[inv]
    repeat = repeat_u[inv]
    shape = r + h.x
    ln_a2 = beta2 - shape * np.log(alpha + h.T)
    ln_a3 = beta3 - shape * np.log(alpha + h.t_x)
    both = np.logaddexp(ln_a2, ln_a3)
    ll = ln_a1 + np.where(repeat, both, ln_a2)
    if not grad:
        return _floats(ll), None
    w3 = np.where(repeat, np.exp(ln_a3 - both), 0.0)  # share of the "dropped out" branch
    w2 = 1.0 - w3
    dg = special.digamma
    common_u = dg(a + b) - dg(a + b + xu)
    d_r = ((dg(r + xu) - dg(r))[inv] + math.log(alpha)
           - w2 * np.log(alpha + h.T) - w3 * np.log(alpha + h.t_x))
    d_alpha = r / alpha - shape * (w2 / (alpha + h.T) + w3 / (alpha + h.t_x))
    d_a = common_u[inv] + w3 / a  # digamma(a+1) - digamma(a) = 1/a
    d_b = ((common_u - dg(b))[inv] + w2 * dg(b + xu)[inv] + w3 * dg(b + xs_u - 1)[inv])
    jac = np.stack([d_r * r, d_alpha * alpha, d_a * a, d_b * b], axis=-1)
    return _floats(ll), _floats(jac)


def bgnbd_log_likelihood(params: BGNBDParams, x: npt.ArrayLike, t_x: npt.ArrayLike,
                         T: npt.ArrayLike) -> FloatArray:
    """Each customer's BG/NBD log-likelihood (sum it for the model's)."""
    theta = np.log(np.array(params.as_tuple(), dtype=np.float64))
    xb, txb, tb = (np.ascontiguousarray(v) for v in
                   np.broadcast_arrays(_floats(x), _floats(t_x), _floats(T)))
    return _bgnbd_terms(theta, _Histories.of(xb, txb, tb), grad=False)[0]


def _check_rft(x: FloatArray, t_x: FloatArray, T: FloatArray) -> None:
    if not (x.shape == t_x.shape == T.shape) or x.ndim != 1:
        raise ValueError("x, t_x and T must be 1-D arrays of the same length")
    if len(x) == 0:
        raise ValueError("no customers to fit")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t_x)) and np.all(np.isfinite(T))):
        raise ValueError("x, t_x and T must be finite")
    if np.any(x < 0) or np.any(x != np.round(x)):
        raise ValueError("x (repeat purchases) must be whole numbers >= 0")
    if np.any(t_x < 0) or np.any(t_x > T):
        raise ValueError("need 0 <= t_x <= T for every customer")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError("a customer with x = 0 must have t_x = 0")


@dataclass(frozen=True)
class _Optimum:
    theta: FloatArray
    at_limit: tuple[int, ...]  # indices of parameters at the edge of the search box
    log_likelihood: float
    converged: bool
    message: str
    std_errors: FloatArray | None


def _maximise(terms: Callable[[FloatArray, bool], tuple[FloatArray, FloatArray | None]],
              starts: list[FloatArray]) -> _Optimum:
    """Maximise a sum of log-likelihood terms over log-parameters with L-BFGS-B."""
    n = len(terms(starts[0], False)[0])

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        ll, jac = terms(theta, True)
        assert jac is not None
        total = float(np.sum(ll))
        if not math.isfinite(total):
            return math.inf, np.zeros_like(theta)
        return -total / n, _floats(-np.sum(jac, axis=0) / n)

    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(starts[0])
    best: Any = None
    for start in starts:
        result = optimize.minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                                   options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9})
        if best is not None and abs(result.fun - best.fun) <= 1e-10 * max(1.0, abs(best.fun)):
            break  # two starts agree: that is the optimum
        if best is None or result.fun < best.fun:
            best = result
    theta = _floats(best.x)
    at_limit = tuple(int(i) for i in np.flatnonzero(np.abs(theta) > _LIMIT))
    # L-BFGS-B may end on "ABNORMAL" when rounding stops the line search at the optimum:
    # then the gradient decides. Where the likelihood keeps rising towards a limit (e.g.
    # a, b -> infinity: everyone has the same dropout probability), the search ends far out
    # or at the edge of the box; that limit is the fit, with no standard errors.
    slope = objective(theta)[1]  # of -log-likelihood; at an edge only the inward part counts
    slope = np.where(theta > _LOG_BOUND - 1e-3, np.maximum(slope, 0.0), slope)
    slope = np.where(theta < -_LOG_BOUND + 1e-3, np.minimum(slope, 0.0), slope)
    converged = bool(best.success) or float(np.max(np.abs(slope))) < 1e-5
    message = "converged" if converged else str(best.message)
    errors = _std_errors(objective, theta, n) if converged and not at_limit else None
    return _Optimum(theta, at_limit, -float(best.fun) * n, converged, message, errors)


def _std_errors(objective: Callable[[FloatArray], tuple[float, FloatArray]],
                theta: FloatArray, n: int) -> FloatArray | None:
    """Standard errors of exp(theta) by the delta method on a numerical Hessian."""
    k = len(theta)
    hess = np.empty((k, k))
    for i in range(k):
        h = 1e-5
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        hess[i] = (objective(up)[1] - objective(down)[1]) / (2 * h) * n
    hess = (hess + hess.T) / 2
    try:
        np.linalg.cholesky(hess)
    except np.linalg.LinAlgError:
        return None
    cov = np.linalg.inv(hess)
    return _floats(np.exp(theta) * np.sqrt(np.diag(cov)))


def fit_bgnbd(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> BGNBDFit:
    """Fit the BG/NBD model by maximum likelihood (several starts, the best kept)."""
    xa, txa, ta = _floats(x), _floats(t_x), _floats(T)
    _check_rft(xa, txa, ta)
    mean_x = max(float(np.mean(xa)), 0.05)
    mean_t = max(float(np.mean(ta)), 1e-3)
    scale = math.log(mean_t / mean_x)  # α so that the mean rate r/α matches the data
    starts = [np.array([0.0, scale, 0.0, 0.0]),
              np.array([math.log(0.25), scale + math.log(0.25), math.log(0.8), math.log(2.5)]),
              np.array([math.log(2.0), scale + math.log(2.0), math.log(2.0), math.log(8.0)])]

    histories = _Histories.of(xa, txa, ta)

    def terms(theta: FloatArray, grad: bool) -> tuple[FloatArray, FloatArray | None]:
        return _bgnbd_terms(theta, histories, grad)

    opt = _maximise(terms, starts)
    params = BGNBDParams(*(float(v) for v in np.exp(opt.theta)))
    errors = (BGNBDParams(*(float(v) for v in opt.std_errors))
              if opt.std_errors is not None else None)
    limit = tuple(("r", "alpha", "a", "b")[i] for i in opt.at_limit)
    return BGNBDFit(params, opt.log_likelihood, len(xa), opt.converged, opt.message, errors,
                    limit)


def p_alive(params: BGNBDParams, x: npt.ArrayLike, t_x: npt.ArrayLike,
            T: npt.ArrayLike) -> FloatArray:
    """P(the customer has not dropped out by T | x, t_x, T).

    Under the BG/NBD model a customer can drop out only right after a repeat purchase, so a
    customer with x = 0 is alive with probability 1; `expected_purchases` still falls with T.
    """
    r, alpha, a, b = params.as_tuple()
    xa, txa, ta = np.broadcast_arrays(_floats(x), _floats(t_x), _floats(T))
    repeat = xa > 0
    xs = np.where(repeat, xa, 1.0)
    log_odds = (math.log(a) - np.log(b + xs - 1)
                + (r + xa) * (np.log(alpha + ta) - np.log(alpha + txa)))
    return _floats(np.where(repeat, special.expit(-log_odds), 1.0))


def p_no_purchase(params: BGNBDParams, t: npt.ArrayLike, x: npt.ArrayLike,
                  t_x: npt.ArrayLike, T: npt.ArrayLike) -> FloatArray:
    """P(no purchase in the next `t` units | x, t_x, T): gone, or alive and quiet.

    1 - P(alive) + P(alive) · ((α+T)/(α+T+t))^(r+x), since an alive customer's rate is then
    Gamma(r+x, α+T). Unlike `p_alive` it falls below 1 for customers with x = 0 too.
    """
    r, alpha, _, _ = params.as_tuple()
    tb, xb, txb, tab = np.broadcast_arrays(_floats(t), _floats(x), _floats(t_x), _floats(T))
    if np.any(tb < 0):
        raise ValueError("the horizon t must be >= 0")
    buys = -np.expm1(-(r + xb) * np.log1p(tb / (alpha + tab)))  # P(a purchase | alive)
    return _floats(1.0 - p_alive(params, xb, txb, tab) * buys)


def _alive_series(z: FloatArray, big_c: FloatArray, a: float,
                  big_a: float) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """S = Σ_{k≥1} (A)_k (a)_{k-1} z^k / ((C)_k k!) elementwise, Σ|terms|, and where it
    converged.

    Terms shrink like k^(a-2-r-x) z^k, so z up to 0.995 needs at most some thousands of
    terms; larger z, and sums that overflow, are left for the caller to integrate.
    """
    total = np.zeros_like(z)
    size = np.zeros_like(z)
    done = z <= 0
    idx = np.flatnonzero((z > 0) & (z <= _SERIES_MAX_Z))
    if idx.size == 0:
        return total, size, done
    term = big_a * z[idx] / big_c[idx]
    acc = term.copy()
    acc_abs = np.abs(term)
    zz, cc = z[idx], big_c[idx]
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, _SERIES_MAX_TERMS):
            ratio = (big_a + k) * (a + k - 1) / ((cc + k) * (k + 1)) * zz
            rho = np.maximum(np.abs(ratio), zz)
            blown = ~np.isfinite(acc_abs)
            finished = blown | (term == 0) | (
                (rho < 1) & (np.abs(term) * rho / (1 - rho) <= _SERIES_EPS * np.abs(acc)))
            if np.any(finished):
                good = finished & ~blown
                total[idx[good]] = acc[good]
                size[idx[good]] = acc_abs[good]
                done[idx[good]] = True
                keep = ~finished
                idx, term, acc, acc_abs, zz, cc, ratio = (
                    idx[keep], term[keep], acc[keep], acc_abs[keep], zz[keep], cc[keep],
                    ratio[keep])
                if idx.size == 0:
                    break
            term = term * ratio
            acc = acc + term
            acc_abs = acc_abs + np.abs(term)
    return total, size, done


def _alive_expectation_quad(r: float, alpha: float, a: float, b: float, t: float, x: float,
                            T: float) -> float:
    """E[purchases in t | alive at T], integrating over the dropout probability p.

    Alive at T, λ ~ Gamma(r+x, α+T) and p ~ Beta(a, b+x); a customer with both buys
    (1 - e^(-λpt))/p times in t on average, so the answer is the mean over p of
    (1 - (1 + pc)^-(r+x))/p with c = t/(α+T). Integrated in v = ln p, where the step of
    (1 + pc)^-(r+x) and the pile-up of p near 0 are smooth, between breakpoints at the step,
    at the bulk of Beta(a, b+x) and at its tails.
    """
    shape, c, n = r + x, t / (alpha + T), b + x
    log_norm = float(special.betaln(a, n))

    def integrand(v: float) -> float:
        p = math.exp(v)
        gain = -math.expm1(-shape * math.log1p(p * c))  # 1 - (1 + pc)^-(r+x)
        return gain * math.exp((a - 1) * v + (n - 1) * math.log1p(-p) - log_norm)  # dp = p dv

    # ln p under Beta(a, n) has mean ψ(a) - ψ(a+n) and variance ψ'(a) - ψ'(a+n).
    centre = float(special.digamma(a) - special.digamma(a + n))
    spread = min(3.0, math.sqrt(float(special.polygamma(1, a) - special.polygamma(1, a + n))))
    marks = {-math.log(c), -math.log(c * shape), centre, centre - 6 * spread,
             centre + 6 * spread}
    # Below `low` the integrand is under e^-60 of its peak (it falls like p^a, or faster);
    # above `high`, 12 spreads past the bulk, or where (1-p)^(n-1) < e^-80, likewise.
    low = min(marks) - 60.0 / a - 12 * spread
    high = 0.0
    if n > 81:
        high = min(0.0, max(math.log(80.0 / (n - 1)), centre + 12 * spread))
    inner = sorted(v for v in marks if low < v < high - 1e-9)
    with warnings.catch_warnings():
        # With a in the billions (a fit at a limit) the log-density carries rounding noise
        # near 1e-7 of itself; quad then says it cannot reach 1e-10, and its answer is as
        # good as the integrand allows.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        value, _ = integrate.quad(integrand, low, high, points=inner or None, limit=1000,
                                  epsabs=0.0, epsrel=1e-10)
    return float(value)


def _combine(log_c: FloatArray, a: float, big_c: FloatArray, series: FloatArray,
             size: FloatArray) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """C·(L·exprel(-(a-1)L) - (1+c)^(1-a)·S), and where rounding cannot spoil it."""
    head = log_c * special.exprel(-(a - 1) * log_c)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        weight = np.exp(-(a - 1) * log_c)
        value = big_c * (head - weight * series)
        noise = 1e-15 * big_c * (np.abs(head) + weight * size)
        trusted = np.isfinite(value) & (noise <= 1e-10 * np.abs(value))
    return _floats(value), trusted


def _alive_expectation(params: BGNBDParams, t: FloatArray, x: FloatArray,
                       T: FloatArray) -> FloatArray:
    """E[purchases in (T, T+t] | alive at T, x, T], elementwise.

    The paper's formula, (a+b+x-1)/(a-1) [1 - ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1;
    z)] with z = t/(α+T+t), turned by Pfaff's transformation into
    (a+b+x-1) [L·(1-e^(-(a-1)L))/((a-1)L) - (1+c)^(1-a) S] with c = t/(α+T), L = ln(1+c) and
    S the series of `_alive_series`, whose only large parameter is in the denominator. That
    stays accurate for large x and needs no case for a = 1. Where it would converge too
    slowly (z near 1), or rounding could spoil it (very large a or r, as fits reach when
    customers hardly differ), a quadrature takes over.
    """
    r, alpha, a, b = params.as_tuple()
    log_c = np.log1p(t / (alpha + T))
    z = t / (alpha + T + t)
    big_c = a + b + x - 1
    series, size, done = _alive_series(z, big_c, a, a + b - 1 - r)
    value, trusted = _combine(log_c, a, big_c, series, size)
    for i in np.flatnonzero(~(done & trusted) & (t > 0)):
        value.flat[i] = _alive_expectation_quad(r, alpha, a, b, float(t.flat[i]),
                                                float(x.flat[i]), float(T.flat[i]))
    return _floats(np.where(t > 0, np.maximum(value, 0.0), 0.0))


def expected_purchases(params: BGNBDParams, t: npt.ArrayLike, x: npt.ArrayLike,
                       t_x: npt.ArrayLike, T: npt.ArrayLike) -> FloatArray:
    """Expected purchases in the next `t` units after T, given the history (x, t_x, T)."""
    tb, xb, txb, tab = np.broadcast_arrays(_floats(t), _floats(x), _floats(t_x), _floats(T))
    if np.any(tb < 0):
        raise ValueError("the horizon t must be >= 0")
    flat = [np.ascontiguousarray(v).reshape(-1) for v in (tb, xb, txb, tab)]
    alive = _alive_expectation(params, flat[0], flat[1], flat[3])
    return _floats((p_alive(params, flat[1], flat[2], flat[3]) * alive).reshape(tb.shape))


def expected_purchases_new(params: BGNBDParams, t: npt.ArrayLike) -> FloatArray:
    """Expected repeat purchases in the first `t` units after a customer's first purchase."""
    tb = _floats(t)
    return expected_purchases(params, tb, np.zeros_like(tb), np.zeros_like(tb),
                              np.zeros_like(tb))


def _series_scalar(z: float, big_c: float, a: float,
                   big_a: float) -> tuple[float, float] | None:
    """`_alive_series` for one customer in plain floats; None where it would not converge."""
    if z <= 0:
        return 0.0, 0.0
    if z > _SERIES_MAX_Z:
        return None
    term = big_a * z / big_c
    acc = term
    acc_abs = abs(term)
    for k in range(1, _SERIES_MAX_TERMS):
        ratio = (big_a + k) * (a + k - 1) / ((big_c + k) * (k + 1)) * z
        rho = max(abs(ratio), z)
        if not math.isfinite(acc_abs):
            return None
        if term == 0 or (rho < 1 and abs(term) * rho / (1 - rho) <= _SERIES_EPS * abs(acc)):
            return acc, acc_abs
        term *= ratio
        acc += term
        acc_abs += abs(term)
    return None


@dataclass(frozen=True)
class Outlook:
    """One customer's outlook: P(alive) now, expected purchases over the horizon, and the
    probability of no purchase at all in it."""

    p_alive: float
    expected_purchases: float
    p_no_purchase: float


def outlook(params: BGNBDParams, x: int | float, t_x: float, T: float,
            horizon: float) -> Outlook:
    """P(alive), expected purchases and P(no purchase) in `horizon` units for one customer.

    Plain floats in and out, for per-customer use in rules; well under a millisecond a call.
    """
    r, alpha, a, b = params.as_tuple()
    if x < 0 or t_x < 0 or t_x > T or horizon < 0 or (x == 0 and t_x != 0):
        raise ValueError(f"bad customer summary x={x}, t_x={t_x}, T={T}, horizon={horizon}")
    if x > 0:
        log_odds = math.log(a) - math.log(b + x - 1) + (r + x) * (
            math.log(alpha + T) - math.log(alpha + t_x))
        alive = 1.0 / (1.0 + math.exp(log_odds)) if log_odds < 700 else 0.0
    else:
        alive = 1.0
    c = horizon / (alpha + T)
    quiet = 1.0 - alive * -math.expm1(-(r + x) * math.log1p(c))
    if horizon == 0 or alive == 0.0:
        return Outlook(alive, 0.0, quiet)
    z = horizon / (alpha + T + horizon)
    big_c = a + b + x - 1
    found = _series_scalar(z, big_c, a, a + b - 1 - r)
    value = math.nan
    if found is not None:
        series, size = found
        log_c = math.log1p(c)
        y = -(a - 1) * log_c
        head = log_c * (math.expm1(y) / y if y != 0 else 1.0)
        weight = math.exp(y) if y < 700 else math.inf
        value = big_c * (head - weight * series)
        if not 1e-15 * big_c * (abs(head) + weight * size) <= 1e-10 * abs(value):
            value = math.nan  # rounding could spoil it (or it overflowed)
    if math.isnan(value):  # integrate instead
        value = _alive_expectation_quad(r, alpha, a, b, horizon, float(x), T)
    return Outlook(alive, alive * max(value, 0.0), quiet)


# --------------------------------------------------------------------------- Gamma-Gamma


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: purchase value ~ Gamma(p, ν), ν ~ Gamma(shape q, rate γ)."""

    p: float
    q: float
    gamma: float

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.p, self.q, self.gamma)

    @property
    def mean_spend(self) -> float:
        """The mean purchase value across customers, pγ/(q-1); infinite when q <= 1."""
        return self.p * self.gamma / (self.q - 1) if self.q > 1 else math.inf


@dataclass(frozen=True)
class GammaGammaFit:
    """A fitted Gamma-Gamma model.

    Fitted on the `customers` with x > 0 and m > 0 (`excluded` had x > 0 but m = 0).
    `correlation` is Pearson's r between x and m over those customers: the model assumes
    spend does not depend on frequency, so a value far from 0 is a warning.
    """

    params: GammaGammaParams
    log_likelihood: float
    customers: int
    excluded: int
    correlation: float
    converged: bool
    message: str
    std_errors: GammaGammaParams | None
    at_limit: tuple[str, ...] = ()  # as in BGNBDFit


@dataclass(frozen=True)
class _Spends:
    """x and m of the customers the spend model is fitted on, with the distinct x values."""

    x: FloatArray
    m: FloatArray
    xu: FloatArray
    inv: npt.NDArray[np.intp]
    log_m: FloatArray
    log_x: FloatArray

    @classmethod
    def of(cls, x: FloatArray, m: FloatArray) -> _Spends:
        xu, inv = np.unique(x, return_inverse=True)
        return cls(x, m, _floats(xu), inv.reshape(x.shape), _floats(np.log(m)),
                   _floats(np.log(x)))


def _gg_terms(theta: FloatArray, d: _Spends,
              grad: bool) -> tuple[FloatArray, FloatArray | None]:
    """Per-customer log density of the mean value m of x purchases, and its gradient.

    The total x·m of x purchases is Gamma(px, ν); with ν ~ Gamma(q, γ) integrated out,
    f(m | x) = Γ(px+q)/(Γ(px) Γ(q)) · γ^q · m^(px-1) · x^(px) / (γ + x·m)^(px+q).
    """
    p, q, gamma = np.exp(theta)
    px_u = p * d.xu
    px = p * d.x
    ln_total = np.log(gamma + d.x * d.m)
    ll = ((special.gammaln(px_u + q) - special.gammaln(px_u))[d.inv] - special.gammaln(q)
          + q * math.log(gamma) + (px - 1) * d.log_m + px * d.log_x - (px + q) * ln_total)
    if not grad:
        return _floats(ll), None
    dg = special.digamma
    dg_total = dg(px_u + q)[d.inv]
    d_p = d.x * (dg_total - dg(px_u)[d.inv] + d.log_m + d.log_x - ln_total)
    d_q = dg_total - dg(q) + math.log(gamma) - ln_total
    d_gamma = q / gamma - (px + q) / (gamma + d.x * d.m)
    return _floats(ll), _floats(np.stack([d_p * p, d_q * q, d_gamma * gamma], axis=-1))


def _spenders(x: FloatArray, m: FloatArray) -> npt.NDArray[np.bool_]:
    if x.shape != m.shape or x.ndim != 1:
        raise ValueError("x and m must be 1-D arrays of the same length")
    if np.any(~np.isfinite(m)) or np.any(m < 0) or np.any(x < 0):
        raise ValueError("x and m must be finite and >= 0")
    return (x > 0) & (m > 0)


def gamma_gamma_log_likelihood(params: GammaGammaParams, x: npt.ArrayLike,
                               m: npt.ArrayLike) -> FloatArray:
    """Each customer's Gamma-Gamma log density of m given x (x > 0 and m > 0 only)."""
    theta = np.log(np.array(params.as_tuple(), dtype=np.float64))
    xb, mb = (np.ascontiguousarray(v) for v in np.broadcast_arrays(_floats(x), _floats(m)))
    return _gg_terms(theta, _Spends.of(xb, mb), grad=False)[0]


def fit_gamma_gamma(x: npt.ArrayLike, m: npt.ArrayLike) -> GammaGammaFit:
    """Fit the Gamma-Gamma spend model on the customers with repeat purchases of value > 0."""
    xa, ma = _floats(x), _floats(m)
    use = _spenders(xa, ma)
    if int(np.sum(use)) < 2:
        raise ValueError("the spend model needs at least 2 customers with repeat purchases "
                         "of value > 0")
    xs, ms = xa[use], ma[use]
    mean, var = float(np.mean(ms)), float(np.var(ms))
    starts = [np.array([0.0, 0.0, 0.0]),
              np.array([math.log(5.0), math.log(3.0), math.log(max(mean, 1e-6) * 2 / 5)]),
              np.array([math.log(1.0), math.log(2.0 + mean**2 / max(var, 1e-12)),
                        math.log(max(mean, 1e-6))])]

    spends = _Spends.of(xs, ms)

    def terms(theta: FloatArray, grad: bool) -> tuple[FloatArray, FloatArray | None]:
        return _gg_terms(theta, spends, grad)

    opt = _maximise(terms, starts)
    params = GammaGammaParams(*(float(v) for v in np.exp(opt.theta)))
    errors = (GammaGammaParams(*(float(v) for v in opt.std_errors))
              if opt.std_errors is not None else None)
    corr = (float(np.corrcoef(xs, ms)[0, 1])
            if np.std(xs) > 0 and np.std(ms) > 0 else 0.0)
    excluded = int(np.sum((xa > 0) & ~use))
    limit = tuple(("p", "q", "gamma")[i] for i in opt.at_limit)
    return GammaGammaFit(params, opt.log_likelihood, int(np.sum(use)), excluded, corr,
                         opt.converged, opt.message, errors, limit)


def expected_spend(params: GammaGammaParams, x: npt.ArrayLike, m: npt.ArrayLike) -> FloatArray:
    """Expected value of a customer's future purchases given x purchases of mean value m.

    (q-1)/(px+q-1) · pγ/(q-1) + px/(px+q-1) · m: a weighted mean of the population mean and
    the customer's own. Customers with x = 0 get the population mean. NaN where undefined
    (px + q <= 1, or x = 0 with q <= 1).
    """
    p, q, gamma = params.as_tuple()
    xb, mb = np.broadcast_arrays(_floats(x), _floats(m))
    mb = np.where(xb > 0, mb, 0.0)
    denom = p * xb + q - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        value = p * (gamma + xb * mb) / denom
    return _floats(np.where(denom > 0, value, np.nan))


def clv(bgnbd: BGNBDParams, gg: GammaGammaParams, x: npt.ArrayLike, t_x: npt.ArrayLike,
        T: npt.ArrayLike, m: npt.ArrayLike, horizon: float, unit: str,
        annual_discount_rate: float = 0.0) -> FloatArray:
    """Expected revenue from each customer over the next `horizon` units.

    Expected purchases times expected spend per purchase. With a discount rate, the horizon is
    cut into months (or shorter steps for a short horizon) and the purchases expected in each
    step are discounted to today from the step's end: value / (1 + rate)^years.
    """
    step_days = UNIT_DAYS[_check_unit(unit)]
    if horizon < 0 or annual_discount_rate < 0:
        raise ValueError("horizon and discount rate must be >= 0")
    xb, txb, tb, mb = np.broadcast_arrays(_floats(x), _floats(t_x), _floats(T), _floats(m))
    spend = expected_spend(gg, xb, mb)
    if annual_discount_rate == 0 or horizon == 0:
        return _floats(expected_purchases(bgnbd, horizon, xb, txb, tb) * spend)
    horizon_days = horizon * step_days
    steps = max(1, math.ceil(horizon_days / (DAYS_PER_YEAR / 12)))
    ends = np.linspace(horizon / steps, horizon, steps)
    grid = expected_purchases(bgnbd, ends[:, None], xb[None, :], txb[None, :], tb[None, :])
    increments = np.diff(grid, axis=0, prepend=0.0)
    years = ends * step_days / DAYS_PER_YEAR
    factors = (1.0 + annual_discount_rate) ** -years
    return _floats(np.sum(increments * factors[:, None], axis=0) * spend)


# --------------------------------------------------------------------------- simulation


def simulate_bgnbd(params: BGNBDParams, T: npt.ArrayLike,
                   rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """Draw (x, t_x) for customers of ages T from the BG/NBD model (for tests and checks)."""
    ta = _floats(T)
    n = len(ta)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    drop = rng.beta(params.a, params.b, n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    now = np.zeros(n)
    active = np.ones(n, dtype=bool)
    while np.any(active):
        idx = np.flatnonzero(active)
        now[idx] += rng.exponential(1.0, idx.size) / lam[idx]
        bought = now[idx] <= ta[idx]
        hit = idx[bought]
        x[hit] += 1
        t_x[hit] = now[hit]
        stays = rng.random(hit.size) >= drop[hit]
        active[idx] = False
        active[hit[stays]] = True
    return x, t_x


# --------------------------------------------------------------------------- the whole analysis


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
    "RFM", "BGNBDFit", "BGNBDParams", "BadPurchase", "ClvReport", "GammaGammaFit",
    "GammaGammaParams", "Outlook", "Purchase", "PurchaseLog", "analyse",
    "bgnbd_log_likelihood", "clv", "customer_rfm", "expected_purchases",
    "expected_purchases_new", "expected_spend", "fit_bgnbd", "fit_gamma_gamma",
    "gamma_gamma_log_likelihood", "outlook", "p_alive", "p_no_purchase", "read_purchases",
    "simulate_bgnbd", "summarize",
]
