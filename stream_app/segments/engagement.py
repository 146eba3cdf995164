"""Engagement tier family (`engagement`), catalog: score = sum over the user's events of
weight x 2^(-age / 14 days); `highly_engaged` >= 20, `moderately_engaged` 3 <= score < 20, `inactive`
below 3 (after at least one event). Decay alone moves users down, at the moment the score crosses a
threshold: that moment is computed, not polled.

Floating point: the score is a double; a user is in a tier while the computed score is >= its
threshold. The crossing is scheduled at the first whole millisecond at or after
ref + half_life x log2(score_at_ref / threshold); if rounding leaves the computed score still on the
threshold then, the next millisecond is tried.
"""

from __future__ import annotations

import math
from typing import Any

from ..state.profile import Profile
from .config import CatalogConfig

FAMILY = "engagement"


def score(profile: Profile, t: int, cfg: CatalogConfig) -> float:
    if profile.eng_ref == 0:
        return 0.0
    return profile.eng_score * 2.0 ** (-(t - profile.eng_ref) / cfg.engagement_half_life_ms)


def membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    if profile.last_event == 0:
        return None
    value = score(profile, t, cfg)
    if value >= cfg.engagement_high:
        return "highly_engaged"
    if value >= cfg.engagement_moderate:
        return "moderately_engaged"
    return "inactive"


def next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    now = score(profile, profile.t, cfg)
    if now >= cfg.engagement_high:
        threshold = cfg.engagement_high
    elif now >= cfg.engagement_moderate:
        threshold = cfg.engagement_moderate
    else:
        return None
    crossing = profile.eng_ref + cfg.engagement_half_life_ms * math.log2(profile.eng_score / threshold)
    return max(math.ceil(crossing), profile.t + 1)


def traits(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    return {"engagement_score": round(score(profile, t, cfg), 4)}
