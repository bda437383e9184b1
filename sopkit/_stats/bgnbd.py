"""BG/NBD (Fader, Hardie & Lee 2005): the likelihood, the fit, P(alive), expected purchases,
one customer's outlook, and draws from the model (see clv.py for the model)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import integrate, special

from sopkit._stats.mle import FloatArray, floats, maximise

_SERIES_MAX_TERMS = 20_000
_SERIES_MAX_Z = 0.995  # beyond this the series converges too slowly: integrate instead
_SERIES_EPS = 1e-16


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
    stopped before the gradient was flat. `at_limit` names parameters that ran beyond e^±18
    (or beyond e^±12 with no standard errors):
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
        return cls(x, t_x, T, floats(xu), inv.reshape(x.shape))


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
        return floats(ll), None
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
    return floats(ll), floats(jac)


def bgnbd_log_likelihood(params: BGNBDParams, x: npt.ArrayLike, t_x: npt.ArrayLike,
                         T: npt.ArrayLike) -> FloatArray:
    """Each customer's BG/NBD log-likelihood (sum it for the model's)."""
    theta = np.log(np.array(params.as_tuple(), dtype=np.float64))
    xb, txb, tb = (np.ascontiguousarray(v) for v in
                   np.broadcast_arrays(floats(x), floats(t_x), floats(T)))
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


def fit_bgnbd(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> BGNBDFit:
    """Fit the BG/NBD model by maximum likelihood (several starts, the best kept)."""
    xa, txa, ta = floats(x), floats(t_x), floats(T)
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

    opt = maximise(terms, starts)
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
    xa, txa, ta = np.broadcast_arrays(floats(x), floats(t_x), floats(T))
    repeat = xa > 0
    xs = np.where(repeat, xa, 1.0)
    log_odds = (math.log(a) - np.log(b + xs - 1)
                + (r + xa) * (np.log(alpha + ta) - np.log(alpha + txa)))
    return floats(np.where(repeat, special.expit(-log_odds), 1.0))


def p_no_purchase(params: BGNBDParams, t: npt.ArrayLike, x: npt.ArrayLike,
                  t_x: npt.ArrayLike, T: npt.ArrayLike) -> FloatArray:
    """P(no purchase in the next `t` units | x, t_x, T): gone, or alive and quiet.

    1 - P(alive) + P(alive) · ((α+T)/(α+T+t))^(r+x), since an alive customer's rate is then
    Gamma(r+x, α+T). Unlike `p_alive` it falls below 1 for customers with x = 0 too.
    """
    r, alpha, _, _ = params.as_tuple()
    tb, xb, txb, tab = np.broadcast_arrays(floats(t), floats(x), floats(t_x), floats(T))
    if np.any(tb < 0):
        raise ValueError("the horizon t must be >= 0")
    buys = -np.expm1(-(r + xb) * np.log1p(tb / (alpha + tab)))  # P(a purchase | alive)
    return floats(1.0 - p_alive(params, xb, txb, tab) * buys)


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

    log_shape_c = math.log(shape * c)

    def integrand(v: float) -> float:
        p = math.exp(v)
        # ln(1 - (1 + pc)^-(r+x)), summed in logs with p^(a-1): with a tiny `a` (a fit at a
        # limit) the integrand reaches down to ln p near -60/a, where p^(a-1) alone overflows
        # and the gain alone underflows. Below shape·pc = e^-30 the gain is shape·pc to 1e-13.
        if log_shape_c + v < -30.0:
            log_gain = log_shape_c + v
        else:
            log_gain = math.log(-math.expm1(-shape * math.log1p(p * c)))
        return math.exp(log_gain + (a - 1) * v + (n - 1) * math.log1p(-p) - log_norm)  # dp = p dv

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
    # With a small `a` the mass spreads over ln p in (-60/a, 0) like e^(a·ln p): points a
    # factor 3 apart down there keep the quadrature's subintervals on the scale of the decay.
    ladder = {low / 3.0**k for k in range(1, 40) if low / 3.0**k < -1.0}
    inner = sorted(v for v in marks | ladder if low < v < high - 1e-9)
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
    return floats(value), trusted


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
    return floats(np.where(t > 0, np.maximum(value, 0.0), 0.0))


def expected_purchases(params: BGNBDParams, t: npt.ArrayLike, x: npt.ArrayLike,
                       t_x: npt.ArrayLike, T: npt.ArrayLike) -> FloatArray:
    """Expected purchases in the next `t` units after T, given the history (x, t_x, T)."""
    tb, xb, txb, tab = np.broadcast_arrays(floats(t), floats(x), floats(t_x), floats(T))
    if np.any(tb < 0):
        raise ValueError("the horizon t must be >= 0")
    flat = [np.ascontiguousarray(v).reshape(-1) for v in (tb, xb, txb, tab)]
    alive = _alive_expectation(params, flat[0], flat[1], flat[3])
    return floats((p_alive(params, flat[1], flat[2], flat[3]) * alive).reshape(tb.shape))


def expected_purchases_new(params: BGNBDParams, t: npt.ArrayLike) -> FloatArray:
    """Expected repeat purchases in the first `t` units after a customer's first purchase."""
    tb = floats(t)
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


def simulate_bgnbd(params: BGNBDParams, T: npt.ArrayLike,
                   rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """Draw (x, t_x) for customers of ages T from the BG/NBD model (for tests and checks)."""
    ta = floats(T)
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
