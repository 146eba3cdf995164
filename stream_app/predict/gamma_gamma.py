"""The Gamma-Gamma spend model and the discounted customer lifetime value built on it and the BG/NBD.

Source: P. S. Fader, B. G. S. Hardie and K. L. Lee (2005), "The Gamma-Gamma model of monetary value"
(note), after Colombo & Jiang (1999). A customer's spend per transaction is Gamma(p, nu) with
nu ~ Gamma(q, gamma) across customers. For a customer with x repeat transactions of mean m, the density of m
is

    f(m | p, q, gamma, x) = Gamma(p x + q) / (Gamma(p x) Gamma(q)) * gamma^q m^(p x - 1) x^(p x) / (gamma + m x)^(p x + q)

and the expected spend per transaction given (x, m) is

    E[M | x, m] = (p gamma + p x m) / (p x + q - 1),

a weighted mean of the population mean p gamma / (q - 1) and the customer's own mean m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.special import gammaln

from .bgnbd import (
    MIN_REPEAT_CUSTOMERS,
    BGNBDParams,
    InsufficientData,
    conditional_expected_purchases,
    checked_standard_errors,
    maximize_log_likelihood,
)

ArrayLike = float | Sequence[float] | np.ndarray


@dataclass(frozen=True)
class GammaGammaParams:
    """Fitted Gamma-Gamma parameters; log_likelihood is the sum over the customers fitted on."""

    p: float
    q: float
    gamma: float
    log_likelihood: float = math.nan
    std_errors: dict[str, float] = field(default_factory=dict)
    n_customers: int = 0


def log_likelihood_terms(p: float, q: float, gamma: float, x: np.ndarray, monetary: np.ndarray) -> np.ndarray:
    """ln f(m | p, q, gamma, x) per customer (x > 0, m > 0), from the Gamma-Gamma note."""
    px = p * x
    return (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * math.log(gamma)
        + (px - 1.0) * np.log(monetary)
        + px * np.log(x)
        - (px + q) * np.log(gamma + monetary * x)
    )


def fit_gamma_gamma(x: ArrayLike, monetary: ArrayLike) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma fit on the customers with x > 0 and mean repeat spend > 0.

    Customers with no repeat purchase carry no spend information here and are left out, as are those
    whose repeat purchases sum to nothing (a mean spend of 0 has zero density). Raises InsufficientData
    with fewer than 10 such customers, or when the optimizer finds no interior maximum.
    """
    x_arr = np.atleast_1d(np.asarray(x, dtype=np.float64))
    m_arr = np.atleast_1d(np.asarray(monetary, dtype=np.float64))
    if x_arr.shape != m_arr.shape or x_arr.ndim != 1:
        raise ValueError("x and monetary must be one-dimensional and of the same length")
    if not (np.all(np.isfinite(x_arr)) and np.all(np.isfinite(m_arr))):
        raise ValueError("x and monetary must be finite numbers")
    use = (x_arr > 0) & (m_arr > 0)
    xs, ms = x_arr[use], m_arr[use]
    if xs.size < MIN_REPEAT_CUSTOMERS:
        raise InsufficientData(
            f"Gamma-Gamma needs at least {MIN_REPEAT_CUSTOMERS} customers with a repeat purchase of positive "
            f"spend; the data has {xs.size} of {x_arr.size} customers"
        )

    def negative(theta: np.ndarray) -> float:
        return -float(np.sum(log_likelihood_terms(theta[0], theta[1], theta[2], xs, ms)))

    theta = maximize_log_likelihood(lambda th: negative(th) / xs.size, "Gamma-Gamma", ("p", "q", "gamma"))
    errors = checked_standard_errors(negative, theta, "Gamma-Gamma", ("p", "q", "gamma"))
    return GammaGammaParams(
        p=float(theta[0]),
        q=float(theta[1]),
        gamma=float(theta[2]),
        log_likelihood=-negative(theta),
        std_errors=errors,
        n_customers=int(xs.size),
    )


def expected_average_spend(params: GammaGammaParams, x: ArrayLike, monetary: ArrayLike) -> float | np.ndarray:
    """E[M | x, m] = (p gamma + p x m) / (p x + q - 1) (the Gamma-Gamma note); for x == 0 this is
    the population mean p gamma / (q - 1). Needs q > 1, else the mean spend is infinite."""
    if params.q <= 1.0:
        raise ValueError(f"the Gamma-Gamma mean spend is infinite for q <= 1 (q = {params.q:.4g})")
    scalar = np.ndim(x) == 0 and np.ndim(monetary) == 0
    x_arr, m_arr = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(monetary, dtype=np.float64))
    m_used = np.where(x_arr > 0, m_arr, 0.0)
    value = (params.p * params.gamma + params.p * x_arr * m_used) / (params.p * x_arr + params.q - 1.0)
    return float(value) if scalar else value


def discounted_clv(
    bgnbd_params: BGNBDParams,
    gg_params: GammaGammaParams,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    monetary: ArrayLike,
    horizon_units: int,
    discount_rate_per_unit: float,
) -> float | np.ndarray:
    """Discounted expected value of a customer's purchases over the next `horizon_units` units:

        sum_{i=1..H} (E[Y(i) | x, t_x, T] - E[Y(i-1) | x, t_x, T]) * E[M | x, m] / (1 + d)^i

    with E[Y] from eq. 10 of the BG/NBD paper and E[M] from the Gamma-Gamma note.
    """
    if horizon_units < 0 or int(horizon_units) != horizon_units:
        raise ValueError("horizon_units must be a whole number >= 0")
    if not discount_rate_per_unit > -1.0:
        raise ValueError("discount_rate_per_unit must be > -1")
    scalar = all(np.ndim(v) == 0 for v in (x, t_x, T, monetary))
    x_arr, tx_arr, T_arr, m_arr = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x, t_x, T, monetary)))
    spend = np.asarray(expected_average_spend(gg_params, x_arr, m_arr))
    horizon = int(horizon_units)
    if horizon == 0:
        total = np.zeros_like(x_arr)
    else:
        # every step at once: E[Y(i)] for i = 1..H, one row per customer
        steps = np.arange(1, horizon + 1, dtype=np.float64)
        cumulative = np.asarray(conditional_expected_purchases(
            bgnbd_params, steps, x_arr[..., None], tx_arr[..., None], T_arr[..., None]))
        increments = np.diff(cumulative, axis=-1, prepend=0.0)
        discount = (1.0 + discount_rate_per_unit) ** -steps
        total = (increments * discount).sum(axis=-1) * spend
    return float(total.reshape(-1)[0]) if scalar else total
