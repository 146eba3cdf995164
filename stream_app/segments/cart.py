"""`cart_abandoner` (catalog): enters at cart open + 30 min if the cart has stayed non-empty since it
opened; exits at the next `Order Completed`, when the cart becomes empty, or 7 days after the last
cart event (when the cart is forgotten). The cart itself is kept by ``state.aggregates``.
"""

from __future__ import annotations

from typing import Any

from ..state.profile import Profile
from .config import CatalogConfig

SEGMENT = "cart_abandoner"


def membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    if profile.cart and profile.cart_opened is not None and t >= profile.cart_opened + cfg.cart_abandon_after_ms:
        return SEGMENT
    return None


def next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    if not profile.cart or profile.cart_opened is None:
        return None
    after = profile.t
    future = [
        c
        for c in (profile.cart_opened + cfg.cart_abandon_after_ms, (profile.cart_last or 0) + cfg.cart_expiry_ms)
        if c > after
    ]
    return min(future) if future else None


def traits(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    return {
        "cart_items": sum(q for q in profile.cart.values()),
        "cart_opened_minutes_ago": None if profile.cart_opened is None else round((t - profile.cart_opened) / 60_000, 2),
    }
