"""Gamma-Gamma (Fader, Hardie & Lee 2005): the spend model, its fit and the expected value of
a customer's future purchases (see clv.py for the model)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from sopkit._stats.mle import FloatArray, floats, maximise


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
        return cls(x, m, floats(xu), inv.reshape(x.shape), floats(np.log(m)),
                   floats(np.log(x)))


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
        return floats(ll), None
    dg = special.digamma
    dg_total = dg(px_u + q)[d.inv]
    d_p = d.x * (dg_total - dg(px_u)[d.inv] + d.log_m + d.log_x - ln_total)
    d_q = dg_total - dg(q) + math.log(gamma) - ln_total
    d_gamma = q / gamma - (px + q) / (gamma + d.x * d.m)
    return floats(ll), floats(np.stack([d_p * p, d_q * q, d_gamma * gamma], axis=-1))


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
    xb, mb = (np.ascontiguousarray(v) for v in np.broadcast_arrays(floats(x), floats(m)))
    return _gg_terms(theta, _Spends.of(xb, mb), grad=False)[0]


def fit_gamma_gamma(x: npt.ArrayLike, m: npt.ArrayLike) -> GammaGammaFit:
    """Fit the Gamma-Gamma spend model on the customers with repeat purchases of value > 0."""
    xa, ma = floats(x), floats(m)
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

    opt = maximise(terms, starts)
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
    xb, mb = np.broadcast_arrays(floats(x), floats(m))
    mb = np.where(xb > 0, mb, 0.0)
    denom = p * xb + q - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        value = p * (gamma + xb * mb) / denom
    return floats(np.where(denom > 0, value, np.nan))
