"""Promotion segments (catalog):

- `price_sensitive`: >= 2 orders in the last 365 days and at least half of them carry a `coupon` or a
  `discount` > 0;
- `promo_responsive`: in the last 90 days, a `Promotion Clicked` followed by an `Order Completed`
  within 72 hours (the click in the window; the order at or after the click, at most 72 h later).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from ..state.profile import Profile
from .config import CatalogConfig

PRICE_SENSITIVE = "price_sensitive"
PROMO_RESPONSIVE = "promo_responsive"


def _orders_in(profile: Profile, t: int, window_ms: int) -> list[list[Any]]:
    horizon = t - window_ms
    return [o for o in profile.orders if horizon < o[0] <= t]


def price_membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    orders = _orders_in(profile, t, cfg.price_sensitive_window_ms)
    if len(orders) < cfg.price_sensitive_min_orders:
        return None
    discounted = sum(1 for o in orders if o[2])
    return PRICE_SENSITIVE if discounted >= cfg.price_sensitive_min_share * len(orders) else None


def price_next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    future = [o[0] + cfg.price_sensitive_window_ms for o in profile.orders if o[0] + cfg.price_sensitive_window_ms > profile.t]
    return min(future) if future else None


def _responded_clicks(profile: Profile, t: int, cfg: CatalogConfig) -> list[int]:
    order_times = [o[0] for o in profile.orders if o[0] <= t]
    responded = []
    for click in profile.promo_clicks:
        if not t - cfg.promo_window_ms < click <= t:
            continue
        first = bisect_left(order_times, click)
        if first < len(order_times) and order_times[first] <= click + cfg.promo_order_within_ms:
            responded.append(click)
    return responded


def promo_membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    return PROMO_RESPONSIVE if _responded_clicks(profile, t, cfg) else None


def promo_next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    start = bisect_right(profile.promo_clicks, profile.t - cfg.promo_window_ms)
    future = [c + cfg.promo_window_ms for c in profile.promo_clicks[start:] if c + cfg.promo_window_ms > profile.t]
    return min(future) if future else None


def traits(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    orders = _orders_in(profile, t, cfg.price_sensitive_window_ms)
    return {"orders_365d": len(orders), "discounted_orders_365d": sum(1 for o in orders if o[2]),
            "promotion_clicks_followed_by_order_90d": len(_responded_clicks(profile, t, cfg))}
