"""A seeded, realistic synthetic clickstream (Segment-spec events) for the demo, tests and benchmarks.

Personas and their mix:
- browser (35%): a few sessions of pages and product views, never buys;
- high-intent shopper (15%): pricing page, views, adds to cart, starts checkout; half of them order;
- cart abandoner (15%): adds to cart (sometimes starts checkout) and leaves;
- buyer (20%): buys once or twice over the span;
- loyal (10%): signs in on many days, orders often, invites friends, gives NPS 9-10;
- goes quiet (5%): buys early in the span and never comes back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ..timeutil import DAY_MS, HOUR_MS, SECOND_MS, format_timestamp

PERSONAS = (
    ("browser", 0.35),
    ("high_intent_shopper", 0.15),
    ("cart_abandoner", 0.15),
    ("buyer", 0.20),
    ("loyal", 0.10),
    ("goes_quiet", 0.05),
)
PRODUCTS = [f"sku-{n:03d}" for n in range(1, 61)]


@dataclass
class _Session:
    rng: random.Random
    user_id: str
    ts: int
    out: list[dict[str, Any]]
    counter: list[int]

    def step(self, low: int = 5, high: int = 90) -> None:
        self.ts += self.rng.randint(low, high) * SECOND_MS

    def track(self, name: str, **props: Any) -> None:
        self._emit({"type": "track", "event": name, "properties": props})

    def page(self, name: str, path: str) -> None:
        self._emit({"type": "page", "name": name, "properties": {"path": path}})

    def _emit(self, body: dict[str, Any]) -> None:
        self.counter[0] += 1
        body.update(messageId=f"{self.user_id}-{self.counter[0]}", userId=self.user_id, timestamp=self.ts)
        self.out.append(body)
        self.step()


def _persona(rng: random.Random) -> str:
    roll, acc = rng.random(), 0.0
    for name, share in PERSONAS:
        acc += share
        if roll < acc:
            return name
    return PERSONAS[-1][0]


def _browse(s: _Session, views: int) -> None:
    s.page("Home", "/")
    s.track("Product List Viewed", category="all")
    for _ in range(views):
        s.track("Product Viewed", product_id=s.rng.choice(PRODUCTS))


def _buy(s: _Session, with_checkout: bool = True) -> None:
    product = s.rng.choice(PRODUCTS)
    s.track("Product Viewed", product_id=product)
    s.track("Product Added", product_id=product, quantity=s.rng.choice((1, 1, 1, 2)))
    if with_checkout:
        s.track("Checkout Started")
    revenue = round(s.rng.lognormvariate(3.6, 0.6), 2)
    props: dict[str, Any] = {"order_id": f"o-{s.user_id}-{s.counter[0]}", "revenue": revenue}
    if s.rng.random() < 0.3:
        props.update(coupon="WELCOME10", discount=round(revenue * 0.1, 2))
    s.step(60, 600)
    s.track("Order Completed", **props)


def user_events(rng: random.Random, user_id: str, start_ms: int, span_ms: int) -> list[dict[str, Any]]:
    persona = _persona(rng)
    out: list[dict[str, Any]] = []
    counter = [0]

    def session(at: int) -> _Session:
        return _Session(rng, user_id, at, out, counter)

    def at_random(lo: float = 0.0, hi: float = 1.0) -> int:
        return start_ms + int(span_ms * rng.uniform(lo, hi))

    if persona == "browser":
        for _ in range(rng.randint(1, 3)):
            _browse(session(at_random()), rng.randint(1, 4))
    elif persona == "high_intent_shopper":
        s = session(at_random(0.0, 0.9))
        s.page("Pricing", "/pricing")
        _browse(s, 2)
        product = rng.choice(PRODUCTS)
        s.track("Product Added", product_id=product)
        s.track("Checkout Started")
        if rng.random() < 0.5:
            s.step(120, 900)
            s.track("Order Completed", order_id=f"o-{user_id}", revenue=round(rng.uniform(20, 300), 2))
    elif persona == "cart_abandoner":
        s = session(at_random(0.0, 0.9))
        _browse(s, 1)
        s.track("Product Added", product_id=rng.choice(PRODUCTS))
        if rng.random() < 0.5:
            s.track("Checkout Started")
    elif persona == "buyer":
        for _ in range(rng.randint(1, 2)):
            s = session(at_random())
            _browse(s, rng.randint(0, 2))
            _buy(s)
    elif persona == "loyal":
        days = int(span_ms // DAY_MS)
        if days >= 2:
            starts = [start_ms + day * DAY_MS + rng.randint(7, 20) * HOUR_MS
                      for day in sorted(rng.sample(range(days), k=min(days, rng.randint(5, 9))))]
        else:  # a short span: sessions spread over it
            starts = sorted(at_random(0.0, 0.9) for _ in range(rng.randint(3, 6)))
        for begin in starts:
            s = session(begin)
            s.track(rng.choice(("Signed In", "Application Opened")))
            _browse(s, rng.randint(0, 2))
            if rng.random() < 0.45:
                _buy(s)
            if rng.random() < 0.15:
                s.track("Invite Sent")
            if rng.random() < 0.1:
                s.track("NPS Submitted", score=rng.choice((9, 10)))
    else:  # goes_quiet
        s = session(at_random(0.0, 0.2))
        _browse(s, 1)
        _buy(s)
    return out


def generate(seed: int, users: int, start_ms: int, span_ms: int) -> list[dict[str, Any]]:
    """Every user's events over [start, start + span), sorted by event time; timestamps as epoch ms."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(users):
        events.extend(user_events(rng, f"user-{n:06d}", start_ms, span_ms))
    events.sort(key=lambda e: (e["timestamp"], e["messageId"]))
    return events


def as_wire(event: dict[str, Any]) -> dict[str, Any]:
    """The event with an ISO-8601 timestamp, as a Segment library would send it."""
    wire = dict(event)
    wire["timestamp"] = format_timestamp(event["timestamp"])
    return wire


MALFORMED_SAMPLES: tuple[bytes, ...] = (
    b"\xff\xfe not json nor msgpack",
    b"\x93\x01",  # truncated msgpack array
    b'{"type": "track", "event": "Order Completed", "timestamp": "2026-01-01T00:00:00Z", "messageId": "x"}',  # no user
    b'{"type": "track", "event": 42, "userId": "u", "messageId": "y", "timestamp": "2026-01-01T00:00:00Z"}',  # wrong type
    b'{"type": "track", "event": "Signed In", "userId": "u", "messageId": "z", "timestamp": "2999-01-01T00:00:00Z"}',
)

