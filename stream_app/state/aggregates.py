"""Fold one event into a profile's windowed aggregates, and expire what no window can see any more.

Pure functions over a :class:`Profile`. Which events feed which aggregate is the catalog's event
vocabulary; which windows read them lives in ``stream_app.segments``.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from typing import Any

from ..events import Event
from ..segments import custom
from ..segments.config import CatalogConfig
from ..timeutil import utc_day
from . import bounds
from .profile import Profile

CART_PLACEHOLDER = "\x00checkout"
CART_OVERFLOW = "\x00more"
MAX_FEATURES_KEPT = bounds.FEATURES_EVER
FEATURE_USES_KEPT = 64  # per feature: counts exact up to this (power_user needs only the newest min_uses)


def intent_weight(event: Event, cfg: CatalogConfig) -> float:
    weights = cfg.intent_weights
    if event.type == "page":
        path = str(event.props.get("path") or "")
        if event.name == "Pricing" or "/pricing" in path:
            return weights.get("page:Pricing", 0.0)
        return 0.0
    if event.type != "track":
        return 0.0
    if event.name == "Content Downloaded":
        return weights.get(f"Content Downloaded:{event.props.get('category')}", 0.0)
    return weights.get(event.name, 0.0)


def _amount(props: dict) -> float:
    value = props.get("revenue")
    if value is None:
        value = props.get("total")
    return float(value) if value is not None else 0.0


def _cart_item(event: Event) -> str:
    item = event.props.get("product_id")
    if item is None:
        item = event.props.get("sku")
    return str(item) if item is not None else f"\x00own:{event.message_id}"


def _quantity(props: dict) -> int:
    qty = props.get("quantity")
    if qty is None:
        return 1
    return max(int(qty), 0)


def is_activation(event: Event, cfg: CatalogConfig) -> bool:
    if cfg.activation_feature is not None:
        return event.name == "Feature Used" and event.props.get("feature") == cfg.activation_feature
    return event.type == "track" and event.name == cfg.activation_event


def apply_event(profile: Profile, event: Event, cfg: CatalogConfig) -> set[str]:
    """Fold ``event`` into ``profile`` (order-sensitive only for the cart, as the catalog says). Returns
    the names of the profile fields it may have changed: the rules that read none of them keep their
    membership (`catalog.memberships` with `touched`)."""
    ts = event.ts
    touched = {"first_seen", "last_event"}
    if profile.first_seen == 0 or ts < profile.first_seen:
        profile.first_seen = ts
    profile.last_event = max(profile.last_event, ts)
    if event.is_activity:
        touched.update(("last_activity", "days", "days_first"))
        profile.last_activity = ts if profile.last_activity is None else max(profile.last_activity, ts)
        day = utc_day(ts)
        if profile.days.get(day, -1) < ts:
            profile.days[day] = ts
        first = profile.days_first.get(day)
        if first is None or ts < first:
            profile.days_first[day] = ts
    if is_activation(event, cfg) and (profile.activated_at is None or ts < profile.activated_at):
        touched.add("activated_at")
        profile.activated_at = ts

    weight = intent_weight(event, cfg)
    if weight:
        touched.add("intent")
        insort(profile.intent, [ts, weight])
        _cap_oldest(profile.intent, bounds.INTENT_ENTRIES, "intent")
    if _add_engagement(profile, event, cfg):
        touched.update(("eng_score", "eng_ref"))
    if cfg.custom is not None:
        touched.add("extra")
        custom.apply_event(profile, event, cfg.custom)

    if event.type != "track":
        return touched
    name = event.name
    props = event.props
    if name == "Order Completed":
        touched.update(("orders", "last_order", "cart", "cart_opened", "orders_total", "purchase_first_day",
                        "purchase_last_day", "purchase_days", "repeat_spend"))
        discounted = 1 if (props.get("coupon") or (props.get("discount") or 0) > 0) else 0
        insort(profile.orders, [ts, _amount(props), discounted])
        _cap_oldest(profile.orders, bounds.ORDERS, "orders")
        _add_purchase(profile, utc_day(ts), _amount(props))
        profile.last_order = ts if profile.last_order is None else max(profile.last_order, ts)
        if profile.cart_last is None or ts >= profile.cart_last:  # a late, older order leaves a newer cart alone
            profile.cart.clear()
            profile.cart_opened = None
    elif name == "Order Refunded":
        touched.add("refunds")
        insort(profile.refunds, [ts, _amount(props)])
        _cap_oldest(profile.refunds, bounds.REFUNDS, "refunds")
    elif name in ("Product Added", "Checkout Started", "Product Removed"):
        if profile.last_order is None or ts >= profile.last_order:  # a late add from before the last order is not in the cart
            touched.update(("cart", "cart_opened", "cart_last"))
            _apply_cart_event(profile, event)
    elif name == "Promotion Clicked":
        touched.add("promo_clicks")
        insort(profile.promo_clicks, ts)
        _cap_oldest(profile.promo_clicks, bounds.PROMO_CLICKS, "promo_clicks")
    elif name == "Feature Used":
        feature = props.get("feature")
        if feature is not None:
            touched.update(("features", "features_ever"))
            _add_feature_use(profile, str(feature), ts, cfg)
            if str(feature) not in profile.features_ever:
                if len(profile.features_ever) < MAX_FEATURES_KEPT or str(feature) == cfg.key_feature:
                    profile.features_ever.append(str(feature))
                else:
                    bounds.evicted("features_ever")
    elif name == "Trial Started":
        touched.add("trial_started")
        profile.trial_started = ts if profile.trial_started is None else max(profile.trial_started, ts)
    elif name == "Trial Ended":
        touched.add("trial_ended")
        profile.trial_ended = ts if profile.trial_ended is None else max(profile.trial_ended, ts)
    elif name == "Onboarding Step Completed":
        touched.update(("onboarding_step", "onboarding_step_at"))
        step = props.get("step")
        if step is not None and int(step) > profile.onboarding_step:
            profile.onboarding_step = int(step)
            profile.onboarding_step_at = ts
        elif step is not None and int(step) == profile.onboarding_step and profile.onboarding_step_at is not None:
            profile.onboarding_step_at = min(profile.onboarding_step_at, ts)
    elif name == "Usage Reported":
        touched.add("usage")
        metric, value, limit = props.get("metric"), props.get("value"), props.get("limit")
        if metric is not None and value is not None and limit is not None:
            latest = profile.usage.get(str(metric))
            if latest is None or latest[0] <= ts:
                profile.usage.pop(str(metric), None)  # re-inserted last: the dict is in report order
                profile.usage[str(metric)] = [ts, value, limit]
                if len(profile.usage) > bounds.USAGE_METRICS:
                    del profile.usage[min(profile.usage, key=lambda m: profile.usage[m][0])]
                    bounds.evicted("usage")
    elif name == "Invite Sent":
        touched.add("invite_last")
        profile.invite_last = ts if profile.invite_last is None else max(profile.invite_last, ts)
    elif name == "NPS Submitted":
        touched.add("nps_high_last")
        score = props.get("score")
        if score is not None and score >= cfg.loyal_nps_min_score:
            profile.nps_high_last = ts if profile.nps_high_last is None else max(profile.nps_high_last, ts)
    return touched


def _cap_oldest(entries: list[Any], limit: int, structure: str) -> None:
    """A time-sorted list keeps its newest ``limit`` entries."""
    if len(entries) > limit:
        del entries[: len(entries) - limit]
        bounds.evicted(structure)


def _add_feature_use(profile: Profile, feature: str, ts: int, cfg: CatalogConfig) -> None:
    uses = profile.features.pop(feature, None)  # re-inserted last: the dict is in order of last use
    if uses is None:
        uses = []
        if len(profile.features) >= bounds.FEATURES:  # the least recently used feature goes
            del profile.features[next(iter(profile.features))]
            bounds.evicted("features")
    insort(uses, ts)
    keep = max(FEATURE_USES_KEPT, cfg.power_user_min_uses)
    if len(uses) > keep:
        del uses[: len(uses) - keep]  # only the newest uses can decide "at least N in the window"
    profile.features[feature] = uses


def engagement_weight(event: Event, cfg: CatalogConfig) -> float:
    if event.type in ("page", "screen"):
        return cfg.engagement_weights.get(event.type, 0.0)
    if event.type == "track":
        return cfg.engagement_weights.get(event.name, 0.0)
    return 0.0


def _add_engagement(profile: Profile, event: Event, cfg: CatalogConfig) -> bool:
    """Keep the decayed sum as one number at a reference time: adding an event is O(1), late or not.
    Returns whether the event counts."""
    weight = engagement_weight(event, cfg)
    if not weight:
        return False
    half_life = cfg.engagement_half_life_ms
    if profile.eng_ref == 0 or event.ts >= profile.eng_ref:
        decayed = profile.eng_score * 2.0 ** (-(event.ts - profile.eng_ref) / half_life) if profile.eng_ref else 0.0
        profile.eng_score = decayed + weight
        profile.eng_ref = event.ts
    else:
        profile.eng_score += weight * 2.0 ** (-(profile.eng_ref - event.ts) / half_life)
    return True


def _add_purchase(profile: Profile, day: int, amount: float) -> None:
    """Whole-history purchase summary, same-day orders merged (the BG/NBD "repeat purchase days").

    Orders arrive in event-time order apart from late ones; a late order on a day between the first
    and the last purchase day is counted as a new purchase day (the days in between are not kept)."""
    profile.orders_total += 1
    first, last = profile.purchase_first_day, profile.purchase_last_day
    if first is None or last is None:
        profile.purchase_first_day = profile.purchase_last_day = day
        profile.purchase_days = 1
    elif day == first:
        return  # first-day spend is not part of the repeat spend
    elif day == last:
        profile.repeat_spend += amount
    elif day > last:
        profile.purchase_days += 1
        profile.purchase_last_day = day
        profile.repeat_spend += amount
    elif day < first:
        profile.purchase_days += 1
        profile.purchase_first_day = day
    else:
        profile.purchase_days += 1
        profile.repeat_spend += amount


def _apply_cart_event(profile: Profile, event: Event) -> None:
    cart = profile.cart
    was_empty = not cart
    profile.cart_last = event.ts if profile.cart_last is None else max(profile.cart_last, event.ts)
    if event.name == "Product Added":
        qty = _quantity(event.props)
        if qty == 0:
            return
        item = _cart_item(event)
        if item not in cart and len(cart) >= bounds.CART_ITEMS:
            item = CART_OVERFLOW  # a removal cannot name it: the cart stays open until an order or expiry
            bounds.evicted("cart_items")
        cart[item] = cart.get(item, 0) + qty
    elif event.name == "Checkout Started":
        if was_empty:
            cart[CART_PLACEHOLDER] = 1
    else:  # Product Removed
        item = _cart_item(event)
        if item in cart:
            left = cart[item] - _quantity(event.props)
            if left > 0:
                cart[item] = left
            else:
                del cart[item]
    if was_empty and cart:
        profile.cart_opened = event.ts
    elif not cart:
        profile.cart_opened = None


def expire(profile: Profile, t: int, cfg: CatalogConfig) -> None:
    """Apply time-driven state changes due by ``t`` and drop elements that no window can see at ``t``."""
    if profile.cart and profile.cart_last is not None and t >= profile.cart_last + cfg.cart_expiry_ms:
        profile.cart.clear()  # the 7-day expiry forgets the cart
        profile.cart_opened = None
    day_horizon = t - max(cfg.activity_days_kept_ms, cfg.engaged_window_ms, cfg.churn_risk_recent_ms + cfg.churn_risk_prior_ms)
    if profile.days and min(profile.days.values()) <= day_horizon:
        profile.days = {d: ts for d, ts in profile.days.items() if ts > day_horizon}
        profile.days_first = {d: ts for d, ts in profile.days_first.items() if d in profile.days}
    order_horizon = t - cfg.order_window_ms
    _drop_through(profile.orders, order_horizon)
    _drop_through(profile.refunds, order_horizon)
    intent_horizon = t - cfg.intent_window_ms
    if profile.last_order is not None and profile.last_order > intent_horizon:
        intent_horizon = profile.last_order  # events at or before the latest order do not count
    _drop_through(profile.intent, intent_horizon)
    promo_horizon = t - cfg.promo_window_ms
    if profile.promo_clicks and profile.promo_clicks[0] <= promo_horizon:
        del profile.promo_clicks[: bisect_right(profile.promo_clicks, promo_horizon)]
    feature_horizon = t - cfg.power_user_window_ms
    # the dict is in order of last use: features unused for the whole window are at its front
    while profile.features:
        feature = next(iter(profile.features))
        if profile.features[feature][-1] > feature_horizon:
            break
        del profile.features[feature]
    if cfg.custom is not None or profile.extra:
        custom.expire(profile, t, cfg.custom)
    _expire_seen(profile, t - cfg.dedup_window_ms)


def _drop_through(entries: list[list[Any]], horizon: int) -> None:
    """Drop the entries of a list sorted by time (first element) at or before ``horizon``."""
    if entries and entries[0][0] <= horizon:
        del entries[: bisect_right(entries, horizon, key=lambda entry: entry[0])]


def _expire_seen(profile: Profile, horizon: int) -> None:
    """`seen` is in insertion order, and an id is remembered from max(its time, the user's time), which
    never decreases: so the oldest ids are at the front, and expiry stops at the first one still in the
    window. Past the bound the oldest ids go (deduplication stays exact for the newest ids)."""
    seen = profile.seen
    stale = []
    for key, remembered in seen.items():
        if remembered > horizon and len(seen) - len(stale) <= bounds.SEEN_IDS:
            break
        if remembered > horizon:
            bounds.evicted("seen")
        stale.append(key)
    for key in stale:
        del seen[key]
