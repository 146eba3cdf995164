"""Predictive segments from a fitted BG/NBD + Gamma-Gamma model (catalog; issue #5):

- `predicted_churn`: customers with >= 2 orders whose P(alive) is below 0.3;
- `high_predicted_value`: customers whose discounted predicted CLV is in the top share (default 10%)
  of the customers the model was fitted on (the cut-off comes from the model file).

Both are off until a model is loaded. Between two orders a customer's summary (x, t_x) is fixed and
only T grows, and both P(alive) and the expected future purchases fall as T grows. So each segment
changes at most once between orders, on a whole day (the model counts whole days): that day is found
by bisection once per order, kept in the profile, and scheduled as a timer. Nobody is rescanned.
"""

from __future__ import annotations

from typing import Any, Callable

from ..state.profile import Profile
from ..timeutil import DAY_MS, utc_day
from .config import CatalogConfig

CHURN = "predicted_churn"
HIGH_VALUE = "high_predicted_value"
_SEARCH_DAYS = 20 * 365
_CACHE = "predicted"


def _first_day(predicate: Callable[[int], bool], start: int) -> int | None:
    """Smallest day d >= start where a predicate that, once true, stays true holds; None within 20 years."""
    if predicate(start):
        return start
    low, high = start, start + _SEARCH_DAYS
    if not predicate(high):
        return None
    while high - low > 1:
        mid = (low + high) // 2
        if predicate(mid):
            high = mid
        else:
            low = mid
    return high


def _crossings(profile: Profile, cfg: CatalogConfig) -> tuple[int | None, int | None]:
    """(first day of predicted churn, first day no longer of high predicted value) for the current
    purchase summary; computed once per order and kept in the profile."""
    from ..predict.scoring import clv_at, p_alive_at  # numpy and scipy: imported only once a model is loaded

    model = cfg.model
    key = [cfg.version, profile.purchase_first_day, profile.purchase_last_day, profile.purchase_days,
           round(profile.repeat_spend, 6), profile.orders_total, cfg.predicted_churn_p_alive_below, cfg.high_value_top_share]
    cached = profile.extra.get(_CACHE)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    start = profile.purchase_last_day
    assert start is not None
    churn_day = value_end = None
    if cfg.predicted_churn_enabled and profile.orders_total >= cfg.predicted_churn_min_orders:
        churn_day = _first_day(lambda d: p_alive_at(model, profile, d) < cfg.predicted_churn_p_alive_below, start)
    threshold = model.clv_threshold(cfg.high_value_top_share) if cfg.high_value_enabled else None
    if threshold is not None and model.gamma_gamma is not None:
        value_end = _first_day(lambda d: clv_at(model, profile, d) < threshold, start)
        if value_end is None:
            value_end = start + _SEARCH_DAYS
    profile.extra[_CACHE] = [key, churn_day, value_end]
    return churn_day, value_end


def _scored(profile: Profile, cfg: CatalogConfig) -> bool:
    return cfg.model is not None and profile.purchase_first_day is not None


def churn_membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    if not _scored(profile, cfg):
        return None
    churn_day, _ = _crossings(profile, cfg)
    return CHURN if churn_day is not None and utc_day(t) >= churn_day else None


def value_membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    if not _scored(profile, cfg):
        return None
    _, value_end = _crossings(profile, cfg)
    return HIGH_VALUE if value_end is not None and utc_day(t) < value_end else None


def _due(day: int | None, profile: Profile) -> int | None:
    if day is None:
        return None
    due = day * DAY_MS
    return due if due > profile.t else None


def churn_next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    return _due(_crossings(profile, cfg)[0], profile) if _scored(profile, cfg) else None


def value_next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    return _due(_crossings(profile, cfg)[1], profile) if _scored(profile, cfg) else None


def traits(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    if not _scored(profile, cfg):
        return {}
    from ..predict.scoring import customer_scores

    return customer_scores(cfg.model, profile, utc_day(t)).as_traits()
