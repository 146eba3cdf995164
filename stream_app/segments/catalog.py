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
    # the profile fields membership and next_change read (besides the time), including through the
    # functions they call; None: any field (evaluated after every event)
    reads: frozenset[str] | None = None


def _reads(*fields: str) -> frozenset[str]:
    unknown = set(fields) - set(Profile.__dataclass_fields__)
    assert not unknown, f"not profile fields: {unknown}"
    return frozenset(fields)


LIFECYCLE_READS = _reads("activated_at", "last_activity", "days", "orders", "invite_last", "nps_high_last")


RULES: tuple[Rule, ...] = (
    # rfm reads `members` only for its own name, before the first population (unchanged by events)
    Rule(rfm.FAMILY, rfm.membership, rfm.next_change, rfm.traits, reads=_reads("orders", "refunds")),
    Rule(lifecycle.FAMILY, lifecycle.membership, lifecycle.next_change, lifecycle.traits, reads=LIFECYCLE_READS),
    Rule(intent.SEGMENT, intent.membership, intent.next_change, intent.traits, reads=_reads("intent", "last_order")),
    Rule(engagement.FAMILY, engagement.membership, engagement.next_change, engagement.traits,
         reads=_reads("eng_score", "eng_ref", "last_event")),
    Rule(cart.SEGMENT, cart.membership, cart.next_change, cart.traits, reads=_reads("cart", "cart_opened", "cart_last")),
    Rule(promotions.PRICE_SENSITIVE, promotions.price_membership, promotions.price_next_change, promotions.traits,
         reads=_reads("orders", "promo_clicks")),
    Rule(promotions.PROMO_RESPONSIVE, promotions.promo_membership, promotions.promo_next_change, promotions.traits,
         reads=_reads("orders", "promo_clicks")),
    Rule(usage.POWER_USER, usage.power_memberships, usage.power_next_change, usage.traits, parameterized=True,
         reads=_reads("features")),
    Rule(usage.NEARING_LIMIT, usage.limit_membership, usage.no_timer, usage.traits, reads=_reads("usage")),
    Rule(saas.TRIAL, saas.trial_membership, saas.trial_next_change, saas.traits,
         reads=_reads("trial_started", "trial_ended", "features_ever", "last_order")),
    Rule(saas.ONBOARDING, saas.onboarding_membership, saas.onboarding_next_change, saas.traits,
         reads=_reads("onboarding_step", "onboarding_step_at")),
    # churn_risk decides lifecycle too, and reads the lifecycle member decided before
    Rule(churn_risk.SEGMENT, churn_risk.membership, churn_risk.next_change, churn_risk.traits,
         reads=LIFECYCLE_READS | _reads("days_first", "engaged_until", "members")),
    Rule(predicted.CHURN, predicted.churn_membership, predicted.churn_next_change, predicted.traits,
         reads=_reads("purchase_first_day", "purchase_last_day", "purchase_days", "repeat_spend", "orders_total", "extra")),
    Rule(predicted.HIGH_VALUE, predicted.value_membership, predicted.value_next_change, predicted.traits,
         reads=_reads("purchase_first_day", "purchase_last_day", "purchase_days", "repeat_spend", "orders_total", "extra")),
    Rule("custom", custom.memberships, custom.next_change, lambda profile, t, cfg: {}, parameterized=True),
)
BUILT_IN_IDS = frozenset(rule.segment for rule in RULES) | {"custom"}
_BY_SEGMENT = {rule.segment: rule for rule in RULES}


def memberships(profile: Profile, t: int, cfg: CatalogConfig, touched: set[str] | None = None) -> dict[str, str]:
    """Every segment the user is in at ``t``: {segment or family id: member id}.

    ``touched``: after an event that changed only these fields. A rule that reads none of them keeps
    the member it had (`profile.members`): its inputs are those it was last decided on, and any change
    time alone brings has come due as a timer, which fired before the event (`timeline.take_event`).
    So only the rules the event can concern are evaluated."""
    previous = profile.members
    result: dict[str, str] = {}
    for rule in RULES:
        if touched is not None and rule.reads is not None and touched.isdisjoint(rule.reads):
            if rule.parameterized:
                prefix = rule.segment + ":"
                result.update((segment, member) for segment, member in previous.items() if segment.startswith(prefix))
            elif rule.segment in previous:
                result[rule.segment] = previous[rule.segment]
            continue
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
