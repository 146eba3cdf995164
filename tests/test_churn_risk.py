from stream_app.timeutil import DAY_MS, HOUR_MS, format_timestamp

from .helpers import track
from .helpers_core import changes, run

D0 = (1_790_006_400_000 // DAY_MS) * DAY_MS
T0 = D0 + 12 * HOUR_MS  # noon UTC


def _fading_power_user():
    return [track("u", "Order Completed", T0, revenue=5)] + [track("u", "Signed In", T0 + d * DAY_MS) for d in range(1, 6)]


def test_a_fading_engaged_user_is_at_risk_until_churned():
    out = run(_fading_power_user(), until=T0 + 70 * DAY_MS)
    lifecycle = changes(out, "lifecycle")
    assert ("activated", "engaged", format_timestamp(T0 + 3 * DAY_MS), "event") in lifecycle
    # day 4's activity enters the prior window at day 18: A = 1 (day 5), B = 5 (days 0-4), 4 * 1 < 5
    assert changes(out, "churn_risk") == [
        (None, "churn_risk", format_timestamp(T0 + 18 * DAY_MS), "timer"),
        ("churn_risk", None, format_timestamp(T0 + 65 * DAY_MS), "timer"),  # churned: 60 days without activity
    ]
    assert lifecycle[-1] == ("activated", "churned", format_timestamp(T0 + 65 * DAY_MS), "timer")


def test_one_millisecond_before_the_boundary_the_user_is_not_at_risk():
    assert changes(run(_fading_power_user(), until=T0 + 18 * DAY_MS - 1), "churn_risk") == []


def test_activity_recovering_ends_the_risk():
    events = _fading_power_user() + [track("u", "Signed In", T0 + 20 * DAY_MS + d * DAY_MS, mid=f"back{d}") for d in range(3)]
    out = changes(run(events, until=T0 + 23 * DAY_MS), "churn_risk")
    assert out[0][:2] == (None, "churn_risk")
    # back on days 20, 21, 22: at day 21 A = 2 (days 20, 21) and B = 6 (days 0-5): 4 * 2 < 6 is false
    assert out[1] == ("churn_risk", None, format_timestamp(T0 + 21 * DAY_MS), "event")


def test_never_engaged_users_are_never_at_risk():
    events = [track("u", "Order Completed", T0, revenue=5), track("u", "Signed In", T0 + DAY_MS)]
    assert changes(run(events, until=T0 + 70 * DAY_MS), "churn_risk") == []
