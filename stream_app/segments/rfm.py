"""RFM family (catalog): recency, frequency and monetary value over the orders of the last 365 days,
scored against the whole population of customers, and named by the first matching rule.

- R = days since the last order, F = number of orders, M = the orders' revenue (else total) minus the
  refunds whose own timestamp is in the window (M can be negative).
- Scores 1..5 from population shares (`rfm_population.RfmPopulation`); FM = mean of the F and M
  scores rounded half up; names from (R, FM) by the rules in `CatalogConfig.rfm_rules`, first match.
- A user whose orders have all left the window leaves the family (a timer at that moment). Until the
  first population is known (the worker's first refresh after a start) nobody new is scored and
  everyone keeps the name last decided.
"""

from __future__ import annotations

from typing import Any

from ..state.profile import Profile
from ..timeutil import DAY_MS
from .config import CatalogConfig

FAMILY = "rfm"


def values(profile: Profile, t: int, cfg: CatalogConfig) -> tuple[int, int, float] | None:
    """(last order time, F, M) at ``t``, or None when the user has no order in the window."""
    horizon = t - cfg.rfm_window_ms
    last_order, frequency, monetary = 0, 0, 0.0
    for ts, amount, _discounted in profile.orders:
        if horizon < ts <= t:
            frequency += 1
            monetary += amount
            last_order = max(last_order, ts)
    if frequency == 0:
        return None
    for ts, amount in profile.refunds:
        if horizon < ts <= t:
            monetary -= amount
    return last_order, frequency, monetary


def fm_score(f: int, m: int) -> int:
    """Mean of the F and M scores, rounded half up."""
    return (f + m + 1) // 2


def name(r: int, fm: int, cfg: CatalogConfig) -> str | None:
    for segment, r_low, r_high, fm_low, fm_high in cfg.rfm_rules:
        if r_low <= r <= r_high and fm_low <= fm <= fm_high:
            return segment
    return None


def name_for(value: tuple[int, int, float], population: Any, cfg: CatalogConfig) -> str | None:
    r, f, m = population.scores(*value)
    return name(r, fm_score(f, m), cfg)


def membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    if not cfg.rfm_enabled:
        return None
    value = values(profile, t, cfg)
    if value is None:
        return None
    if cfg.rfm_population is None:
        # no population yet (a worker that just started, before its first refresh): keep the name last
        # decided rather than dropping every customer out of the family until the refresh
        return profile.members.get(FAMILY)
    return name_for(value, cfg.rfm_population, cfg)


def next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    """The next moment an order or a refund leaves the window (F or M change; maybe the family is left)."""
    if not cfg.rfm_enabled:
        return None
    window = cfg.rfm_window_ms
    dues = [ts + window for ts, *_ in profile.orders if ts + window > profile.t]
    dues += [ts + window for ts, _ in profile.refunds if ts + window > profile.t]
    return min(dues) if dues else None


def traits(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    value = values(profile, t, cfg)
    if value is None:
        return {"orders_in_window": 0}
    last_order, frequency, monetary = value
    result: dict[str, Any] = {"recency_days": round((t - last_order) / DAY_MS, 4), "frequency": frequency,
                              "monetary": round(monetary, 2)}
    population = cfg.rfm_population
    if population is not None:
        r, f, m = population.scores(*value)
        result.update(r_score=r, f_score=f, m_score=m, fm_score=fm_score(f, m), scored_population=population.size)
    return result
