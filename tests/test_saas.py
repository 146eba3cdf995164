from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import DAY_MS, HOUR_MS, format_timestamp

from .helpers import track
from .helpers_core import changes, run

T0 = 1_790_000_000_000
SAAS = CatalogConfig(key_feature="reports", onboarding_last_step=5)


def test_trial_not_activated_after_more_than_three_days():
    events = [track("u", "Trial Started", T0)]
    assert changes(run(events, until=T0 + 3 * DAY_MS, cfg=SAAS), "trial_not_activated") == []
    assert changes(run(events, until=T0 + 4 * DAY_MS, cfg=SAAS), "trial_not_activated") == [
        (None, "trial_not_activated", format_timestamp(T0 + 3 * DAY_MS + 1), "timer")]
    bought = events + [track("u", "Order Completed", T0 + 5 * DAY_MS, revenue=1)]
    assert changes(run(bought, until=T0 + 6 * DAY_MS, cfg=SAAS), "trial_not_activated")[-1] == (
        "trial_not_activated", None, format_timestamp(T0 + 5 * DAY_MS), "event")


def test_trial_users_who_used_the_key_feature_or_ended_are_not_in_it():
    used = [track("u", "Trial Started", T0), track("u", "Feature Used", T0 + HOUR_MS, feature="reports")]
    ended = [track("u", "Trial Started", T0), track("u", "Trial Ended", T0 + DAY_MS)]
    assert changes(run(used, until=T0 + 5 * DAY_MS, cfg=SAAS), "trial_not_activated") == []
    assert changes(run(ended, until=T0 + 5 * DAY_MS, cfg=SAAS), "trial_not_activated") == []


def test_both_are_off_until_configured():
    events = [track("u", "Trial Started", T0), track("u", "Onboarding Step Completed", T0, step=1)]
    out = run(events, until=T0 + 10 * DAY_MS)
    assert changes(out, "trial_not_activated") == [] and changes(out, "stuck_in_onboarding") == []


def test_stuck_in_onboarding_24_hours_after_the_highest_step():
    events = [
        track("u", "Onboarding Step Completed", T0, step=1),
        track("u", "Onboarding Step Completed", T0 + HOUR_MS, step=2),
        track("u", "Onboarding Step Completed", T0 + 30 * HOUR_MS, step=3),
        track("u", "Onboarding Step Completed", T0 + 40 * HOUR_MS, step=5),
    ]
    assert changes(run(events, until=T0 + 10 * DAY_MS, cfg=SAAS), "stuck_in_onboarding") == [
        (None, "stuck_in_onboarding", format_timestamp(T0 + 25 * HOUR_MS), "timer"),
        ("stuck_in_onboarding", None, format_timestamp(T0 + 30 * HOUR_MS), "event"),
    ]
