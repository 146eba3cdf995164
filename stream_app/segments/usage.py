"""Product-usage segments (catalog):

- `power_user:<feature>`: `Feature Used` with that feature >= 10 times in the last 7 days (one
  segment per feature seen);
- `nearing_usage_limit`: the latest `Usage Reported` of some metric has value / limit >= 0.8.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from ..state.profile import Profile
from .config import CatalogConfig

POWER_USER = "power_user"
NEARING_LIMIT = "nearing_usage_limit"


def _uses(times: list[int], t: int, window_ms: int) -> int:
    """Uses in (t - window, t]; `times` is sorted, so two binary searches."""
    return bisect_right(times, t) - bisect_right(times, t - window_ms)


def power_memberships(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, str]:
    result = {}
    for feature, times in profile.features.items():
        if _uses(times, t, cfg.power_user_window_ms) >= cfg.power_user_min_uses:
            segment = f"{POWER_USER}:{feature}"
            result[segment] = segment
    return result


def power_next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    """Time alone only takes a user out: when the min_uses-th newest use of a power feature leaves the
    window (entering needs an event). One comparison per feature."""
    window, need, after = cfg.power_user_window_ms, cfg.power_user_min_uses, profile.t
    due = None
    for times in profile.features.values():
        if len(times) >= need:
            leaves = times[-need] + window
            if leaves > after and (due is None or leaves < due):
                due = leaves
    return due


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


def metric_label(value: str | None, cfg: CatalogConfig) -> str | None:
    """A segment or member id as a metric label: `power_user:<feature>` names only configured features
    (metric_features, the key feature, the activation feature); any other is `power_user:other`, so
    input values never become label values (unbounded series, or an email on /metrics)."""
    if value is None or not value.startswith(POWER_USER + ":"):
        return value
    feature = value[len(POWER_USER) + 1:]
    if feature in cfg.power_user_metric_features or feature == cfg.key_feature or feature == cfg.activation_feature:
        return value
    return POWER_USER + ":other"
