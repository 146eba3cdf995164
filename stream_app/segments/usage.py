"""Product-usage segments (catalog):

- `power_user:<feature>`: `Feature Used` with that feature >= 10 times in the last 7 days (one
  segment per feature seen);
- `nearing_usage_limit`: the latest `Usage Reported` of some metric has value / limit >= 0.8.
"""

from __future__ import annotations

from typing import Any

from ..state.profile import Profile
from .config import CatalogConfig

POWER_USER = "power_user"
NEARING_LIMIT = "nearing_usage_limit"


def _uses(times: list[int], t: int, window_ms: int) -> int:
    horizon = t - window_ms
    return sum(1 for u in times if horizon < u <= t)


def power_memberships(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, str]:
    result = {}
    for feature, times in profile.features.items():
        if _uses(times, t, cfg.power_user_window_ms) >= cfg.power_user_min_uses:
            segment = f"{POWER_USER}:{feature}"
            result[segment] = segment
    return result


def power_next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    future = [u + cfg.power_user_window_ms for times in profile.features.values() for u in times
              if u + cfg.power_user_window_ms > profile.t]
    return min(future) if future else None


def _ratio(report: list[Any]) -> float:
    _ts, value, limit = report
    return value / limit if limit else 0.0


def limit_membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    return NEARING_LIMIT if any(_ratio(r) >= cfg.usage_limit_ratio for r in profile.usage.values()) else None


def no_timer(profile: Profile, cfg: CatalogConfig) -> int | None:
    return None


def traits(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    return {
        "feature_uses_7d": {f: _uses(times, t, cfg.power_user_window_ms) for f, times in sorted(profile.features.items())},
        "usage_ratios": {m: round(_ratio(r), 4) for m, r in sorted(profile.usage.items())},
    }
