"""The default catalog as one table of rules: evaluate every membership at a moment, and find the
next moment at which time alone could change one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..state.profile import Profile
from . import cart, churn_risk, custom, engagement, intent, lifecycle, predicted, promotions, rfm, saas, usage
from .config import CatalogConfig


@dataclass(frozen=True)
class Rule:
    """One segment or family. `membership` returns the member id (a family's member, or the segment's
    own id) or None; `next_change` the earliest moment after profile.t at which time alone may change it."""

    segment: str
    membership: Callable[[Profile, int, CatalogConfig], Any]
    next_change: Callable[[Profile, CatalogConfig], int | None]
    traits: Callable[[Profile, int, CatalogConfig], dict[str, Any]]
    parameterized: bool = False  # membership returns {"<segment>:<parameter>": member, ...}


RULES: tuple[Rule, ...] = (
    Rule(rfm.FAMILY, rfm.membership, rfm.next_change, rfm.traits),
    Rule(lifecycle.FAMILY, lifecycle.membership, lifecycle.next_change, lifecycle.traits),
    Rule(intent.SEGMENT, intent.membership, intent.next_change, intent.traits),
    Rule(engagement.FAMILY, engagement.membership, engagement.next_change, engagement.traits),
    Rule(cart.SEGMENT, cart.membership, cart.next_change, cart.traits),
    Rule(promotions.PRICE_SENSITIVE, promotions.price_membership, promotions.price_next_change, promotions.traits),
    Rule(promotions.PROMO_RESPONSIVE, promotions.promo_membership, promotions.promo_next_change, promotions.traits),
    Rule(usage.POWER_USER, usage.power_memberships, usage.power_next_change, usage.traits, parameterized=True),
    Rule(usage.NEARING_LIMIT, usage.limit_membership, usage.no_timer, usage.traits),
    Rule(saas.TRIAL, saas.trial_membership, saas.trial_next_change, saas.traits),
    Rule(saas.ONBOARDING, saas.onboarding_membership, saas.onboarding_next_change, saas.traits),
    Rule(churn_risk.SEGMENT, churn_risk.membership, churn_risk.next_change, churn_risk.traits),
    Rule(predicted.CHURN, predicted.churn_membership, predicted.churn_next_change, predicted.traits),
    Rule(predicted.HIGH_VALUE, predicted.value_membership, predicted.value_next_change, predicted.traits),
    Rule("custom", custom.memberships, custom.next_change, lambda profile, t, cfg: {}, parameterized=True),
)
BUILT_IN_IDS = frozenset(rule.segment for rule in RULES) | {"custom"}
_BY_SEGMENT = {rule.segment: rule for rule in RULES}


def memberships(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, str]:
    """Every segment the user is in at ``t``: {segment or family id: member id}."""
    result: dict[str, str] = {}
    for rule in RULES:
        member = rule.membership(profile, t, cfg)
        if rule.parameterized:
            result.update(member)
        elif member is not None:
            result[rule.segment] = member
    return result


def next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    """Earliest moment after ``profile.t`` at which some membership may change without an event."""
    dues = [d for rule in RULES if (d := rule.next_change(profile, cfg)) is not None]
    return min(dues) if dues else None


def traits(segment: str, profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    if cfg.custom is not None and segment in cfg.custom.ids:
        return custom.traits(segment, profile, t, cfg)
    rule = _BY_SEGMENT.get(segment) or _BY_SEGMENT.get(segment.split(":", 1)[0])
    return rule.traits(profile, t, cfg) if rule is not None else {}
