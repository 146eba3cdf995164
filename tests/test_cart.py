from stream_app.timeutil import DAY_MS, MINUTE_MS, format_timestamp

from .helpers import track
from .helpers_core import changes, run

T0 = 1_790_000_000_000


def iso(ms):
    return format_timestamp(ms)


def test_enters_exactly_30_minutes_after_the_cart_opens():
    events = [track("u", "Product Added", T0, product_id="p1")]
    assert changes(run(events, until=T0 + 30 * MINUTE_MS - 1), "cart_abandoner") == []
    assert changes(run(events, until=T0 + 30 * MINUTE_MS), "cart_abandoner") == [(None, "cart_abandoner", iso(T0 + 30 * MINUTE_MS), "timer")]


def test_order_before_30_minutes_means_no_abandonment():
    events = [track("u", "Product Added", T0, product_id="p1"), track("u", "Order Completed", T0 + 10 * MINUTE_MS, revenue=5)]
    assert changes(run(events, until=T0 + DAY_MS), "cart_abandoner") == []


def test_order_after_abandonment_exits_with_the_order():
    events = [track("u", "Product Added", T0, product_id="p1"), track("u", "Order Completed", T0 + 40 * MINUTE_MS, mid="o1", revenue=5)]
    assert changes(run(events, until=T0 + DAY_MS), "cart_abandoner") == [
        (None, "cart_abandoner", iso(T0 + 30 * MINUTE_MS), "timer"),
        ("cart_abandoner", None, iso(T0 + 40 * MINUTE_MS), "event"),
    ]


def test_emptying_the_cart_resets_the_clock():
    events = [
        track("u", "Product Added", T0, product_id="p1", quantity=2),
        track("u", "Product Removed", T0 + 5 * MINUTE_MS, product_id="p1", quantity=1),
        track("u", "Product Removed", T0 + 10 * MINUTE_MS, product_id="p1"),
        track("u", "Product Added", T0 + 20 * MINUTE_MS, product_id="p2"),
    ]
    assert changes(run(events, until=T0 + 2 * 3600_000), "cart_abandoner") == [
        (None, "cart_abandoner", iso(T0 + 50 * MINUTE_MS), "timer"),
    ]


def test_checkout_on_an_empty_cart_opens_it_with_a_placeholder_that_removal_cannot_clear():
    events = [
        track("u", "Checkout Started", T0),
        track("u", "Product Removed", T0 + MINUTE_MS, product_id="p1"),
    ]
    assert changes(run(events, until=T0 + 31 * MINUTE_MS), "cart_abandoner") == [(None, "cart_abandoner", iso(T0 + 30 * MINUTE_MS), "timer")]


def test_seven_days_after_the_last_cart_event_the_cart_is_forgotten():
    last = T0 + 2 * DAY_MS
    events = [track("u", "Product Added", T0, product_id="p1"), track("u", "Product Added", last, product_id="p2")]
    assert changes(run(events, until=last + 7 * DAY_MS), "cart_abandoner") == [
        (None, "cart_abandoner", iso(T0 + 30 * MINUTE_MS), "timer"),
        ("cart_abandoner", None, iso(last + 7 * DAY_MS), "timer"),
    ]
    # forgotten: a new add opens a new cart whose 30 minutes count from the new add
    later = last + 8 * DAY_MS
    events.append(track("u", "Product Added", later, product_id="p3"))
    assert changes(run(events, until=later + 30 * MINUTE_MS), "cart_abandoner")[-1] == (None, "cart_abandoner", iso(later + 30 * MINUTE_MS), "timer")


def test_cart_viewed_is_not_a_cart_event():
    events = [track("u", "Product Added", T0, product_id="p1"), track("u", "Cart Viewed", T0 + 6 * DAY_MS + 23 * 3600_000)]
    out = changes(run(events, until=T0 + 8 * DAY_MS), "cart_abandoner")
    assert out[-1] == ("cart_abandoner", None, iso(T0 + 7 * DAY_MS), "timer")
