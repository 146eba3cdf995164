from stream_app.timeutil import DAY_MS, format_timestamp

from .helpers import track
from .helpers_core import changes, run

T0 = 1_790_000_000_000


def test_power_user_per_feature_at_ten_uses_in_seven_days():
    uses = [track("u", "Feature Used", T0 + n * 1000, mid=f"r{n}", feature="reports") for n in range(10)]
    uses += [track("u", "Feature Used", T0 + n * 1000, mid=f"e{n}", feature="export") for n in range(9)]
    out = run(uses, until=T0 + 8 * DAY_MS)
    assert changes(out, "power_user:reports") == [
        (None, "power_user:reports", format_timestamp(T0 + 9000), "event"),
        ("power_user:reports", None, format_timestamp(T0 + 7 * DAY_MS), "timer"),  # the first use leaves the window
    ]
    assert changes(out, "power_user:export") == []


def test_nearing_usage_limit_follows_the_latest_report_per_metric():
    events = [
        track("u", "Usage Reported", T0, metric="seats", value=79, limit=100),
        track("u", "Usage Reported", T0 + 1, metric="seats", value=80, limit=100),
        track("u", "Usage Reported", T0 + 2, metric="api_calls", value=10, limit=100),
        track("u", "Usage Reported", T0 + 3, metric="seats", value=50, limit=100),
    ]
    assert changes(run(events), "nearing_usage_limit") == [
        (None, "nearing_usage_limit", format_timestamp(T0 + 1), "event"),
        ("nearing_usage_limit", None, format_timestamp(T0 + 3), "event"),
    ]
