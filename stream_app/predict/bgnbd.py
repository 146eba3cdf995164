"""The BG/NBD purchase-count model: likelihood, maximum-likelihood fit and the quantities it predicts.

Source: P. S. Fader, B. G. S. Hardie and K. L. Lee (2005), "'Counting your customers' the easy way: an
alternative to the Pareto/NBD model", Marketing Science 24(2), 275-284; equation numbers below are
the paper's. While alive a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after
each purchase they drop out with probability p ~ Beta(a, b).

For a customer with x repeat purchases, the last at t_x, observed over (0, T] (eq. 6):

    L = A1 * A2 * (A3 + delta(x > 0) * A4)
    A1 = Gamma(r + x) alpha^r / Gamma(r)
    A2 = B(a, b + x) / B(a, b)
    A3 = (alpha + T)^-(r + x)
    A4 = a / (b + x - 1) * (alpha + t_x)^-(r + x)

computed here in log space, A3 and A4 combined by log-sum-exp. The predictions use the Gaussian
hypergeometric function 2F1 (eq. 7 and eq. 10); they are evaluated after Euler's transformation
2F1(A, B; C; z) = (1 - z)^(C - A - B) 2F1(C - A, C - B; C; z), which folds the power factor of eq. 10
into a 2F1 whose series stays small for every x. All time arguments are in the unit the model was
fitted in (weeks or days).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, hyp2f1

MIN_REPEAT_CUSTOMERS = 10
LOG_BOUND = 15.0  # every parameter is fitted in [exp(-15), exp(15)], i.e. about [3e-7, 3e6]

ArrayLike = float | Sequence[float] | np.ndarray


class InsufficientData(ValueError):
    """The data cannot support a fit: too few repeat buyers, or no maximum of the likelihood was found."""


@dataclass(frozen=True)
class BGNBDParams:
    """Fitted BG/NBD parameters; log_likelihood is the sum over customers at the estimate."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = math.nan
    std_errors: dict[str, float] = field(default_factory=dict)
    n_customers: int = 0
    n_repeat_customers: int = 0


def _result(value: np.ndarray, scalar: bool) -> float | np.ndarray:
    return float(value) if scalar else value


def _all_scalar(*values: object) -> bool:
    return all(np.ndim(v) == 0 for v in values)


def log_likelihood_terms(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """ln L per customer, eq. 6 of Fader, Hardie & Lee (2005), in log space."""
    x = np.asarray(x, dtype=np.float64)
    t_x = np.asarray(t_x, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    ln_a1 = gammaln(r + x) - gammaln(r) + r * math.log(alpha)
    ln_a2 = betaln(a, b + x) - betaln(a, b)
    ln_a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    safe_x = np.where(repeat, x, 1.0)  # keeps log(b + x - 1) defined where the term is not used
    ln_a4 = np.where(repeat, math.log(a) - np.log(b + safe_x - 1.0) - (r + x) * np.log(alpha + t_x), -np.inf)
    return ln_a1 + ln_a2 + np.logaddexp(ln_a3, ln_a4)


def log_likelihood(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Total log-likelihood of the data under `params` (eq. 6 summed over customers)."""
    terms = log_likelihood_terms(params.r, params.alpha, params.a, params.b, np.asarray(x), np.asarray(t_x), np.asarray(T))
    return float(np.sum(terms if weights is None else np.asarray(weights, dtype=np.float64) * terms))


def maximize_log_likelihood(neg_log_likelihood: Callable[[np.ndarray], float], model: str, names: Sequence[str]) -> np.ndarray:
    """Minimise a negative log-likelihood over positive parameters, searching on log-parameters from
    all ones: L-BFGS-B, then Nelder-Mead and L-BFGS-B again from the best point if it did not converge.
    Raises InsufficientData when no converged interior optimum is found."""

    def objective(log_theta: np.ndarray) -> float:
        value = neg_log_likelihood(np.exp(log_theta))
        return value if np.isfinite(value) else 1e300

    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(names)
    result = minimize(objective, np.zeros(len(names)), method="L-BFGS-B", bounds=bounds)
    converged = bool(result.success)
    if not converged:
        polished = minimize(
            objective, result.x, method="Nelder-Mead", bounds=bounds, options={"maxiter": 4000, "xatol": 1e-7, "fatol": 1e-10}
        )
        result = minimize(objective, polished.x, method="L-BFGS-B", bounds=bounds)
        converged = bool(result.success or polished.success)
        if polished.fun < result.fun:
            result = polished
    if not converged or not np.all(np.isfinite(result.x)) or result.fun >= 1e300:
        raise InsufficientData(f"{model}: the optimizer did not converge ({result.message}); the data does not pin the model down")
    at_bound = [name for name, value in zip(names, result.x) if abs(value) > LOG_BOUND - 1e-3]
    if at_bound:
        raise InsufficientData(
            f"{model}: the likelihood has no interior maximum ({', '.join(at_bound)} ran to the limit "
            f"{math.exp(-LOG_BOUND):.1e}..{math.exp(LOG_BOUND):.1e}); the data does not pin the model down"
        )
    return np.exp(result.x)


def numerical_standard_errors(neg_log_likelihood: Callable[[np.ndarray], float], theta: np.ndarray) -> np.ndarray:
    """Square roots of the diagonal of the inverse Hessian of the negative log-likelihood in the natural
    parameters, by central finite differences with relative steps; NaN where it is not positive definite."""
    theta = np.asarray(theta, dtype=np.float64)
    n = theta.size
    steps = 1e-4 * np.maximum(np.abs(theta), 1e-8)
    center = neg_log_likelihood(theta)
    hessian = np.empty((n, n))

    def at(*moves: tuple[int, float]) -> float:
        point = theta.copy()
        for index, sign in moves:
            point[index] += sign * steps[index]
        return neg_log_likelihood(point)

    for i in range(n):
        hessian[i, i] = (at((i, 1)) - 2.0 * center + at((i, -1))) / steps[i] ** 2
        for j in range(i + 1, n):
            value = (at((i, 1), (j, 1)) - at((i, 1), (j, -1)) - at((i, -1), (j, 1)) + at((i, -1), (j, -1))) / (4 * steps[i] * steps[j])
            hessian[i, j] = hessian[j, i] = value
    try:
        covariance = np.linalg.inv(hessian)
    except np.linalg.LinAlgError:
        return np.full(n, np.nan)
    diagonal = np.diag(covariance)
    if not np.all(np.isfinite(diagonal)) or np.any(diagonal <= 0):
        return np.full(n, np.nan)
    return np.sqrt(diagonal)


def checked_standard_errors(
    neg_log_likelihood: Callable[[np.ndarray], float], theta: np.ndarray, model: str, names: Sequence[str]
) -> dict[str, float]:
    """Standard errors by name; raises InsufficientData when the Hessian at the optimizer's stopping point
    is not positive definite, i.e. the optimizer stopped on a ridge rather than at a maximum (as when
    parameters drift off to infinity together)."""
    errors = numerical_standard_errors(neg_log_likelihood, theta)
    if not np.all(np.isfinite(errors)):
        where = ", ".join(f"{name} = {value:.4g}" for name, value in zip(names, theta))
        raise InsufficientData(
            f"{model}: the likelihood has no well-defined maximum (the Hessian at {where} is not positive "
            "definite); the data does not pin the model down"
        )
    return {name: float(e) for name, e in zip(names, errors)}


def _validated(x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None) -> tuple[np.ndarray, ...]:
    x_arr = np.atleast_1d(np.asarray(x, dtype=np.float64))
    t_arr = np.atleast_1d(np.asarray(t_x, dtype=np.float64))
    T_arr = np.atleast_1d(np.asarray(T, dtype=np.float64))
    w_arr = np.ones_like(x_arr) if weights is None else np.atleast_1d(np.asarray(weights, dtype=np.float64))
    if not (x_arr.ndim == 1 and x_arr.shape == t_arr.shape == T_arr.shape == w_arr.shape):
        raise ValueError("x, t_x, T (and weights) must be one-dimensional and of the same length")
    if not all(np.all(np.isfinite(v)) for v in (x_arr, t_arr, T_arr, w_arr)):
        raise ValueError("x, t_x, T and weights must be finite numbers")
    if np.any(x_arr < 0) or np.any(x_arr != np.round(x_arr)):
        raise ValueError("x (repeat purchases) must be whole numbers >= 0")
    if np.any(t_arr < 0) or np.any(t_arr > T_arr + 1e-9):
        raise ValueError("recency t_x must satisfy 0 <= t_x <= T for every customer")
    if np.any(w_arr < 0):
        raise ValueError("weights must be >= 0")
    return x_arr, t_arr, T_arr, w_arr


def aggregate_rows(*columns: np.ndarray, weights: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Identical rows merged into one, their weights summed; rows of zero weight dropped."""
    stacked = np.column_stack(columns)
    unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=weights, minlength=unique.shape[0])
    keep = summed > 0
    return [unique[keep, i] for i in range(unique.shape[1])], summed[keep]


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None) -> BGNBDParams:
    """Maximum-likelihood BG/NBD fit (eq. 6 of Fader, Hardie & Lee 2005) on per-customer (x, t_x, T).

    `weights` counts how many customers each row stands for (default 1). Identical rows are merged
    before fitting. Raises InsufficientData with fewer than 10 customers with x > 0, or when the
    optimizer finds no interior maximum with a positive definite Hessian (the standard errors come from
    its inverse, in the natural parameters).
    """
    x_arr, t_arr, T_arr, w_arr = _validated(x, t_x, T, weights)
    (xs, ts, Ts), w = aggregate_rows(x_arr, t_arr, T_arr, weights=w_arr)
    n_customers = float(np.sum(w))
    n_repeat = float(np.sum(w[xs > 0]))
    if n_repeat < MIN_REPEAT_CUSTOMERS:
        raise InsufficientData(
            f"BG/NBD needs at least {MIN_REPEAT_CUSTOMERS} customers with a repeat purchase (x > 0); "
            f"the data has {n_repeat:g} of {n_customers:g} customers"
        )

    def negative(theta: np.ndarray) -> float:
        return -float(np.dot(w, log_likelihood_terms(theta[0], theta[1], theta[2], theta[3], xs, ts, Ts)))

    theta = maximize_log_likelihood(lambda th: negative(th) / n_customers, "BG/NBD", ("r", "alpha", "a", "b"))
    errors = checked_standard_errors(negative, theta, "BG/NBD", ("r", "alpha", "a", "b"))
    return BGNBDParams(
        r=float(theta[0]),
        alpha=float(theta[1]),
        a=float(theta[2]),
        b=float(theta[3]),
        log_likelihood=-negative(theta),
        std_errors=errors,
        n_customers=int(round(n_customers)),
        n_repeat_customers=int(round(n_repeat)),
    )


def _future_purchases_if_alive(params: BGNBDParams, t: np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The numerator of eq. 10: (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)]
    with z = t/(alpha+T+t), after Euler's transformation:
    ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; c; z) = ((alpha+T)/(alpha+T+t))^(a-1) 2F1(a+b-1-r, a-1; c; z)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if a == 1.0:
        raise ValueError("the BG/NBD expectations need a != 1 (eq. 7 and 10 divide by a - 1)")
    if np.any(t < 0):
        raise ValueError("the forecast horizon t must be >= 0")
    c = a + b + x - 1.0
    z = t / (alpha + T + t)
    ln_one_minus_z = np.log(alpha + T) - np.log(alpha + T + t)
    series = hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        bracket = -np.expm1((a - 1.0) * ln_one_minus_z + np.log(series))
    return c / (a - 1.0) * bracket


def expected_purchases(params: BGNBDParams, t: ArrayLike) -> float | np.ndarray:
    """E[X(t)], expected purchases of a new customer in (0, t] (eq. 7 of Fader, Hardie & Lee 2005):
    (a+b-1)/(a-1) * [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))]."""
    scalar = _all_scalar(t)
    t_arr = np.asarray(t, dtype=np.float64)
    return _result(_future_purchases_if_alive(params, t_arr, np.zeros_like(t_arr), np.zeros_like(t_arr)), scalar)


def p_alive(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> float | np.ndarray:
    """P(alive | x, t_x, T) = 1 / (1 + delta(x > 0) a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))
    (Fader, Hardie & Lee 2005, the denominator of eq. 10; their note "Computing P(alive) using the BG/NBD
    model"). 1 for customers with no repeat purchase."""
    scalar = _all_scalar(x, t_x, T)
    x_arr, t_arr, T_arr = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, t_x, T)))
    repeat = x_arr > 0
    safe_x = np.where(repeat, x_arr, 1.0)
    log_odds_dead = (
        math.log(params.a)
        - np.log(params.b + safe_x - 1.0)
        + (params.r + x_arr) * (np.log(params.alpha + T_arr) - np.log(params.alpha + t_arr))
    )
    return _result(np.where(repeat, expit(-log_odds_dead), 1.0), scalar)


def conditional_expected_purchases(params: BGNBDParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> float | np.ndarray:
    """E[Y(t) | x, t_x, T], expected purchases in (T, T + t] of a customer with history (x, t_x, T)
    (eq. 10 of Fader, Hardie & Lee 2005): the alive-customer expectation times P(alive)."""
    scalar = _all_scalar(t, x, t_x, T)
    t_arr, x_arr, tx_arr, T_arr = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (t, x, t_x, T)))
    value = _future_purchases_if_alive(params, t_arr, x_arr, T_arr) * p_alive(params, x_arr, tx_arr, T_arr)
    return _result(np.asarray(value), scalar)
