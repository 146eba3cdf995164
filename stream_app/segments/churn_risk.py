"""`churn_risk` (catalog): a user who is not `churned`, was `engaged` or `loyal_advocate` at some moment
in the last 60 days, and whose activity has fallen: with A = active days in the last 14 days and B =
active days in the 28 days before those 14, `A == 0` or `A < B / 4`.

A day counts in a window when one of its activity events falls in the window, so a day can count in
both A and B (the catalog's boundary rule); each day keeps its first and last activity time for that.
"""

from __future__ import annotations

from typing import Any

from ..state.profile import Profile
from . import lifecycle
from .config import CatalogConfig

SEGMENT = "churn_risk"
ENGAGED = ("engaged", "loyal_advocate")


def activity_split(profile: Profile, t: int, cfg: CatalogConfig) -> tuple[int, int]:
    """(A, B): distinct active days in (t - 14 d, t] and in (t - 42 d, t - 14 d]."""
    split = t - cfg.churn_risk_recent_ms
    start = split - cfg.churn_risk_prior_ms
    recent = prior = 0
    for day, last in profile.days.items():
        first = profile.days_first.get(day, last)
        if split < last and first <= t:
            recent += 1
        if start < last and first <= split:
            prior += 1
    return recent, prior


def _was_engaged(profile: Profile, t: int, now: str, cfg: CatalogConfig) -> bool:
    if now in ENGAGED or profile.members.get(lifecycle.FAMILY) in ENGAGED:
        return True
    return profile.engaged_until is not None and profile.engaged_until > t - cfg.churn_risk_engaged_within_ms


def membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    now = lifecycle.membership(profile, t, cfg)
    if now in ("churned", "new_lead") or not _was_engaged(profile, t, now, cfg):
        return None
    recent, prior = activity_split(profile, t, cfg)
    return SEGMENT if recent == 0 or cfg.churn_risk_divisor * recent < prior else None


def next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    if profile.activated_at is None:
        return None
    recent, prior = cfg.churn_risk_recent_ms, cfg.churn_risk_recent_ms + cfg.churn_risk_prior_ms
    candidates = [last + recent for last in profile.days.values()]
    candidates += [first + recent for first in profile.days_first.values()]
    candidates += [last + prior for last in profile.days.values()]
    if profile.engaged_until is not None:
        candidates.append(profile.engaged_until + cfg.churn_risk_engaged_within_ms)
    future = [c for c in candidates if c > profile.t]
    return min(future) if future else None


def traits(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    recent, prior = activity_split(profile, t, cfg)
    return {"active_days_last_14d": recent, "active_days_prior_28d": prior}
