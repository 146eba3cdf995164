from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import DAY_MS, format_timestamp

from .helpers import track
from .helpers_core import changes, run

T0 = 1_790_006_400_000  # 2026-09-22T16:00:00Z


def test_new_lead_then_activated_by_the_first_order():
    events = [track("u", "Product Viewed", T0), track("u", "Order Completed", T0 + 1000, revenue=3)]
    assert changes(run(events), "lifecycle") == [
        (None, "new_lead", format_timestamp(T0), "event"),
        ("new_lead", "activated", format_timestamp(T0 + 1000), "event"),
    ]


def test_engaged_needs_four_distinct_days_in_28_and_ends_when_one_ages_out():
    events = [track("u", "Order Completed", T0, revenue=3)] + [track("u", "Signed In", T0 + d * DAY_MS) for d in (1, 2, 3)]
    out = changes(run(events, until=T0 + 40 * DAY_MS), "lifecycle")
    assert out[0] == (None, "activated", format_timestamp(T0), "event")
    assert out[1] == ("activated", "engaged", format_timestamp(T0 + 3 * DAY_MS), "event")
    # the first day's only event is at T0: it leaves the window (t-28d, t] at exactly T0 + 28 d
    assert out[2] == ("engaged", "activated", format_timestamp(T0 + 28 * DAY_MS), "timer")


def test_churned_exactly_60_days_after_the_last_activity():
    events = [track("u", "Order Completed", T0, revenue=3)]
    assert changes(run(events, until=T0 + 60 * DAY_MS - 1), "lifecycle")[-1][1] == "activated"
    assert changes(run(events, until=T0 + 60 * DAY_MS), "lifecycle")[-1] == ("activated", "churned", format_timestamp(T0 + 60 * DAY_MS), "timer")


def test_loyal_advocate_by_orders_invites_or_nps():
    days = [track("u", "Signed In", T0 + d * DAY_MS) for d in range(4)]
    three_orders = days + [track("u", "Order Completed", T0 + d * DAY_MS + 1, revenue=1) for d in range(3)]
    assert changes(run(three_orders), "lifecycle")[-1][1] == "loyal_advocate"
    invite = days + [track("u", "Order Completed", T0 + 1, revenue=1), track("u", "Invite Sent", T0 + 3 * DAY_MS + 5)]
    out = changes(run(invite, until=T0 + 100 * DAY_MS), "lifecycle")
    assert ("engaged", "loyal_advocate", format_timestamp(T0 + 3 * DAY_MS + 5), "event") in out
    low_nps = days + [track("u", "Order Completed", T0 + 1, revenue=1), track("u", "NPS Submitted", T0 + 3 * DAY_MS + 5, score=8)]
    assert changes(run(low_nps), "lifecycle")[-1][1] == "engaged"


def test_a_saas_deployment_activates_on_its_key_feature():
    cfg = CatalogConfig(activation_feature="reports")
    events = [track("u", "Order Completed", T0, revenue=1), track("u", "Feature Used", T0 + 1, feature="export"),
              track("u", "Feature Used", T0 + 2, feature="reports")]
    assert changes(run(events, cfg=cfg), "lifecycle")[-1] == ("new_lead", "activated", format_timestamp(T0 + 2), "event")
