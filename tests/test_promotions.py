from stream_app.timeutil import DAY_MS, HOUR_MS, format_timestamp

from .helpers import track
from .helpers_core import changes, run

T0 = 1_790_000_000_000


def test_promo_responsive_needs_an_order_within_72_hours_of_a_click_and_ages_out_after_90_days():
    within = [track("u", "Promotion Clicked", T0), track("u", "Order Completed", T0 + 72 * HOUR_MS, mid="o", revenue=1)]
    assert changes(run(within, until=T0 + 100 * DAY_MS), "promo_responsive") == [
        (None, "promo_responsive", format_timestamp(T0 + 72 * HOUR_MS), "event"),
        ("promo_responsive", None, format_timestamp(T0 + 90 * DAY_MS), "timer"),
    ]
    late = [track("u", "Promotion Clicked", T0), track("u", "Order Completed", T0 + 72 * HOUR_MS + 1, revenue=1)]
    assert changes(run(late, until=T0 + 5 * DAY_MS), "promo_responsive") == []
    before = [track("u", "Order Completed", T0, revenue=1), track("u", "Promotion Clicked", T0 + 1)]
    assert changes(run(before, until=T0 + 5 * DAY_MS), "promo_responsive") == []


def test_price_sensitive_is_half_or_more_discounted_orders_in_365_days():
    half = [track("u", "Order Completed", T0, revenue=10, coupon="X"), track("u", "Order Completed", T0 + 1, revenue=10)]
    assert changes(run(half), "price_sensitive") == [(None, "price_sensitive", format_timestamp(T0 + 1), "event")]
    third = half + [track("u", "Order Completed", T0 + 2, revenue=10, discount=0)]
    assert changes(run(third), "price_sensitive")[-1] == ("price_sensitive", None, format_timestamp(T0 + 2), "event")
    discounted = [track("u", "Order Completed", T0 + n, mid=f"o{n}", revenue=10, discount=1.5) for n in range(2)]
    out = changes(run(discounted, until=T0 + 366 * DAY_MS), "price_sensitive")
    assert out[-1] == ("price_sensitive", None, format_timestamp(T0 + 365 * DAY_MS), "timer")  # the first order leaves
