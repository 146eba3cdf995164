"""The catalog's Cart, Intent and Lifecycle rules, written from ../shared/reference/segment-catalog.md for
the peer implementations (textbook Faust, Quix Streams). It shares no code with stream_app: a peer is
what a team would write by hand in that framework, so the rules are plain functions over a JSON-able
dict per user, the state those frameworks serialise for you.

Event time, as in the catalog: a user's state is decided at moments (an event's timestamp, or the due
time of a time-driven change). Before an event is applied, the user's own due changes at or before its
timestamp fire first (a timer due at the same moment as an event goes first). Idle users' changes fire
when the framework's partition clock passes their due time (`advance(user, state, clock)`), which each
peer drives its own way (see textbook_faust.py and quix_app.py).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

MINUTE = 60_000
DAY = 86_400_000
CART_ABANDON_AFTER = 30 * MINUTE
CART_EXPIRY = 7 * DAY
INTENT_WINDOW = 7 * DAY
INTENT_THRESHOLD = 6.0
INTENT_WEIGHTS = {"Product Added": 3.0, "Checkout Started": 4.0, "Product Viewed": 0.5}
PRICING_WEIGHT = 2.0
BUYING_GUIDE_WEIGHT = 2.0
CHURN_AFTER = 60 * DAY
ENGAGED_WINDOW = 28 * DAY
ENGAGED_MIN_DAYS = 4
LOYAL_ORDERS_WINDOW, LOYAL_MIN_ORDERS = 365 * DAY, 3
LOYAL_INVITE_WINDOW = 90 * DAY
LOYAL_NPS_WINDOW, LOYAL_NPS_MIN = 180 * DAY, 9
ALLOWANCE = 5_000  # the partition clock trails the newest event by this much (the catalog's lateness allowance)
SEGMENTS = ("cart_abandoner", "high_intent", "lifecycle")
PLACEHOLDER = "\x00checkout"


def new_state() -> dict[str, Any]:
    return {"t": 0, "m": {}, "cart": {}, "co": None, "cl": None, "it": [], "lo": None, "act": None,
            "la": None, "days": {}, "ord": [], "inv": None, "nps": None}


def event_ms(value: Any) -> int:
    if isinstance(value, int):
        return value
    return round(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


def _max(a: int | None, b: int) -> int:
    return b if a is None or b > a else a


def _intent_weight(kind: str, name: str, props: dict) -> float:
    if kind == "page":
        return PRICING_WEIGHT if name == "Pricing" or "/pricing" in str(props.get("path") or "") else 0.0
    if kind != "track":
        return 0.0
    if name == "Content Downloaded":
        return BUYING_GUIDE_WEIGHT if props.get("category") == "buying_guide" else 0.0
    return INTENT_WEIGHTS.get(name, 0.0)


def _fold(s: dict, ev: dict, ts: int) -> None:
    kind = ev.get("type")
    name = ev.get("event") if kind == "track" else ev.get("name")
    props = ev.get("properties") or {}
    if kind in ("track", "page", "screen"):
        s["la"] = _max(s["la"], ts)
        day = str(ts // DAY)
        if s["days"].get(day, -1) < ts:
            s["days"][day] = ts
    weight = _intent_weight(kind, name, props)
    if weight:
        s["it"].append([ts, weight])
        s["it"].sort()
    if kind != "track":
        return
    if name == "Order Completed":
        s["act"] = ts if s["act"] is None else min(s["act"], ts)
        s["ord"].append(ts)
        s["ord"].sort()
        s["lo"] = _max(s["lo"], ts)
        if s["cl"] is None or ts >= s["cl"]:
            s["cart"] = {}
            s["co"] = None
    elif name in ("Product Added", "Checkout Started", "Product Removed"):
        if s["lo"] is None or ts >= s["lo"]:
            _cart(s, name, props, ev.get("messageId"), ts)
    elif name == "Invite Sent":
        s["inv"] = _max(s["inv"], ts)
    elif name == "NPS Submitted":
        score = props.get("score")
        if score is not None and score >= LOYAL_NPS_MIN:
            s["nps"] = _max(s["nps"], ts)


def _cart(s: dict, name: str, props: dict, message_id: Any, ts: int) -> None:
    cart = s["cart"]
    was_empty = not cart
    s["cl"] = _max(s["cl"], ts)
    item = props.get("product_id", props.get("sku"))
    item = str(item) if item is not None else f"\x00own:{message_id}"
    qty = props.get("quantity")
    qty = 1 if qty is None else max(int(qty), 0)
    if name == "Product Added":
        if qty == 0:
            return
        cart[item] = cart.get(item, 0) + qty
    elif name == "Checkout Started":
        if was_empty:
            cart[PLACEHOLDER] = 1
    elif item in cart:
        if cart[item] - qty > 0:
            cart[item] -= qty
        else:
            del cart[item]
    if was_empty and cart:
        s["co"] = ts
    elif not cart:
        s["co"] = None


def _expire(s: dict, t: int) -> None:
    if s["cart"] and s["cl"] is not None and t >= s["cl"] + CART_EXPIRY:
        s["cart"] = {}  # the 7-day expiry forgets the cart
        s["co"] = None
    lo = s["lo"] if s["lo"] is not None else -1
    s["it"] = [e for e in s["it"] if e[0] > t - INTENT_WINDOW and e[0] > lo]
    s["days"] = {d: ts for d, ts in s["days"].items() if ts > t - ENGAGED_WINDOW}
    s["ord"] = [o for o in s["ord"] if o > t - LOYAL_ORDERS_WINDOW]


def _within(ts: int | None, t: int, window: int) -> bool:
    return ts is not None and t - window < ts <= t


def memberships(s: dict, t: int) -> dict[str, str]:
    out: dict[str, str] = {}
    if s["cart"] and s["co"] is not None and t >= s["co"] + CART_ABANDON_AFTER:
        out["cart_abandoner"] = "cart_abandoner"
    lo = s["lo"] if s["lo"] is not None else -1
    if sum(w for ts, w in s["it"] if t - INTENT_WINDOW < ts <= t and ts > lo) >= INTENT_THRESHOLD:
        out["high_intent"] = "high_intent"
    if s["act"] is None:
        out["lifecycle"] = "new_lead"
    elif not _within(s["la"], t, CHURN_AFTER):
        out["lifecycle"] = "churned"
    elif sum(1 for ts in s["days"].values() if t - ENGAGED_WINDOW < ts <= t) < ENGAGED_MIN_DAYS:
        out["lifecycle"] = "activated"
    elif (sum(1 for o in s["ord"] if t - LOYAL_ORDERS_WINDOW < o <= t) >= LOYAL_MIN_ORDERS
          or _within(s["inv"], t, LOYAL_INVITE_WINDOW) or _within(s["nps"], t, LOYAL_NPS_WINDOW)):
        out["lifecycle"] = "loyal_advocate"
    else:
        out["lifecycle"] = "engaged"
    return out


def next_due(s: dict) -> int | None:
    """The earliest moment after the user's last decided moment at which time alone may change one of
    the three segments (a window boundary, the 30-minute cart rule, the 7-day cart expiry)."""
    after = s["t"]
    candidates: list[int] = []
    if s["cart"] and s["co"] is not None:
        candidates += [s["co"] + CART_ABANDON_AFTER, s["cl"] + CART_EXPIRY]
    candidates += [ts + INTENT_WINDOW for ts, _ in s["it"]]
    if s["act"] is not None:
        if s["la"] is not None:
            candidates.append(s["la"] + CHURN_AFTER)
        candidates += [ts + ENGAGED_WINDOW for ts in s["days"].values()]
        candidates += [o + LOYAL_ORDERS_WINDOW for o in s["ord"]]
        if s["inv"] is not None:
            candidates.append(s["inv"] + LOYAL_INVITE_WINDOW)
        if s["nps"] is not None:
            candidates.append(s["nps"] + LOYAL_NPS_WINDOW)
    future = [c for c in candidates if c > after]
    return min(future) if future else None


def _diff(user: str, s: dict, t: int, cause: dict) -> list[dict]:
    new = memberships(s, t)
    old = s["m"]
    out = []
    for segment in SEGMENTS:
        if old.get(segment) != new.get(segment):
            out.append({"user_id": user, "segment": segment, "from": old.get(segment), "to": new.get(segment),
                        "at": t, "cause": cause})
    s["m"] = new
    return out


def advance(user: str, s: dict, until: int) -> list[dict]:
    """Fire every time-driven change of this user due at or before ``until``, in time order."""
    out: list[dict] = []
    while (due := next_due(s)) is not None and due <= until:
        s["t"] = due
        _expire(s, due)
        out += _diff(user, s, due, {"type": "timer", "due": due})
    return out


def apply(user: str, s: dict, ev: dict) -> list[dict]:
    """One event: the user's own due changes up to its time first, then the event, decided at its time."""
    ts = event_ms(ev["timestamp"])
    out = advance(user, s, ts)
    t = max(ts, s["t"])
    _fold(s, ev, ts)
    s["t"] = t
    _expire(s, t)
    return out + _diff(user, s, t, {"type": "event", "message_id": ev.get("messageId")})


def user_of(ev: dict) -> str | None:
    return ev.get("userId") or ev.get("anonymousId")


class IdleClock:
    """A partition's clock while it gets no input: after ALLOWANCE of wall time without any, it follows
    the wall clock minus ALLOWANCE, as the catalog's clock does. But not before the partition has read
    the backfill the benchmark produced before starting it (BENCH_BACKFILL_END, {partition: end
    offset} as JSON): a partition that only looks idle because the machine is busy elsewhere must not
    make the rest of its backfill late, or the peers' results would depend on the machine's load."""

    def __init__(self) -> None:
        ends = json.loads(os.environ.get("BENCH_BACKFILL_END", "{}"))
        self.backfill_end = {int(p): int(o) for p, o in ends.items()}
        self.last_input_wall: dict[int, float] = {}
        self.last_offset: dict[int, int] = {}

    def saw_input(self, partition: int, offset: int, wall_s: float) -> None:
        self.last_input_wall[partition] = wall_s
        self.last_offset[partition] = offset

    def idle_clock(self, partition: int, wall_s: float) -> int | None:
        """The clock an idle partition moves to now, or None while it is not idle."""
        last = self.last_input_wall.setdefault(partition, wall_s)
        if self.last_offset.get(partition, -1) < self.backfill_end.get(partition, 0) - 1:
            return None
        if wall_s - last > ALLOWANCE / 1000:
            return int(wall_s * 1000) - ALLOWANCE
        return None
