"""`high_intent` (catalog): intent score >= 6 over the last 7 days, not counting events at or before
the user's most recent `Order Completed`. Weights: page `Pricing` (or path containing /pricing) 2,
`Product Added` 3, `Checkout Started` 4, `Content Downloaded` with category buying_guide 2,
`Product Viewed` 0.5.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from ..state.profile import Profile
from .config import CatalogConfig

SEGMENT = "high_intent"


def intent_score(profile: Profile, t: int, cfg: CatalogConfig) -> float:
    horizon = t - cfg.intent_window_ms
    last_order = profile.last_order if profile.last_order is not None else -1
    return sum(w for ts, w in profile.intent if horizon < ts <= t and ts > last_order)


def membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    return SEGMENT if intent_score(profile, t, cfg) >= cfg.intent_threshold else None


def next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    """The next moment an intent event leaves the window (`intent` is sorted by time)."""
    first = bisect_right(profile.intent, profile.t - cfg.intent_window_ms, key=lambda entry: entry[0])
    return profile.intent[first][0] + cfg.intent_window_ms if first < len(profile.intent) else None


def traits(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    return {"intent_score_7d": intent_score(profile, t, cfg)}
