"""CLV models: BG/NBD and Gamma-Gamma against the published CDNOW fits, brute-force numerics,
simulated data, and the `sopkit clv` command."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import math
import sys
import warnings
from pathlib import Path

import mpmath
import numpy as np
import pytest
from scipy import integrate, optimize, special, stats
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app
from sopkit._stats import bgnbd, clv, gammagamma

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "clv"
SAMPLE = DATA / "cdnow_sample.jsonl.gz"
MASTER = ROOT / "data" / "cdnow" / "events.jsonl.gz"
CAL_END = dt.date(1997, 9, 30)  # the end of week 39 of 1997, as in the papers

# Published estimates for the CDNOW 1/10th sample (2,357 customers, 39 calibration weeks).
PAPER_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # FHL 2005, Mkt Sci
PAPER_BGNBD_LL = -9582.4
PAPER_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}  # FHL 2005, JMR "RFM and CLV"


@pytest.fixture(scope="module")
def sample() -> clv.RFM:
    log = clv.read_purchases(SAMPLE)
    assert not log.bad
    return clv.summarize(log.purchases, CAL_END, "weeks")


@pytest.fixture(scope="module")
def sample_fit(sample: clv.RFM) -> clv.BGNBDFit:
    return clv.fit_bgnbd(sample.x, sample.t_x, sample.T)


@pytest.fixture(scope="module")
def sample_spend(sample: clv.RFM) -> clv.GammaGammaFit:
    return clv.fit_gamma_gamma(sample.x, sample.m)


# --------------------------------------------------------------------------- the test data


def test_sample_events_are_master_lines() -> None:
    """The shipped 1/10th sample is 6,919 lines of data/cdnow/events.jsonl.gz, unchanged."""
    with gzip.open(MASTER, "rt", encoding="utf-8") as fh:
        master = set(fh)
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        lines = fh.readlines()
    assert len(lines) == 6919
    assert all(line in master for line in lines)
    assert len({json.loads(line)["customer_id"] for line in lines}) == 2357


def test_summary_reproduces_the_published_rfm_table(sample: clv.RFM) -> None:
    """x, t_x, T and mean repeat spend match Fader & Hardie's own CDNOW summary, customer by
    customer (same-day purchases merged, weeks from the first purchase to 1997-09-30)."""
    with gzip.open(DATA / "cdnow_sample_summary.csv.gz", "rt", encoding="utf-8") as fh:
        published = {row["customer_id"]: row for row in csv.DictReader(fh)}
    assert set(sample.customer_ids) == set(published)
    for i, customer in enumerate(sample.customer_ids):
        row = published[customer]
        assert sample.x[i] == int(row["x"]), customer
        assert sample.t_x[i] == pytest.approx(float(row["t_x"]), abs=0.006), customer
        assert sample.T[i] == pytest.approx(float(row["T"]), abs=0.006), customer
        assert sample.m[i] == pytest.approx(float(row["zbar"]), abs=0.006), customer


# --------------------------------------------------------------------------- summaries


def _p(customer: str, day: str, amount: float) -> clv.Purchase:
    return clv.Purchase(customer, dt.date.fromisoformat(day), amount)


def test_summary_merges_same_day_and_splits_the_holdout() -> None:
    """Same-day purchases are one, values added; later ones count as holdout; late joiners
    are left out; ages and recencies are in the chosen unit."""
    purchases = [
        _p("甲", "2024-01-01", 10.0), _p("甲", "2024-01-08", 5.0), _p("甲", "2024-01-08", 7.0),
        _p("甲", "2024-01-15", 30.0), _p("甲", "2024-02-05", 1.0), _p("乙", "2024-01-29", 4.0),
        _p("丙", "2024-02-01", 9.0),
    ]
    rfm = clv.summarize(purchases, dt.date(2024, 1, 29), "weeks")
    assert rfm.customer_ids == ("乙", "甲")
    assert rfm.late_customers == 1
    assert rfm.x.tolist() == [0, 2]
    assert rfm.t_x.tolist() == [0, 2]
    assert rfm.T.tolist() == [0, 4]
    assert rfm.m.tolist() == [0, 21.0]  # (5 + 7 + 30) / 2 purchase days
    assert rfm.holdout_x.tolist() == [0, 1]
    assert rfm.holdout_end == dt.date(2024, 2, 5)
    assert rfm.holdout_length == 1.0
    days = clv.summarize(purchases, dt.date(2024, 1, 29), "days")
    assert days.T.tolist() == [0, 28] and days.t_x.tolist() == [0, 14]


def test_customer_rfm_agrees_with_the_summary(sample: clv.RFM) -> None:
    """The per-customer helper gives the same (x, t_x, T) as the batch summary."""
    log = clv.read_purchases(SAMPLE)
    by_customer: dict[str, list[dt.date]] = {}
    for purchase in log.purchases:
        by_customer.setdefault(purchase.customer_id, []).append(purchase.day)
    for i in range(0, len(sample), 97):
        customer = sample.customer_ids[i]
        x, t_x, T = clv.customer_rfm(by_customer[customer], CAL_END, "weeks")
        assert (x, t_x, T) == (sample.x[i], sample.t_x[i], sample.T[i])
    with pytest.raises(ValueError, match="no purchase on or before"):
        clv.customer_rfm([dt.date(1998, 1, 1)], CAL_END)


def test_read_purchases_sets_bad_records_aside(tmp_path: Path) -> None:
    """Records without a usable amount, ts or customer are kept aside with a reason; other
    event types are counted and skipped; CSV with Chinese ids reads."""
    path = tmp_path / "history.csv"
    path.write_text(
        "customer_id,type,ts,amount\n"
        "张三,purchase,2024-01-01T10:00:00,12.5\n"
        "张三,purchase,2024-01-05T10:00:00+08:00,7\n"
        "李四,visit,2024-01-02T10:00:00,\n"
        "李四,purchase,2024-01-03,abc\n"
        "王五,purchase,2024-01-03,-1\n"
        "王五,purchase,yesterday,5\n"
        "王五,purchase,2024-01-04,\n"
        ",purchase,2024-01-04,3\n", encoding="utf-8")
    log = clv.read_purchases(path)
    assert log.purchases == [_p("张三", "2024-01-01", 12.5), _p("张三", "2024-01-05", 7.0)]
    assert log.other_events == 1 and log.records == 8
    reasons = [(bad.line, bad.kind) for bad in log.bad]
    assert reasons == [(5, "bad 'amount'"), (6, "bad 'amount'"), (7, "bad 'ts'"),
                       (8, "missing 'amount'"), (9, "missing 'customer_id'")]
    assert log.bad[0].reason == "bad 'amount' 'abc': not a number"
    assert "--amount-field" in log.bad[3].reason


def test_bad_summaries_are_refused() -> None:
    """Impossible histories (t_x > T, recency without purchases, fractions) are errors."""
    with pytest.raises(ValueError, match="t_x <= T"):
        clv.fit_bgnbd([1, 2], [3.0, 1.0], [2.0, 5.0])
    with pytest.raises(ValueError, match="x = 0 must have t_x = 0"):
        clv.fit_bgnbd([0, 2], [1.0, 1.0], [2.0, 5.0])
    with pytest.raises(ValueError, match="whole numbers"):
        clv.fit_bgnbd([0.5, 2], [0.0, 1.0], [2.0, 5.0])
    with pytest.raises(ValueError, match="unknown time unit"):
        clv.summarize([_p("a", "2024-01-01", 1.0)], unit="months")


# --------------------------------------------------------------------------- BG/NBD


def test_bgnbd_reproduces_the_published_cdnow_fit(sample_fit: clv.BGNBDFit) -> None:
    """On the CDNOW sample the fit is the paper's: r 0.243, α 4.414, a 0.793, b 2.426 (±1%)
    and log-likelihood -9582.4."""
    assert sample_fit.converged
    for name, value in PAPER_BGNBD.items():
        assert getattr(sample_fit.params, name) == pytest.approx(value, rel=0.01), name
    assert sample_fit.log_likelihood == pytest.approx(PAPER_BGNBD_LL, abs=0.1)
    assert sample_fit.std_errors is not None
    assert 0 < sample_fit.std_errors.r < sample_fit.params.r


def _numeric_branches(params: clv.BGNBDParams, x: int, t_x: float,
                      T: float) -> tuple[float, float]:
    """The two branches of the individual-level likelihood (still alive at T; dropped out
    after the last purchase) averaged over λ ~ Gamma(r, α) and p ~ Beta(a, b) by Gauss
    quadrature (generalised Laguerre in λ, Jacobi in p), using no closed form."""
    u, wu = special.roots_genlaguerre(200, params.r - 1)  # ∫ u^(r-1) e^(-u) f(u) du
    v, wv = special.roots_jacobi(80, params.b - 1, params.a - 1)  # ∫ (1-v)^(b-1) (1+v)^(a-1)
    lam = u / params.alpha
    p = (1 + v) / 2
    wu = wu / special.gamma(params.r)
    wv = wv / np.sum(wv)
    alive = float(np.sum(wu * lam**x * np.exp(-lam * T))) * float(np.sum(wv * (1 - p) ** x))
    dropped = 0.0
    if x > 0:
        dropped = (float(np.sum(wu * lam**x * np.exp(-lam * t_x)))
                   * float(np.sum(wv * p * (1 - p) ** (x - 1))))
    return alive, dropped


def _numeric_likelihood(params: clv.BGNBDParams, x: int, t_x: float, T: float) -> float:
    return sum(_numeric_branches(params, x, t_x, T))


@pytest.mark.parametrize("params", [clv.BGNBDParams(r=1.3, alpha=2.5, a=1.6, b=2.2),
                                    clv.BGNBDParams(r=0.6, alpha=4.0, a=0.8, b=2.4)],
                         ids=["smooth", "cdnow-like"])
def test_log_likelihood_matches_numerical_integration(params: clv.BGNBDParams) -> None:
    """The closed-form log-likelihood equals a numerical integral of the model's definition."""
    cases = [(0, 0.0, 4.0), (1, 0.5, 3.0), (2, 2.5, 6.0), (3, 1.0, 5.0), (5, 4.9, 5.0)]
    x, t_x, T = (np.array(col, dtype=float) for col in zip(*cases, strict=True))
    closed = clv.bgnbd_log_likelihood(params, x, t_x, T)
    for i, case in enumerate(cases):
        assert closed[i] == pytest.approx(math.log(_numeric_likelihood(params, *case)),
                                          abs=1e-8), case


def test_p_no_purchase_matches_numerical_integration() -> None:
    """P(no purchase in the next t) equals the posterior mass of "dropped out, or alive and
    quiet until T + t", computed by numerical integration."""
    params = clv.BGNBDParams(r=0.6, alpha=4.0, a=0.8, b=2.4)
    for x, t_x, T in [(0, 0.0, 4.0), (0, 0.0, 40.0), (1, 0.5, 3.0), (4, 20.0, 39.0)]:
        for t in (1.0, 13.0, 52.0):
            alive, dropped = _numeric_branches(params, x, t_x, T)
            quiet_alive, _ = _numeric_branches(params, x, t_x, T + t)
            truth = (quiet_alive + dropped) / (alive + dropped)
            ours = clv.p_no_purchase(params, t, x, t_x, T)[()]
            assert ours == pytest.approx(truth, rel=1e-8), (x, t_x, T, t)
            assert clv.outlook(params, x, t_x, T, t).p_no_purchase == pytest.approx(ours)
    silent = clv.p_no_purchase(params, 52.0, 0, 0.0, np.array([1.0, 39.0, 78.0]))
    assert np.all(np.diff(silent) > 0) and np.all(silent < 1)


def test_analytic_gradients_match_finite_differences(sample: clv.RFM) -> None:
    """The gradients the optimiser follows agree with finite differences of the likelihood."""
    histories = bgnbd._Histories.of(sample.x, sample.t_x, sample.T)
    theta = np.log([0.4, 6.0, 0.9, 1.7])

    def total(th: np.ndarray) -> float:
        return float(np.sum(bgnbd._bgnbd_terms(th, histories, False)[0]))

    def grad(th: np.ndarray) -> np.ndarray:
        jac = bgnbd._bgnbd_terms(th, histories, True)[1]
        assert jac is not None
        return np.asarray(np.sum(jac, axis=0))

    numeric = optimize.approx_fprime(theta, total, 1e-6)
    assert grad(theta) == pytest.approx(numeric, rel=1e-4, abs=1e-3)
    use = sample.x > 0
    spends = gammagamma._Spends.of(sample.x[use], sample.m[use])
    phi = np.log([4.0, 3.0, 12.0])

    def gg_total(th: np.ndarray) -> float:
        return float(np.sum(gammagamma._gg_terms(th, spends, False)[0]))

    gg_jac = gammagamma._gg_terms(phi, spends, True)[1]
    assert gg_jac is not None
    assert np.sum(gg_jac, axis=0) == pytest.approx(optimize.approx_fprime(phi, gg_total, 1e-6),
                                                   rel=1e-4, abs=1e-3)


def test_fit_recovers_parameters_of_simulated_customers() -> None:
    """Customers simulated from known parameters are fitted back within 3 standard errors."""
    true = clv.BGNBDParams(r=0.5, alpha=8.0, a=0.8, b=2.5)
    rng = np.random.default_rng(20260101)
    T = rng.uniform(20, 52, 6000)
    x, t_x = clv.simulate_bgnbd(true, T, rng)
    fit = clv.fit_bgnbd(x, t_x, T)
    assert fit.converged and fit.std_errors is not None
    for name in ("r", "alpha", "a", "b"):
        error = abs(getattr(fit.params, name) - getattr(true, name))
        assert error < 3 * getattr(fit.std_errors, name), name
    assert fit.params.r == pytest.approx(true.r, rel=0.1)
    assert fit.params.alpha == pytest.approx(true.alpha, rel=0.1)
    # The maximum is a maximum: the true parameters fit this sample no better.
    assert fit.log_likelihood >= float(np.sum(clv.bgnbd_log_likelihood(true, x, t_x, T)))


def test_fit_on_the_full_master_history() -> None:
    """Regression: all 23,570 CDNOW customers give parameters close to the sample's."""
    log = clv.read_purchases(MASTER)
    weeks = clv.summarize(log.purchases, CAL_END, "weeks")
    fit = clv.fit_bgnbd(weeks.x, weeks.t_x, weeks.T)
    assert (len(weeks), weeks.purchases) == (23570, 69659)
    assert fit.converged
    expected = {"r": 0.25162, "alpha": 4.7889, "a": 0.72343, "b": 2.1611}
    for name, value in expected.items():
        assert getattr(fit.params, name) == pytest.approx(value, rel=0.005), name
    spend = clv.fit_gamma_gamma(weeks.x, weeks.m)
    alive = clv.p_alive(fit.params, weeks.x, weeks.t_x, weeks.T)
    assert np.all(alive[weeks.x == 0] == 1.0) and np.all((alive > 0) & (alive <= 1))
    assert spend.converged and spend.excluded == 1  # one repeat buyer spent 0.00
    for name, value in {"p": 6.2754, "q": 3.6244, "gamma": 14.984}.items():
        assert getattr(spend.params, name) == pytest.approx(value, rel=0.005), name


# --------------------------------------------------------------------------- predictions


def test_p_alive_behaves(sample_fit: clv.BGNBDFit) -> None:
    """P(alive) is 1 without repeat purchases, rises with recency, falls with age and with
    silence after many purchases, and stays in [0, 1] without overflow."""
    params = sample_fit.params
    recency = np.linspace(0.5, 38.86, 60)
    by_recency = clv.p_alive(params, 3, recency, 38.86)
    assert np.all(np.diff(by_recency) > 0)
    by_age = clv.p_alive(params, 3, 10.0, np.linspace(10, 100, 50))
    assert np.all(np.diff(by_age) < 0)
    assert clv.p_alive(params, 0, 0.0, [1.0, 39.0, 500.0]).tolist() == [1.0, 1.0, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extreme = clv.p_alive(params, [500, 500, 1], [1.0, 100.0, 0.0], [100.0, 100.0, 1e6])
    assert extreme[0] == pytest.approx(0.0, abs=1e-300)
    assert 0.9 < extreme[1] <= 1.0
    assert 0.0 <= extreme[2] < 1e-3
    assert clv.p_alive(params, 2, 30.43, 38.86)[()] == pytest.approx(
        1 / (1 + 0.793 / (2.426 + 1) * ((4.414 + 38.86) / (4.414 + 30.43)) ** 2.243), rel=0.01)


def _paper_conditional_expectation(p: clv.BGNBDParams, t: float, x: int, t_x: float,
                                   T: float) -> float:
    """Equation (10) of the BG/NBD paper, evaluated directly with scipy's hyp2f1."""
    z = t / (p.alpha + T + t)
    bracket = 1 - ((p.alpha + T) / (p.alpha + T + t)) ** (p.r + x) * special.hyp2f1(
        p.r + x, p.b + x, p.a + p.b + x - 1, z)
    odds = (p.a / (p.b + x - 1) * ((p.alpha + T) / (p.alpha + t_x)) ** (p.r + x)
            if x > 0 else 0.0)
    return float((p.a + p.b + x - 1) / (p.a - 1) * bracket / (1 + odds))


def test_expected_purchases_match_the_paper_formula(sample_fit: clv.BGNBDFit) -> None:
    """For ordinary customers the expectation equals the paper's hypergeometric formula."""
    params = sample_fit.params
    for x, t_x, T in [(0, 0.0, 38.86), (2, 30.43, 38.86), (7, 35.0, 37.0), (15, 5.0, 38.0)]:
        for t in (1.0, 39.0, 104.0):
            ours = clv.expected_purchases(params, t, x, t_x, T)[()]
            assert ours == pytest.approx(_paper_conditional_expectation(params, t, x, t_x, T),
                                         rel=1e-9), (x, t_x, T, t)


def _mp_expectation(p: clv.BGNBDParams, t: float, x: int, t_x: float, T: float) -> float:
    """The paper's equation (10) in 50-digit arithmetic (mpmath); a = 1 as the mean of the
    values just either side (the formula's removable singularity)."""

    def at(a: mpmath.mpf) -> mpmath.mpf:
        r, alpha, b = mpmath.mpf(p.r), mpmath.mpf(p.alpha), mpmath.mpf(p.b)
        tt, big_t = mpmath.mpf(t), mpmath.mpf(T)
        z = tt / (alpha + big_t + tt)
        bracket = 1 - ((alpha + big_t) / (alpha + big_t + tt)) ** (r + x) * mpmath.hyp2f1(
            r + x, b + x, a + b + x - 1, z)
        odds = (a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x)
                if x > 0 else 0)
        return (a + b + x - 1) / (a - 1) * bracket / (1 + odds)

    with mpmath.workdps(50):
        if p.a == 1.0:
            eps = mpmath.mpf("1e-25")
            return float((at(1 - eps) + at(1 + eps)) / 2)
        return float(at(mpmath.mpf(p.a)))


@pytest.mark.parametrize("a", [0.4, 1.0, 2.5])
def test_expected_purchases_stay_accurate_for_heavy_buyers(a: float) -> None:
    """Where scipy's hyp2f1 gives NaN (hundreds of purchases, far horizons), the expectation
    still equals the paper's formula in 50-digit arithmetic, for a below, at and above 1."""
    params = clv.BGNBDParams(r=0.8, alpha=20.0, a=a, b=3.0)
    cases = [(x, T, t) for x, T in [(300, 400.0), (2000, 400.0), (0, 0.0), (40, 5.0)]
             for t in (0.2, 30.0, 365.0, 3000.0)]
    cases += [(0, 0.0, 1e5), (5, 10.0, 1e6), (300, 400.0, 1e7)]  # far beyond α + T
    for x, T, t in cases:
        t_x = T * 0.9 if x else 0.0
        ours = clv.expected_purchases(params, t, x, t_x, T)[()]
        assert ours == pytest.approx(_mp_expectation(params, t, x, t_x, T), rel=1e-9), (x, T, t)
        single = clv.outlook(params, x, t_x, T, t)
        assert single.expected_purchases == pytest.approx(ours, rel=1e-9)
        assert single.p_alive == pytest.approx(clv.p_alive(params, x, t_x, T)[()], rel=1e-12)
    # The last horizon is too far for the series: the quadrature fallback answered it.
    z = np.array([1e5 / (params.alpha + 1e5)])
    assert not bgnbd._alive_series(z, np.array([a + 2.0]), a, a + 2.0 - 0.8)[2][0]


def _mp_alive_integral(p: clv.BGNBDParams, t: float, x: int, T: float) -> float:
    """E[purchases in t | alive at T] as a 30-digit integral over ln p (mpmath), between
    breakpoints at the bulk of Beta(a, b+x) and at the step of (1 + pc)^-(r+x)."""
    with mpmath.workdps(30):
        s, c = mpmath.mpf(p.r) + x, mpmath.mpf(t) / (p.alpha + T)
        a, n = mpmath.mpf(p.a), mpmath.mpf(p.b) + x
        log_norm = mpmath.log(mpmath.beta(a, n))

        def f(v: mpmath.mpf) -> mpmath.mpf:
            q = mpmath.exp(v)
            return (1 - (1 + q * c) ** -s) * mpmath.exp((a - 1) * v + (n - 1) * mpmath.log1p(-q)
                                                        - log_norm)

        mid, sd = mpmath.log(a / (a + n)), 1 / mpmath.sqrt(a)
        marks = {mid - 40 * sd - 80 / a, mid - 8 * sd, mid, mid + 8 * sd, -mpmath.log(c),
                 -mpmath.log(c * s), mpmath.mpf(0)}
        return float(mpmath.quad(f, sorted(m for m in marks if m <= 0)))


@pytest.mark.parametrize("params", [
    clv.BGNBDParams(r=0.3, alpha=5.0, a=150.0, b=400.0),
    clv.BGNBDParams(r=0.26, alpha=4.1, a=1.08e6, b=4.1e6),
    clv.BGNBDParams(r=120.0, alpha=400.0, a=0.8, b=2.0),
    clv.BGNBDParams(r=7e10, alpha=6e10, a=0.35, b=2.86),
], ids=["large-a", "a-at-limit", "large-r", "r-at-limit"])
def test_expected_purchases_stay_accurate_at_the_limits(params: clv.BGNBDParams) -> None:
    """Fits that end with huge parameters (few customers) still predict correctly, where the
    series would overflow or cancel: equal to a 30-digit integral, batch and one by one."""
    for x, T, t in [(0, 39.0, 52.0), (3, 30.0, 52.0), (1, 0.5, 500.0)]:
        t_x = 0.9 * T if x else 0.0
        alive = clv.p_alive(params, x, t_x, T)[()]
        truth = alive * _mp_alive_integral(params, t, x, T)
        assert clv.expected_purchases(params, t, x, t_x, T)[()] == pytest.approx(truth,
                                                                               rel=1e-7)
        assert clv.outlook(params, x, t_x, T, t).expected_purchases == pytest.approx(
            truth, rel=1e-7)


@pytest.mark.parametrize("a", [3.35e-6, 1e-8])
def test_expected_purchases_when_the_dropout_shape_reaches_zero(a: float) -> None:
    """A fit whose dropout shape `a` went to its lower limit (seen refitting a 400-customer
    CDNOW sample) predicts as if nobody drops out, where the integral used to overflow."""
    params = clv.BGNBDParams(r=1.906, alpha=31.1, a=a, b=229848.3)
    for x, T, t in [(0, 3.0, 12.857), (3, 20.0, 12.8), (10, 50.0, 30.0), (2, 10.0, 5000.0)]:
        t_x = 0.9 * T if x else 0.0
        alive = clv.p_alive(params, x, t_x, T)[()]
        never_drop = alive * (params.r + x) / (params.alpha + T) * t  # mean dropout ~1e-11
        assert clv.expected_purchases(params, t, x, t_x, T)[()] == pytest.approx(
            never_drop, rel=1e-6)
        assert clv.outlook(params, x, t_x, T, t).expected_purchases == pytest.approx(
            never_drop, rel=1e-6)


def test_new_customer_expectation_matches_simulation() -> None:
    """E[X(t)] and P(X(t) = 0) for a new customer match 200,000 simulated customers."""
    params = clv.BGNBDParams(r=0.25, alpha=4.4, a=0.8, b=2.4)
    rng = np.random.default_rng(7)
    horizon = np.full(200_000, 52.0)
    x, _ = clv.simulate_bgnbd(params, horizon, rng)
    mean, error = float(np.mean(x)), float(np.std(x) / math.sqrt(len(x)))
    assert clv.expected_purchases_new(params, 52.0)[()] == pytest.approx(mean, abs=4 * error)
    quiet = float(np.mean(x == 0))
    assert clv.p_no_purchase(params, 52.0, 0, 0.0, 0.0)[()] == pytest.approx(
        quiet, abs=4 * math.sqrt(quiet * (1 - quiet) / len(x)))


def test_outlook_is_cheap_and_agrees_with_the_vectorised_functions(
        sample: clv.RFM, sample_fit: clv.BGNBDFit) -> None:
    """The per-customer outlook gives the batch P(alive), expected purchases and
    P(no purchase)."""
    params = sample_fit.params
    alive = clv.p_alive(params, sample.x, sample.t_x, sample.T)
    expected = clv.expected_purchases(params, 26.0, sample.x, sample.t_x, sample.T)
    quiet = clv.p_no_purchase(params, 26.0, sample.x, sample.t_x, sample.T)
    for i in range(0, len(sample), 41):
        one = clv.outlook(params, int(sample.x[i]), float(sample.t_x[i]), float(sample.T[i]),
                          26.0)
        assert one.p_alive == pytest.approx(alive[i], rel=1e-12)
        assert one.expected_purchases == pytest.approx(expected[i], rel=1e-10)
        assert one.p_no_purchase == pytest.approx(quiet[i], rel=1e-12)
    assert clv.outlook(params, 3, 1.0, 10.0, 0.0).expected_purchases == 0.0
    with pytest.raises(ValueError, match="bad customer summary"):
        clv.outlook(params, 1, 5.0, 4.0, 10.0)


# --------------------------------------------------------------------------- spend and CLV


def test_gamma_gamma_reproduces_the_published_cdnow_fit(
        sample_spend: clv.GammaGammaFit) -> None:
    """On the CDNOW sample's 946 repeat buyers: p 6.25, q 3.74, γ 15.44 (±1%)."""
    assert sample_spend.converged and sample_spend.customers == 946
    for name, value in PAPER_GG.items():
        assert getattr(sample_spend.params, name) == pytest.approx(value, rel=0.01), name
    assert abs(sample_spend.correlation) < 0.2  # the model's independence assumption holds


def test_gamma_gamma_density_matches_integration() -> None:
    """The Gamma-Gamma log density of a mean spend equals an integral over ν."""
    params = clv.GammaGammaParams(p=6.0, q=3.5, gamma=15.0)
    for x, m in [(1, 12.0), (3, 40.0), (10, 7.5)]:

        def f(nu: float, x: int = x, m: float = m) -> float:
            total = stats.gamma.pdf(x * m, params.p * x, scale=1 / nu) * x  # density of m
            return float(total * stats.gamma.pdf(nu, params.q, scale=1 / params.gamma))

        value = integrate.quad(f, 0, math.inf, epsabs=0, epsrel=1e-11, limit=200)[0]
        closed = clv.gamma_gamma_log_likelihood(params, x, m)[()]
        assert closed == pytest.approx(math.log(value), abs=1e-7), (x, m)


def test_gamma_gamma_recovers_simulated_parameters() -> None:
    """Spend simulated from known p, q, γ is fitted back within 3 standard errors."""
    p, q, gamma = 6.0, 4.0, 15.0
    rng = np.random.default_rng(11)
    x = rng.integers(1, 8, 4000).astype(float)
    nu = rng.gamma(q, 1 / gamma, x.size)
    m = rng.gamma(p * x, 1 / nu) / x
    fit = clv.fit_gamma_gamma(x, m)
    assert fit.converged and fit.std_errors is not None
    for name, value in {"p": p, "q": q, "gamma": gamma}.items():
        assert abs(getattr(fit.params, name) - value) < 3 * getattr(fit.std_errors, name), name


def test_expected_spend_weighs_history_against_the_population(
        sample_spend: clv.GammaGammaFit) -> None:
    """With no repeat purchases the expected spend is the population mean; the more
    purchases, the closer it moves to the customer's own mean."""
    params = sample_spend.params
    population = params.p * params.gamma / (params.q - 1)
    assert clv.expected_spend(params, 0, 99.0)[()] == pytest.approx(population)
    own = 80.0
    values = clv.expected_spend(params, np.array([1, 2, 5, 20, 200]), own)
    assert np.all(np.diff(values) > 0) and np.all(values < own) and values[0] > population
    assert values[-1] == pytest.approx(own, rel=0.01)
    bad = clv.GammaGammaParams(p=1.0, q=0.5, gamma=1.0)
    assert math.isnan(clv.expected_spend(bad, 0, 0.0)[()])


def test_clv_is_purchases_times_spend_and_discounting_lowers_it(
        sample: clv.RFM, sample_fit: clv.BGNBDFit, sample_spend: clv.GammaGammaFit) -> None:
    """Undiscounted CLV is expected purchases × expected spend; a discount rate lowers it,
    more for a higher rate, and never below the value of a year of purchases at that rate."""
    bg, gg = sample_fit.params, sample_spend.params
    args = (sample.x, sample.t_x, sample.T, sample.m)
    plain = clv.clv(bg, gg, *args, 52.0, "weeks")
    product = (clv.expected_purchases(bg, 52.0, sample.x, sample.t_x, sample.T)
               * clv.expected_spend(gg, sample.x, sample.m))
    assert plain == pytest.approx(product, rel=1e-12)
    low = clv.clv(bg, gg, *args, 52.0, "weeks", annual_discount_rate=0.05)
    high = clv.clv(bg, gg, *args, 52.0, "weeks", annual_discount_rate=0.25)
    assert np.all(high < low) and np.all(low < plain)
    assert np.all(high > plain / 1.25 * 0.999)  # nothing is discounted more than a full year
    in_days = clv.clv(bg.__class__(bg.r, bg.alpha * 7, bg.a, bg.b), gg, sample.x,
                      sample.t_x * 7, sample.T * 7, sample.m, 364.0, "days", 0.05)
    assert in_days == pytest.approx(low, rel=1e-9)


# --------------------------------------------------------------------------- the command


runner = CliRunner()


def test_cli_reports_the_published_parameters_and_writes_customers(tmp_path: Path) -> None:
    """`sopkit clv` prints the fitted parameters and writes one sorted row per customer."""
    out = tmp_path / "customers.jsonl"
    result = runner.invoke(app, ["clv", "--events", str(SAMPLE), "--calibration-end",
                                 "1997-09-30", "--customers", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("0.2426", "4.4136", "0.7929", "2.4259", "-9582.43", "6.2496", "3.7442",
                 "15.4435", "2357", "holdout check, 1997-10-01 to 1998-06-30 (39 weeks)"):
        assert text in result.output, text
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2357
    assert [r["customer_id"] for r in rows] == sorted(r["customer_id"] for r in rows)
    first = rows[0]
    assert first["customer_id"] == "cdnow-00004" and first["frequency"] == 2
    assert first["p_alive"] == pytest.approx(0.7266, abs=1e-3)
    expected = first["expected_purchases"] * first["expected_spend"]
    assert first["clv"] == pytest.approx(expected, rel=1e-5)
    assert all(0 <= r["p_alive"] <= 1 and 0 <= r["p_no_purchase"] <= 1 for r in rows)
    assert sum(r["holdout_purchases"] for r in rows) == 1882


def test_cli_jsonl_in_days_with_a_discount() -> None:
    """`--output jsonl` gives one JSON line; days rescale α; a discount lowers revenue."""
    base = ["clv", "--events", str(SAMPLE), "--calibration-end", "1997-09-30", "--output",
            "jsonl", "--unit", "days", "--horizon", "365d"]
    plain = json.loads(runner.invoke(app, base).output)
    discounted = json.loads(runner.invoke(app, [*base, "--discount-rate", "0.1"]).output)
    assert plain["bgnbd"]["alpha"] == pytest.approx(4.4136 * 7, rel=1e-3)
    assert plain["bgnbd"]["r"] == pytest.approx(0.2426, rel=1e-3)
    holdout = plain["holdout"]
    assert (holdout["end"], holdout["length"], holdout["actual"]) == ("1998-06-30", 273.0, 1882)
    assert holdout["actual_no_purchase"] == 1673  # of 2,357 customers, none bought again
    # The model's holdout forecasts are within 15% of what happened (docs/analytics.md).
    assert abs(holdout["predicted"] / holdout["actual"] - 1) < 0.15
    assert abs(holdout["predicted_no_purchase"] / holdout["actual_no_purchase"] - 1) < 0.15
    assert discounted["expected_revenue"] < plain["expected_revenue"]
    assert discounted["expected_purchases"] == plain["expected_purchases"]


def test_cli_sets_bad_records_aside(tmp_path: Path) -> None:
    """Unusable records are reported and written, masked, to --quarantine; the fit goes on."""
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        events = fh.read().splitlines()[:3000]
    events.append(json.dumps({"customer_id": "13812345678", "type": "purchase",
                              "ts": "1997-03-01", "amount": "十元"}, ensure_ascii=False))
    events.append(json.dumps({"customer_id": "x", "type": "visit", "ts": "1997-03-01"}))
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(events) + "\n", encoding="utf-8")
    jail = tmp_path / "bad.jsonl"
    result = runner.invoke(app, ["clv", "--events", str(history), "--quarantine", str(jail),
                                 "--output", "jsonl", "--calibration-end", "1997-09-30"])
    assert result.exit_code == 0, result.output
    assert "1 unusable record(s) skipped (bad 'amount': 1)" in result.stderr
    (entry,) = [json.loads(line) for line in jail.read_text(encoding="utf-8").splitlines()]
    assert entry["line"] == 3001 and entry["record"]["customer_id"] == "138****5678"
    summary = json.loads(result.stdout)
    assert (summary["quarantined"], summary["other_events"]) == (1, 1)


@pytest.mark.parametrize(("args", "message"), [
    (["--calibration-end", "30/09/1997"], "bad --calibration-end '30/09/1997'"),
    (["--horizon", "12h"], "use whole days or weeks"),
    (["--horizon", "soon"], "bad duration 'soon'"),
    (["--unit", "months"], "months"),
])
def test_cli_usage_errors_exit_2(args: list[str], message: str) -> None:
    """Bad option values are usage errors naming the problem."""
    result = runner.invoke(app, ["clv", "--events", str(SAMPLE), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_history_without_purchases_exits_1(tmp_path: Path) -> None:
    """A history with no usable purchases says so and which options to check."""
    history = tmp_path / "visits.jsonl"
    history.write_text('{"customer_id":"a","type":"visit","ts":"2024-01-01"}\n',
                       encoding="utf-8")
    result = runner.invoke(app, ["clv", "--events", str(history)])
    assert result.exit_code == 1
    assert "no 'purchase' events" in result.stderr and "--event" in result.stderr


def test_cli_warns_when_the_history_is_too_small_to_pin_the_model(tmp_path: Path) -> None:
    """Two customers cannot pin four parameters: the fit ends at a limit, says so, and still
    gives finite predictions; a history where nobody bought twice is an error."""
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("customer_id,type,ts,amount\n张三,purchase,2024-01-01,12.5\n"
                    "张三,purchase,2024-01-05,7\n李四,purchase,2024-01-03,5\n",
                    encoding="utf-8")
    out = tmp_path / "customers.jsonl"
    result = runner.invoke(app, ["clv", "--events", str(tiny), "--customers", str(out)])
    assert result.exit_code == 0, result.output
    assert "r and alpha run to a limit (customers seem to buy at one common rate)" in result.stderr
    assert "no spend model" in result.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["customer_id"] for r in rows] == ["张三", "李四"]
    assert all(0 < r["expected_purchases"] < 100 and r["clv"] is None for r in rows)
    once = tmp_path / "once.csv"
    once.write_text("customer_id,type,ts,amount\na,purchase,2024-01-01,1\n"
                    "b,purchase,2024-01-03,5\n", encoding="utf-8")
    result = runner.invoke(app, ["clv", "--events", str(once)])
    assert result.exit_code == 1
    assert "no customer bought again by the calibration end 2024-01-03" in result.stderr


def test_cli_without_numpy_and_scipy_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the optional extra, `sopkit clv` exits 2 telling to install sopkit[clv]."""
    for name in ("clv", "bgnbd", "gammagamma", "mle", "purchases"):  # the modules needing them
        monkeypatch.delitem(sys.modules, f"sopkit._stats.{name}", raising=False)
        monkeypatch.delattr(sopkit._stats, name, raising=False)
    monkeypatch.setitem(sys.modules, "scipy", None)
    result = runner.invoke(app, ["clv", "--events", str(SAMPLE)])
    assert result.exit_code == 2
    assert "install sopkit[clv]" in result.stderr


def test_customer_rows_are_flat_without_a_holdout(tmp_path: Path) -> None:
    """Customer rows are flat JSON (they convert to CSV as they are); with no calibration end
    there is no holdout column."""
    out = tmp_path / "c.jsonl"
    result = runner.invoke(app, ["clv", "--events", str(SAMPLE), "--customers", str(out),
                                 "--output", "jsonl", "--horizon", "4w"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    assert buffer.getvalue().count("\n") == len(rows) + 1
    assert "holdout_purchases" not in rows[0]  # no holdout without --calibration-end
