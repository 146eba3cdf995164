import math

from stream_app.timeutil import DAY_MS, format_timestamp

from .helpers import page, track
from .helpers_core import changes, run

T0 = 1_790_000_000_000
HALF_LIFE = 14 * DAY_MS


def test_decay_moves_a_user_down_at_the_computed_crossing():
    events = [track("u", "Order Completed", T0, revenue=1)]  # score 5
    crossing = math.ceil(T0 + HALF_LIFE * math.log2(5 / 3))
    out = changes(run(events, until=T0 + 60 * DAY_MS), "engagement")
    assert out == [(None, "moderately_engaged", format_timestamp(T0), "event"),
                   ("moderately_engaged", "inactive", format_timestamp(crossing), "timer")]
    assert changes(run(events, until=crossing - 1), "engagement")[-1][1] == "moderately_engaged"


def test_exactly_on_the_threshold_counts_and_the_next_millisecond_does_not():
    events = [track("u", "Order Completed", T0, mid=f"o{n}", revenue=1) for n in range(4)]  # score exactly 20
    out = changes(run(events, until=T0 + 1), "engagement")
    assert out[-2:] == [("moderately_engaged", "highly_engaged", format_timestamp(T0), "event"),
                        ("highly_engaged", "moderately_engaged", format_timestamp(T0 + 1), "timer")]


def test_weights_and_late_events_add_up_with_decay():
    import json

    from stream_app.replay import replay_records
    from stream_app.segments import engagement
    from stream_app.segments.config import CatalogConfig
    from stream_app.state.encoding import decode_profile

    # the email click arrives after the page view but happened a day earlier
    events = [page("u", "Home", T0 + DAY_MS), track("u", "Email Link Clicked", T0), track("u", "Signed In", T0 + DAY_MS, mid="s")]
    _transitions, _dead, store = replay_records([json.dumps(e).encode() for e in events], CatalogConfig(), T0 + DAY_MS)
    profile = decode_profile(store["u"])
    expected = 0.5 + 3 * 2 ** (-1 / 14) + 2
    assert math.isclose(engagement.score(profile, T0 + DAY_MS, CatalogConfig()), expected, rel_tol=1e-12)
    assert math.isclose(engagement.score(profile, T0 + 15 * DAY_MS, CatalogConfig()), expected / 2, rel_tol=1e-12)
    assert profile.members["engagement"] == "moderately_engaged"
