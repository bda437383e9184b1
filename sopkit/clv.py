"""Customer-lifetime-value models, public: BG/NBD and Gamma-Gamma fitted by maximum
likelihood, as pure functions of plain data returning frozen dataclasses (docs/analytics.md).

Needs the optional extra: `pip install 'sopkit[clv]'` (numpy and scipy).
"""

from sopkit._stats.clv import (
    RFM,
    UNIT_DAYS,
    BadPurchase,
    BGNBDFit,
    BGNBDParams,
    ClvReport,
    GammaGammaFit,
    GammaGammaParams,
    Outlook,
    Purchase,
    PurchaseLog,
    analyse,
    bgnbd_log_likelihood,
    clv,
    customer_rfm,
    expected_purchases,
    expected_purchases_new,
    expected_spend,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
    outlook,
    p_alive,
    p_no_purchase,
    read_purchases,
    simulate_bgnbd,
    summarize,
)

__all__ = [
    "RFM", "UNIT_DAYS", "BGNBDFit", "BGNBDParams", "BadPurchase", "ClvReport", "GammaGammaFit",
    "GammaGammaParams", "Outlook", "Purchase", "PurchaseLog", "analyse",
    "bgnbd_log_likelihood", "clv", "customer_rfm", "expected_purchases",
    "expected_purchases_new", "expected_spend", "fit_bgnbd", "fit_gamma_gamma",
    "gamma_gamma_log_likelihood", "outlook", "p_alive", "p_no_purchase", "read_purchases",
    "simulate_bgnbd", "summarize",
]
