"""The default catalog as one table of rules: evaluate every membership at a moment, and find the
next moment at which time alone could change one (for every rule, or, with `RuleDues`, only for the
rules whose inputs changed since their due time was last computed)."""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    # next_change is the earliest of some moments fixed by `reads` and the definitions that lie after
    # profile.t (never cfg.rfm_population): a due time computed earlier that is still after the profile's
    # time stays exact while none of `reads` changed (`RuleDues`). False: it depends on the moment in
    # another way, and is computed again at every step.
    due_by_reads: bool = True


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
    # the tier whose threshold the next crossing is computed for is the tier at profile.t (and a crossing
    # that rounding left on the threshold is tried again 1 ms later): not cached
    Rule(engagement.FAMILY, engagement.membership, engagement.next_change, engagement.traits,
         reads=_reads("eng_score", "eng_ref", "last_event"), due_by_reads=False),
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


# RuleDues: the rules whose due time is cached, and those computed at every step
_CACHED = tuple(rule for rule in RULES if rule.reads is not None and rule.due_by_reads)
_CACHED_NEXT = tuple(rule.next_change for rule in _CACHED)
_FRESH_NEXT = tuple(rule.next_change for rule in RULES if rule.reads is None or not rule.due_by_reads)
_NEVER = 1 << 62  # "no due time" in RuleDues' lists (None elsewhere), so that min() takes them as they are
_STALE: dict[frozenset[str], tuple[int, ...]] = {}  # touched fields -> the cached rules (positions) reading one


def _stale(touched: set[str]) -> tuple[int, ...]:
    key = frozenset(touched)
    stale = _STALE.get(key)
    if stale is None:
        if len(_STALE) >= 4096:  # the field combinations events touch are few; never grow without bound
            _STALE.clear()
        stale = _STALE[key] = tuple(n for n, rule in enumerate(_CACHED) if not key.isdisjoint(rule.reads or ()))
    return stale


# the definitions' fields a next_change may read: all of them but the RFM population, so cached due
# times survive a population refresh (a new `CatalogConfig` made by `dataclasses.replace`)
_DUE_CONFIG_FIELDS = tuple(name for name in CatalogConfig.__dataclass_fields__ if name != "rfm_population")
_TOKENS: dict[int, tuple[CatalogConfig, CatalogConfig]] = {}  # id(cfg) -> (cfg, its token); holds cfg, so its id
_LAST_TOKEN: list[Any] = [None, None]  # the last (cfg, token) asked for


def _dues_token(cfg: CatalogConfig) -> CatalogConfig:
    """What the rules' next_change read of ``cfg``, as one object: the same object for definitions that
    differ only in their population (each other field the same object, as after
    `replace(cfg, rfm_population=...)`), without the population (a cached due time keeps no population
    alive). Conservative: equal but distinct values (definitions loaded again) give another token."""
    last = _LAST_TOKEN
    if last[0] is cfg:
        return last[1]
    known = _TOKENS.get(id(cfg))
    if known is not None and known[0] is cfg:
        last[:] = known
        return known[1]
    token = next((other_token for other, other_token in _TOKENS.values()
                  if all(getattr(other, name) is getattr(cfg, name) for name in _DUE_CONFIG_FIELDS)), None)
    if token is None:
        token = replace(cfg, rfm_population=None)
    if len(_TOKENS) >= 32:
        _TOKENS.clear()
    _TOKENS[id(cfg)] = (cfg, token)
    last[:] = (cfg, token)
    return token


class RuleDues:
    """One profile's due times, rule by rule, as last computed, and the profile fields changed since.

    Whoever changes the profile says which fields it changed (`touch`), or that anything may have
    changed (`reset`); `next_change` then computes again only the rules that read a touched field, those
    whose cached due time is not after the profile's time any more (time alone may have changed them),
    and those not cached (`Rule.due_by_reads`); with nothing cached, or under other definitions, every
    rule. The result equals `next_change(profile, cfg)` exactly (tests/test_rule_dues.py): a rule's
    due time is the earliest of moments fixed by its fields that lie after the profile's time, so while
    its fields are unchanged and that moment is still ahead, it is still the earliest. `expire` only
    drops elements whose moments have passed, so it needs no `touch`. With nothing touched and the
    profile's time unchanged, the last answer is the answer."""

    __slots__ = ("token", "cached", "fresh", "touched", "t", "due")

    def __init__(self) -> None:
        self.token: CatalogConfig | None = None  # `_dues_token` of the definitions the due times were computed under
        self.cached: list[int] | None = None  # the cached rules' due times (_NEVER: none); None: nothing cached
        self.fresh: list[int | None] = []  # the other rules' due times, as last computed
        self.touched: set[str] = set()
        self.t = 0  # the profile's time when they were computed
        self.due: int | None = None  # and the earliest of them

    def touch(self, fields: Any) -> None:
        self.touched.update(fields)

    def reset(self) -> None:
        self.cached = None
        self.touched.clear()

    def next_change(self, profile: Profile, cfg: CatalogConfig) -> int | None:
        """`next_change(profile, cfg)`, computing again only what may have changed."""
        t = profile.t
        touched = self.touched
        cached = self.cached
        last = _LAST_TOKEN
        token = last[1] if last[0] is cfg else _dues_token(cfg)
        if cached is None or token is not self.token:
            cached = self.cached = [_NEVER if (due := next_change_of(profile, cfg)) is None else due
                                    for next_change_of in _CACHED_NEXT]
            self.token = token
            touched.clear()
            due = min(cached)
        elif touched or t != self.t:
            if touched:
                for n in _stale(touched):
                    due = _CACHED_NEXT[n](profile, cfg)
                    cached[n] = _NEVER if due is None else due
                touched.clear()
            due = min(cached)
            if due <= t:  # time alone may have changed these
                for n, due in enumerate(cached):
                    if due <= t:
                        due = _CACHED_NEXT[n](profile, cfg)
                        cached[n] = _NEVER if due is None else due
                due = min(cached)
        else:
            return self.due  # nothing changed since (e.g. the user's next event looks for timers first)
        self.fresh = fresh = [next_change_of(profile, cfg) for next_change_of in _FRESH_NEXT]
        for value in fresh:
            if value is not None and value < due:
                due = value
        self.t = t
        self.due = due = None if due == _NEVER else due
        return due

    def per_rule(self) -> list[int | None] | None:
        """Each rule's due time as last computed, in the order of RULES (None: nothing computed yet)."""
        if self.cached is None:
            return None
        cached, fresh = iter(self.cached), iter(self.fresh)
        values = []
        for rule in RULES:
            if rule.reads is not None and rule.due_by_reads:
                due = next(cached)
                values.append(None if due == _NEVER else due)
            else:
                values.append(next(fresh))
        return values


def traits(segment: str, profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    if cfg.custom is not None and segment in cfg.custom.ids:
        return custom.traits(segment, profile, t, cfg)
    rule = _BY_SEGMENT.get(segment) or _BY_SEGMENT.get(segment.split(":", 1)[0])
    return rule.traits(profile, t, cfg) if rule is not None else {}
