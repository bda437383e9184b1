"""Maximum likelihood for the CLV models: the search for the parameters (in log space, within a
box whose edge stands for a limit of the model) and their standard errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize

FloatArray = npt.NDArray[np.float64]
LOG_BOUND = 25.0  # parameters are searched within e^-25 .. e^25
LIMIT = 18.0  # a parameter beyond e^±18 (6.6e7) stands for a limit of the model
# so does one beyond e^±12 (1.6e5) that the data does not pin down (no positive-definite
# information): along a flat ridge towards a limit, where the search stops depends on the
# optimiser's version, not on the data
FAR = 12.0


def floats(value: npt.ArrayLike) -> FloatArray:
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True)
class Optimum:
    theta: FloatArray
    at_limit: tuple[int, ...]  # indices of parameters at the edge of the search box
    log_likelihood: float
    converged: bool
    message: str
    std_errors: FloatArray | None


def maximise(terms: Callable[[FloatArray, bool], tuple[FloatArray, FloatArray | None]],
             starts: list[FloatArray]) -> Optimum:
    """Maximise a sum of log-likelihood terms over log-parameters with L-BFGS-B."""
    n = len(terms(starts[0], False)[0])

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        ll, jac = terms(theta, True)
        assert jac is not None
        total = float(np.sum(ll))
        if not math.isfinite(total):
            return math.inf, np.zeros_like(theta)
        return -total / n, floats(-np.sum(jac, axis=0) / n)

    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(starts[0])
    best: Any = None
    for start in starts:
        result = optimize.minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                                   options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9})
        if best is not None and abs(result.fun - best.fun) <= 1e-10 * max(1.0, abs(best.fun)):
            break  # two starts agree: that is the optimum
        if best is None or result.fun < best.fun:
            best = result
    theta = floats(best.x)
    at_limit = tuple(int(i) for i in np.flatnonzero(np.abs(theta) > LIMIT))
    # L-BFGS-B may end on "ABNORMAL" when rounding stops the line search at the optimum:
    # then the gradient decides. Where the likelihood keeps rising towards a limit (e.g.
    # a, b -> infinity: everyone has the same dropout probability), the search ends far out
    # or at the edge of the box; that limit is the fit, with no standard errors.
    slope = objective(theta)[1]  # of -log-likelihood; at an edge only the inward part counts
    slope = np.where(theta > LOG_BOUND - 1e-3, np.maximum(slope, 0.0), slope)
    slope = np.where(theta < -LOG_BOUND + 1e-3, np.minimum(slope, 0.0), slope)
    converged = bool(best.success) or float(np.max(np.abs(slope))) < 1e-5
    message = "converged" if converged else str(best.message)
    errors = std_errors(objective, theta, n) if converged and not at_limit else None
    if converged and errors is None and not at_limit:
        at_limit = tuple(int(i) for i in np.flatnonzero(np.abs(theta) > FAR))
    return Optimum(theta, at_limit, -float(best.fun) * n, converged, message, errors)


def std_errors(objective: Callable[[FloatArray], tuple[float, FloatArray]],
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
    return floats(np.exp(theta) * np.sqrt(np.diag(cov)))
