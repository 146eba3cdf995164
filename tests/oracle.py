"""A deliberately simple batch recomputation of the catalog, straight from its text.

It shares no aggregation code with the streaming path: it looks at a user's whole history (a list of
Segment events as dicts) at a moment t and answers "which segments is the user in at t?". Slow and
obvious on purpose.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

DAY = 86_400_000
HOUR = 3_600_000
MINUTE = 60_000


def _ts(event: dict[str, Any]) -> int:
    value = event["timestamp"]
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def _name(event: dict[str, Any]) -> str:
    return event.get("event") if event["type"] == "track" else (event.get("name") or "")


def _props(event: dict[str, Any]) -> dict[str, Any]:
    return event.get("properties") or {}


def _within(ts: int, t: int, window: int) -> bool:
    return t - window < ts <= t


def _date(ts: int) -> int:
    return ts // DAY


def lifecycle_at(events: list[dict[str, Any]], t: int) -> str:
    """The lifecycle member at t, from the events at or before t."""
    events = [e for e in events if _ts(e) <= t]
    activity = [e for e in events if e["type"] in ("track", "page", "screen")]
    tracks = [e for e in events if e["type"] == "track"]
    orders = [e for e in tracks if e["event"] == "Order Completed"]
    if not orders:
        return "new_lead"
    if not any(_within(_ts(e), t, 60 * DAY) for e in activity):
        return "churned"
    engaged = len({_date(_ts(e)) for e in activity if _within(_ts(e), t, 28 * DAY)}) >= 4
    if engaged and (
        sum(1 for o in orders if _within(_ts(o), t, 365 * DAY)) >= 3
        or any(_within(_ts(e), t, 90 * DAY) for e in tracks if e["event"] == "Invite Sent")
        or any(_within(_ts(e), t, 180 * DAY) and (_props(e).get("score") or 0) >= 9 for e in tracks if e["event"] == "NPS Submitted")
    ):
        return "loyal_advocate"
    return "engaged" if engaged else "activated"


def memberships(history: list[dict[str, Any]], t: int, key_feature: str | None = None, last_step: int | None = None) -> dict[str, str]:
    events = sorted((e for e in history if _ts(e) <= t), key=lambda e: (_ts(e), e["messageId"]))
    if not events:
        return {}
    result: dict[str, str] = {}
    activity = [e for e in events if e["type"] in ("track", "page", "screen")]
    tracks = [e for e in events if e["type"] == "track"]

    def named(name: str) -> list[dict[str, Any]]:
        return [e for e in tracks if e["event"] == name]

    orders = named("Order Completed")
    # lifecycle
    life = lifecycle_at(events, t)
    result["lifecycle"] = life

    # churn risk: not churned; engaged or loyal at some moment in (t - 60 d, t]: at the window's first
    # moment, or from one of the window's events on (becoming engaged needs an event)
    if life not in ("churned", "new_lead"):
        moments = [t - 60 * DAY + 1] + [_ts(e) for e in events if _within(_ts(e), t, 60 * DAY)]
        if any(lifecycle_at(events, m) in ("engaged", "loyal_advocate") for m in moments):
            recent = {_date(_ts(e)) for e in activity if _within(_ts(e), t, 14 * DAY)}
            prior = {_date(_ts(e)) for e in activity if _within(_ts(e), t - 14 * DAY, 28 * DAY)}
            if not recent or len(recent) < len(prior) / 4:
                result["churn_risk"] = "churn_risk"

    # high intent
    last_order = max((_ts(o) for o in orders), default=None)
    score = 0.0
    for e in events:
        ts = _ts(e)
        if not _within(ts, t, 7 * DAY) or (last_order is not None and ts <= last_order):
            continue
        name, props = _name(e), _props(e)
        if e["type"] == "page" and (name == "Pricing" or "/pricing" in str(props.get("path") or "")):
            score += 2
        elif e["type"] == "track":
            score += {"Product Added": 3, "Checkout Started": 4, "Product Viewed": 0.5}.get(name, 0)
            if name == "Content Downloaded" and props.get("category") == "buying_guide":
                score += 2
    if score >= 6:
        result["high_intent"] = "high_intent"

    # cart: replay the cart events in order, forgetting the cart 7 days after the last cart event
    cart: dict[str, int] = {}
    opened = last_cart = None
    for e in events:
        ts = _ts(e)
        if cart and last_cart is not None and ts >= last_cart + 7 * DAY:
            cart, opened = {}, None
        if e["type"] != "track":
            continue
        name, props = e["event"], _props(e)
        if name == "Order Completed":
            cart, opened = {}, None
            continue
        if name not in ("Product Added", "Product Removed", "Checkout Started"):
            continue
        was_empty = not cart
        last_cart = ts
        item = props.get("product_id", props.get("sku"))
        item = str(item) if item is not None else "own:" + e["messageId"]
        quantity = props.get("quantity", 1)
        if name == "Product Added" and quantity > 0:
            cart[item] = cart.get(item, 0) + quantity
        elif name == "Checkout Started" and was_empty:
            cart["placeholder"] = 1
        elif name == "Product Removed" and item in cart:
            cart[item] -= quantity
            if cart[item] <= 0:
                del cart[item]
        if was_empty and cart:
            opened = ts
        if not cart:
            opened = None
    if cart and last_cart is not None and t >= last_cart + 7 * DAY:
        cart, opened = {}, None
    if cart and opened is not None and t >= opened + 30 * MINUTE:
        result["cart_abandoner"] = "cart_abandoner"

    # engagement
    weights = {"Email Opened": 1, "Email Link Clicked": 3, "Push Notification Opened": 2, "Application Opened": 2,
               "Signed In": 2, "Feature Used": 2, "Order Completed": 5}
    engagement = 0.0
    for e in events:
        w = 0.5 if e["type"] in ("page", "screen") else weights.get(e.get("event"), 0) if e["type"] == "track" else 0
        engagement += w * 2 ** (-(t - _ts(e)) / (14 * DAY))
    result["engagement"] = "highly_engaged" if engagement >= 20 else "moderately_engaged" if engagement >= 3 else "inactive"
    result["_engagement_score"] = repr(engagement)

    # promotions
    recent_orders = [o for o in orders if _within(_ts(o), t, 365 * DAY)]
    if len(recent_orders) >= 2:
        discounted = [o for o in recent_orders if _props(o).get("coupon") or (_props(o).get("discount") or 0) > 0]
        if 2 * len(discounted) >= len(recent_orders):
            result["price_sensitive"] = "price_sensitive"
    for click in named("Promotion Clicked"):
        c = _ts(click)
        if _within(c, t, 90 * DAY) and any(c <= _ts(o) <= c + 72 * HOUR for o in orders):
            result["promo_responsive"] = "promo_responsive"

    # product usage
    uses: dict[str, int] = {}
    for e in named("Feature Used"):
        if _within(_ts(e), t, 7 * DAY) and _props(e).get("feature") is not None:
            uses[str(_props(e)["feature"])] = uses.get(str(_props(e)["feature"]), 0) + 1
    for feature, count in uses.items():
        if count >= 10:
            result[f"power_user:{feature}"] = f"power_user:{feature}"
    latest: dict[str, dict[str, Any]] = {}
    for e in named("Usage Reported"):
        props = _props(e)
        if props.get("metric") is not None and props.get("value") is not None and props.get("limit") is not None:
            latest[str(props["metric"])] = props
    if any(p["limit"] and p["value"] / p["limit"] >= 0.8 for p in latest.values()):
        result["nearing_usage_limit"] = "nearing_usage_limit"
    # RFM, with this user as the whole scored population (rfm_names for a population of users)
    member = rfm_names({"u": history}, t).get("u")
    if member is not None:
        result["rfm"] = member
    return result


RFM_NAMES = [  # (name, rule on R and FM), first match, in the catalog's order
    ("champions", lambda r, fm: r >= 4 and fm >= 4),
    ("loyal", lambda r, fm: r >= 3 and fm >= 4),
    ("potential_loyalist", lambda r, fm: r >= 4 and 2 <= fm <= 3),
    ("new_customer", lambda r, fm: r >= 4 and fm == 1),
    ("need_attention", lambda r, fm: r == 3 and 2 <= fm <= 3),
    ("about_to_sleep", lambda r, fm: r == 3 and fm == 1),
    ("cannot_lose", lambda r, fm: r == 1 and fm == 5),
    ("at_risk", lambda r, fm: r <= 2 and fm >= 3),
    ("hibernating", lambda r, fm: r == 2 and fm <= 2),
    ("lost", lambda r, fm: r == 1 and fm <= 2),
]


def _amount(event: dict[str, Any]) -> float:
    props = _props(event)
    value = props.get("revenue") if props.get("revenue") is not None else props.get("total")
    return float(value or 0)


def rfm_names(histories: dict[str, list[dict[str, Any]]], t: int) -> dict[str, str]:
    """Every scored user's RFM segment at t, by the catalog formula with exact counts."""
    values = {}
    for user, history in histories.items():
        in_window = [e for e in history if e["type"] == "track" and _within(_ts(e), t, 365 * DAY)]
        orders = [e for e in in_window if e["event"] == "Order Completed"]
        if not orders:
            continue
        refunds = [e for e in in_window if e["event"] == "Order Refunded"]
        recency = t - max(_ts(e) for e in orders)
        money = sum(_amount(e) for e in orders) - sum(_amount(e) for e in refunds)
        values[user] = (recency, len(orders), money)
    n = len(values)
    names = {}
    for user, (recency, freq, money) in values.items():
        r = 1 + 5 * sum(1 for v in values.values() if v[0] > recency) // n
        f = 1 + 5 * sum(1 for v in values.values() if v[1] < freq) // n
        m = 1 + 5 * sum(1 for v in values.values() if v[2] < money) // n
        fm = int((f + m) / 2 + 0.5)
        names[user] = next(name for name, rule in RFM_NAMES if rule(r, fm))
    return names
