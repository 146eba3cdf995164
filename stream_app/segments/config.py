"""Catalog parameters: every window, threshold and weight of the default segments in one place.

The defaults are ../shared/reference/segment-catalog.md, written out in `segments/defaults.yaml`;
`segments/definitions.py` loads such a file into this object. The rules only ever read this object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..timeutil import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    version: str = "catalog-1"
    lateness_ms: int = 5 * SECOND_MS
    dedup_window_ms: int = 7 * DAY_MS
    dormant_after_ms: int = 400 * DAY_MS
    historical_after_ms: int = 1 * HOUR_MS
    # history is decided in its own time: an event older than this when read belongs to a backfill
    backfill_age_ms: int = 1 * HOUR_MS
    backfill_drained_after_ms: int = 60 * SECOND_MS  # wall time without a backfill event

    # lifecycle
    activation_event: str = "Order Completed"
    activation_feature: str | None = None  # when set, activation is `Feature Used` with this feature
    churn_inactive_ms: int = 60 * DAY_MS
    engaged_window_ms: int = 28 * DAY_MS
    engaged_min_days: int = 4
    loyal_orders_window_ms: int = 365 * DAY_MS
    loyal_min_orders: int = 3
    loyal_invite_window_ms: int = 90 * DAY_MS
    loyal_nps_window_ms: int = 180 * DAY_MS
    loyal_nps_min_score: float = 9

    # intent
    intent_window_ms: int = 7 * DAY_MS
    intent_threshold: float = 6
    intent_weights: dict[str, float] = field(default_factory=lambda: {
        "page:Pricing": 2, "Product Added": 3, "Checkout Started": 4,
        "Content Downloaded:buying_guide": 2, "Product Viewed": 0.5,
    })

    # cart
    cart_abandon_after_ms: int = 30 * MINUTE_MS
    cart_expiry_ms: int = 7 * DAY_MS

    # order history kept for lifecycle, RFM and promotions
    order_window_ms: int = 365 * DAY_MS
    # activity days kept (engaged: 28 d; churn_risk: 14 + 28 d)
    activity_days_kept_ms: int = 60 * DAY_MS

    # engagement tiers: score = sum of weight x 2^(-age / half life)
    engagement_half_life_ms: int = 14 * DAY_MS
    engagement_high: float = 20
    engagement_moderate: float = 3
    engagement_weights: dict[str, float] = field(default_factory=lambda: {
        "Email Opened": 1, "Email Link Clicked": 3, "Push Notification Opened": 2, "Application Opened": 2,
        "Signed In": 2, "page": 0.5, "screen": 0.5, "Feature Used": 2, "Order Completed": 5,
    })

    # promotions
    price_sensitive_window_ms: int = 365 * DAY_MS
    price_sensitive_min_orders: int = 2
    price_sensitive_min_share: float = 0.5
    promo_window_ms: int = 90 * DAY_MS
    promo_order_within_ms: int = 72 * HOUR_MS

    # product usage
    power_user_window_ms: int = 7 * DAY_MS
    power_user_min_uses: int = 10
    # metric labels never come from input: these features (and the key and activation features) are named,
    # every other power_user:<feature> is labelled power_user:other
    power_user_metric_features: tuple[str, ...] = ()
    usage_limit_ratio: float = 0.8

    # SaaS lifecycle (both off until configured)
    key_feature: str | None = None  # trial_not_activated: the feature a trial user should use
    trial_grace_ms: int = 3 * DAY_MS
    onboarding_last_step: int | None = None  # stuck_in_onboarding
    onboarding_stall_ms: int = 24 * HOUR_MS

    # churn risk: A = active days in the last 14 d, B = in the 28 d before; at risk when A == 0 or A < B / 4
    churn_risk_recent_ms: int = 14 * DAY_MS
    churn_risk_prior_ms: int = 28 * DAY_MS
    churn_risk_divisor: int = 4
    churn_risk_engaged_within_ms: int = 60 * DAY_MS

    # predictive segments (BG/NBD + Gamma-Gamma); active only when a fitted model is loaded
    predicted_churn_enabled: bool = True
    predicted_churn_min_orders: int = 2
    predicted_churn_p_alive_below: float = 0.3
    high_value_enabled: bool = True
    high_value_top_share: float = 0.10
    model: Any = None  # a loaded stream_app.predict PredictiveModel, or None

    # RFM: orders in the window scored against the population (segments/rfm.py, rfm_population.py)
    rfm_enabled: bool = True
    rfm_window_ms: int = 365 * DAY_MS
    rfm_refresh_ms: int = 30 * SECOND_MS  # the worker merges and re-scores at least this often
    # (name, R low, R high, FM low, FM high), the first match names the segment
    rfm_rules: tuple[tuple[str, int, int, int, int], ...] = (
        ("champions", 4, 5, 4, 5),
        ("loyal", 3, 5, 4, 5),
        ("potential_loyalist", 4, 5, 2, 3),
        ("new_customer", 4, 5, 1, 1),
        ("need_attention", 3, 3, 2, 3),
        ("about_to_sleep", 3, 3, 1, 1),
        ("cannot_lose", 1, 1, 5, 5),
        ("at_risk", 1, 2, 3, 5),
        ("hibernating", 2, 2, 1, 2),
        ("lost", 1, 1, 1, 2),
    )
    # user-defined segments (segments/custom.py), compiled from the file's custom_segments list
    custom: Any = None
    rfm_population: Any = None  # the merged RfmPopulation; None until the first refresh (not part of the version)

