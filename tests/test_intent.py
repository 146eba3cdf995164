from stream_app.timeutil import DAY_MS, MINUTE_MS, format_timestamp

from .helpers import page, track
from .helpers_core import changes, run

T0 = 1_790_000_000_000


def test_enters_at_six_points_and_leaves_when_the_points_age_out_after_exactly_seven_days():
    events = [
        page("u", "Pricing", T0),  # 2
        track("u", "Product Viewed", T0 + MINUTE_MS),  # 0.5
        track("u", "Product Viewed", T0 + 2 * MINUTE_MS),  # 0.5 -> 3
        track("u", "Product Added", T0 + 3 * MINUTE_MS, product_id="p", mid="add"),  # 3 -> 6
    ]
    out = changes(run(events, until=T0 + 8 * DAY_MS), "high_intent")
    assert out == [
        (None, "high_intent", format_timestamp(T0 + 3 * MINUTE_MS), "event"),
        ("high_intent", None, format_timestamp(T0 + 7 * DAY_MS), "timer"),  # the pricing page leaves (t-7d, t]
    ]


def test_pricing_path_and_buying_guide_count():
    events = [
        page("u", "Plans", T0, path="/en/pricing"),  # 2
        track("u", "Content Downloaded", T0 + 1, category="buying_guide"),  # 2
        track("u", "Content Downloaded", T0 + 2, category="whitepaper"),  # 0
        page("u", "Pricing", T0 + 3),  # 2 -> 6
    ]
    assert changes(run(events, until=T0 + 10), "high_intent")[0][:2] == (None, "high_intent")


def test_an_order_resets_the_score():
    events = [
        track("u", "Checkout Started", T0),
        track("u", "Product Added", T0 + 1, product_id="p"),
        track("u", "Order Completed", T0 + 2, revenue=10, mid="order"),
        track("u", "Product Added", T0 + 3, product_id="q"),  # 3 only: events before the order don't count
    ]
    out = changes(run(events, until=T0 + 10), "high_intent")
    assert out == [
        (None, "high_intent", format_timestamp(T0 + 1), "event"),
        ("high_intent", None, format_timestamp(T0 + 2), "event"),
    ]
