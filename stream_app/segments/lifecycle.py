"""Lifecycle family (`lifecycle`), highest precedence first (catalog):

1. churned: activated, and no activity in the last 60 days.
2. loyal_advocate: engaged, and (>= 3 orders in 365 d, or `Invite Sent` in 90 d, or NPS >= 9 in 180 d).
3. engaged: activated, and activity on >= 4 distinct UTC days in the last 28 days.
4. activated: has ever performed the activation event.
5. new_lead: any other user the engine has seen.

"In the last N days" at t means timestamps in (t - N, t].
"""

from __future__ import annotations

from typing import Any

from ..state.profile import Profile
from .config import CatalogConfig

FAMILY = "lifecycle"
MEMBERS = ("churned", "loyal_advocate", "engaged", "activated", "new_lead")


def active_days(profile: Profile, t: int, window_ms: int) -> int:
    horizon = t - window_ms
    return sum(1 for ts in profile.days.values() if horizon < ts <= t)


def orders_in_window(profile: Profile, t: int, window_ms: int) -> int:
    horizon = t - window_ms
    return sum(1 for o in profile.orders if horizon < o[0] <= t)


def _within(ts: int | None, t: int, window_ms: int) -> bool:
    return ts is not None and t - window_ms < ts <= t


def membership(profile: Profile, t: int, cfg: CatalogConfig) -> str:
    if profile.activated_at is None:
        return "new_lead"
    if not _within(profile.last_activity, t, cfg.churn_inactive_ms):
        return "churned"
    if active_days(profile, t, cfg.engaged_window_ms) < cfg.engaged_min_days:
        return "activated"
    if (
        orders_in_window(profile, t, cfg.loyal_orders_window_ms) >= cfg.loyal_min_orders
        or _within(profile.invite_last, t, cfg.loyal_invite_window_ms)
        or _within(profile.nps_high_last, t, cfg.loyal_nps_window_ms)
    ):
        return "loyal_advocate"
    return "engaged"


def next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    """Earliest moment after ``profile.t`` at which an element leaves one of this family's windows."""
    if profile.activated_at is None:
        return None
    after = profile.t
    candidates: list[int] = []
    if profile.last_activity is not None:
        candidates.append(profile.last_activity + cfg.churn_inactive_ms)
    candidates.extend(ts + cfg.engaged_window_ms for ts in profile.days.values())
    candidates.extend(o[0] + cfg.loyal_orders_window_ms for o in profile.orders)
    if profile.invite_last is not None:
        candidates.append(profile.invite_last + cfg.loyal_invite_window_ms)
    if profile.nps_high_last is not None:
        candidates.append(profile.nps_high_last + cfg.loyal_nps_window_ms)
    future = [c for c in candidates if c > after]
    return min(future) if future else None


def traits(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    return {
        "activated": profile.activated_at is not None,
        "active_days_28d": active_days(profile, t, cfg.engaged_window_ms),
        "orders_365d": orders_in_window(profile, t, cfg.loyal_orders_window_ms),
        "days_since_activity": None if profile.last_activity is None else round((t - profile.last_activity) / 86_400_000, 3),
    }
