"""SaaS lifecycle segments (catalog); both are off until configured:

- `trial_not_activated`: the latest `Trial Started` was more than 3 days ago, with no `Trial Ended` or
  order since, and the key feature (`key_feature`) has never been used;
- `stuck_in_onboarding`: the highest `Onboarding Step Completed` step is k, below the configured last
  step (`onboarding.last_step`), and there has been no higher step for 24 hours since step k.
"""

from __future__ import annotations

from typing import Any

from ..state.profile import Profile
from .config import CatalogConfig

TRIAL = "trial_not_activated"
ONBOARDING = "stuck_in_onboarding"


def _trial_open(profile: Profile) -> bool:
    started = profile.trial_started
    if started is None:
        return False
    closed_by = max((x for x in (profile.trial_ended, profile.last_order) if x is not None), default=None)
    return closed_by is None or closed_by < started


def trial_membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    if cfg.key_feature is None or not _trial_open(profile) or cfg.key_feature in profile.features_ever:
        return None
    assert profile.trial_started is not None
    return TRIAL if t > profile.trial_started + cfg.trial_grace_ms else None


def trial_next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    if cfg.key_feature is None or not _trial_open(profile) or profile.trial_started is None:
        return None
    due = profile.trial_started + cfg.trial_grace_ms + 1  # "more than 3 days ago"
    return due if due > profile.t else None


def onboarding_membership(profile: Profile, t: int, cfg: CatalogConfig) -> str | None:
    last = cfg.onboarding_last_step
    if last is None or profile.onboarding_step_at is None or profile.onboarding_step >= last:
        return None
    return ONBOARDING if t >= profile.onboarding_step_at + cfg.onboarding_stall_ms else None


def onboarding_next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    last = cfg.onboarding_last_step
    if last is None or profile.onboarding_step_at is None or profile.onboarding_step >= last:
        return None
    due = profile.onboarding_step_at + cfg.onboarding_stall_ms
    return due if due > profile.t else None


def traits(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    return {
        "trial_days": None if profile.trial_started is None else round((t - profile.trial_started) / 86_400_000, 3),
        "key_feature_used": cfg.key_feature in profile.features_ever if cfg.key_feature else None,
        "onboarding_step": profile.onboarding_step,
        "onboarding_last_step": cfg.onboarding_last_step,
    }
