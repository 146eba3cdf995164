"""The per-user profile: one compact record holding every windowed aggregate the catalog needs.

Layout (see docs/state.md). Every time is epoch ms of event time. Lists hold only elements that can
still matter to some window; `expire` drops the rest, so a profile stays small and bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Profile:
    t: int = 0  # moment up to which this user's timeline has been evaluated
    first_seen: int = 0
    last_event: int = 0  # newest event of any type (dormancy)
    last_activity: int | None = None  # newest track/page/screen event
    activated_at: int | None = None  # first activation event
    days: dict[int, int] = field(default_factory=dict)  # UTC day -> newest activity ts on that day
    orders: list[list[Any]] = field(default_factory=list)  # [ts, amount, discounted(0/1)]
    refunds: list[list[Any]] = field(default_factory=list)  # [ts, amount]
    last_order: int | None = None
    intent: list[list[Any]] = field(default_factory=list)  # [ts, weight]
    cart: dict[str, int] = field(default_factory=dict)  # item -> quantity
    cart_opened: int | None = None
    cart_last: int | None = None  # newest cart event
    invite_last: int | None = None
    nps_high_last: int | None = None
    seen: dict[int, int] = field(default_factory=dict)  # messageId hash -> event ts (dedup window)
    pending: list[list[Any]] = field(default_factory=list)  # compact events not yet applied, sorted
    members: dict[str, str] = field(default_factory=dict)  # segment/family -> member id
    extra: dict[str, Any] = field(default_factory=dict)  # room for later families without a version bump
    # whole-history purchase summary for BG/NBD + Gamma-Gamma (same-day orders merged)
    orders_total: int = 0
    purchase_first_day: int | None = None  # UTC day of the first order
    purchase_last_day: int | None = None
    purchase_days: int = 0  # distinct purchase days; x = purchase_days - 1
    repeat_spend: float = 0  # spend on purchase days after the first
    # engagement: the decayed score at eng_ref (score at t = eng_score * 2^(-(t - eng_ref) / half life))
    eng_score: float = 0  # an int 0 packs in one byte
    eng_ref: int = 0
    promo_clicks: list[int] = field(default_factory=list)  # `Promotion Clicked` times, sorted (90 d)
    features: dict[str, list[int]] = field(default_factory=dict)  # feature -> `Feature Used` times (7 d)
    usage: dict[str, list[Any]] = field(default_factory=dict)  # metric -> [ts, value, limit] of the latest report
    days_first: dict[int, int] = field(default_factory=dict)  # UTC day -> earliest activity ts on that day
    engaged_until: int | None = None  # the last moment the user was engaged / loyal_advocate (after leaving)
    features_ever: list[str] = field(default_factory=list)  # every feature used (trial activation)
    trial_started: int | None = None  # latest `Trial Started`
    trial_ended: int | None = None  # latest `Trial Ended`
    onboarding_step: int = 0  # highest `Onboarding Step Completed` step
    onboarding_step_at: int | None = None  # when that step was first completed


def forget(profile: Profile) -> None:
    """Dormancy: the user is forgotten as if never seen, in place; events still waiting to be applied
    (`pending`) and the deduplication memory (`seen`) are kept."""
    fresh = Profile(pending=profile.pending, seen=profile.seen)
    for name in Profile.__dataclass_fields__:
        setattr(profile, name, getattr(fresh, name))
