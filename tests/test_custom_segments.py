"""User-defined segments from windowed aggregates: the grammar, its errors, and the memberships over time."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.replay import replay_records
from stream_app.segments.definitions import DefinitionError, load_definitions
from stream_app.state.encoding import decode_profile
from stream_app.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, format_timestamp

from .helpers import page, track
from .helpers_core import changes, run

T0 = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS  # a UTC midnight

DEFINITIONS = """\
custom_segments:
  - id: window_shopper
    when:
      all:
        - {count: {event: Product Viewed, window: 7d}, at_least: 5}
        - not: {count: {event: Order Completed, window: 30d}, at_least: 1}
  - id: big_spender
    when: {sum: {event: Order Completed, property: revenue, window: 90d}, at_least: 500}
  - id: browse_abandon
    when:
      not_followed_by: {event: Product Viewed, then: Product Added, within: 1h, window: 1d}
  - id: lapsed_login
    when:
      all:
        - {last: {event: Signed In, window: 60d}, at_least: 14d}
        - any:
            - {active_days: {event: "*", window: 60d}, at_least: 3}
            - {last_value: {event: Plan Changed, property: plan, window: 365d}, equals: pro}
  - id: pricing_fan
    when: {count: {event: "page:Pricing", where: {source: ad}, window: 1d}, above: 1}
"""


def _cfg(tmp_path: Path, text: str = DEFINITIONS):
    path = tmp_path / "segments.yaml"
    path.write_text(text)
    return load_definitions(path)


def test_window_shopper_enters_at_the_fifth_view_and_leaves_on_an_order(tmp_path):
    cfg = _cfg(tmp_path)
    events = [track("ann", "Product Viewed", T0 + n * HOUR_MS, f"v{n}", product_id="p") for n in range(5)]
    events.append(track("ann", "Product Added", T0 + 4 * HOUR_MS + 10 * MINUTE_MS, "add", product_id="p"))
    events.append(track("ann", "Order Completed", T0 + 6 * HOUR_MS, "o1", revenue=600))
    got = run(events, until=T0 + 2 * DAY_MS, cfg=cfg)
    assert changes(got, "window_shopper") == [
        (None, "window_shopper", format_timestamp(T0 + 4 * HOUR_MS), "event"),
        ("window_shopper", None, format_timestamp(T0 + 6 * HOUR_MS), "event"),
    ]
    assert changes(got, "big_spender") == [(None, "big_spender", format_timestamp(T0 + 6 * HOUR_MS), "event")]
    # views 0-3 were not followed by an add within 1 h: in at first view + 1 h, out when the last such
    # view leaves the 1-day window; view 4 was followed by the add 10 minutes later
    assert changes(got, "browse_abandon") == [
        (None, "browse_abandon", format_timestamp(T0 + HOUR_MS), "timer"),
        ("browse_abandon", None, format_timestamp(T0 + 3 * HOUR_MS + DAY_MS), "timer"),
    ]
    entered = next(r for r in got if r["segment"] == "big_spender")
    assert entered["traits"] == {"sum(Order Completed.revenue, 7776000s)": 600.0}


def test_views_leaving_the_window_end_the_membership_on_a_timer(tmp_path):
    cfg = _cfg(tmp_path)
    events = [track("bo", "Product Viewed", T0 + n * MINUTE_MS, f"v{n}") for n in range(5)]
    got = run(events, until=T0 + 10 * DAY_MS, cfg=cfg)
    assert changes(got, "window_shopper") == [
        (None, "window_shopper", format_timestamp(T0 + 4 * MINUTE_MS), "event"),
        ("window_shopper", None, format_timestamp(T0 + 7 * DAY_MS), "timer"),  # the first view's bucket + 7 d
    ]


def test_lapsed_login_uses_age_active_days_and_last_value(tmp_path):
    cfg = _cfg(tmp_path)
    events = [track("cy", "Signed In", T0 + n * DAY_MS, f"s{n}") for n in range(3)]
    got = run(events, until=T0 + 30 * DAY_MS, cfg=cfg)
    # last sign-in at T0 + 2 d; 3 active days; 14 d later it is lapsed; the sign-in leaves 60 d later
    assert changes(got, "lapsed_login") == [(None, "lapsed_login", format_timestamp(T0 + 16 * DAY_MS), "timer")]
    one_day = [track("di", "Signed In", T0, "s"), track("di", "Plan Changed", T0 + 1, "p", plan="pro")]
    got = run(one_day, until=T0 + 20 * DAY_MS, cfg=cfg)
    assert changes(got, "lapsed_login") == [(None, "lapsed_login", format_timestamp(T0 + 14 * DAY_MS), "timer")]
    basic = [track("ed", "Signed In", T0, "s"), track("ed", "Plan Changed", T0 + 1, "p", plan="basic")]
    assert changes(run(basic, until=T0 + 20 * DAY_MS, cfg=cfg), "lapsed_login") == []


def test_where_filters_on_properties(tmp_path):
    cfg = _cfg(tmp_path)
    events = [page("fi", "Pricing", T0, "a", source="ad"), page("fi", "Pricing", T0 + 1000, "b", source="mail"),
              page("fi", "Pricing", T0 + 2000, "c", source="ad")]
    got = run(events, until=T0 + 3 * DAY_MS, cfg=cfg)
    assert changes(got, "pricing_fan") == [(None, "pricing_fan", format_timestamp(T0 + 2000), "event"),
                                           ("pricing_fan", None, format_timestamp(T0 + DAY_MS), "timer")]


@pytest.mark.parametrize("text, where, message", [
    ("custom_segments:\n  - id: x\n    when: {count: {event: A, window: 7d}, at_lest: 5}\n", ":3:", "unknown key"),
    ("custom_segments:\n  - id: x\n    when: {count: {event: A}, at_least: 5}\n", ":3:", "missing window"),
    ("custom_segments:\n  - id: x\n    when: {count: {event: A, window: 400d}, at_least: 5}\n", ":3:", "between 1ms and 365d"),
    ("custom_segments:\n  - id: x\n    when: {median: {event: A, window: 7d}, at_least: 5}\n", ":3:", "expected a condition"),
    ("custom_segments:\n  - id: rfm\n    when: {count: {event: A, window: 7d}, at_least: 5}\n", ":2:", "already a segment id"),
    ("custom_segments:\n  - id: x\n    when: {count: {event: A, window: 7d}, at_least: five}\n", ":3:", "expected a number"),
    ("custom_segments:\n  - id: x\n    when:\n      not_followed_by: {event: A, then: B, within: 2d, window: 1d}\n", ":4:", "shorter than the window"),
    ("custom_segments:\n  - id: x\n    when: {sum: {event: A, window: 7d}, at_least: 5}\n", ":3:", "missing property"),
])
def test_errors_name_the_line_and_say_what_was_expected(tmp_path, text, where, message):
    with pytest.raises(DefinitionError) as info:
        _cfg(tmp_path, text)
    assert where in str(info.value) and message in str(info.value), str(info.value)


def test_no_user_text_is_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    text = f"custom_segments:\n  - id: x\n    when: {{count: {{event: \"__import__('os').system('touch {marker}')\", window: 7d}}, at_least: 1}}\n"
    cfg = _cfg(tmp_path, text)
    run([track("u", "Product Viewed", T0, "v")], until=T0 + DAY_MS, cfg=cfg)
    assert not marker.exists()


# -- property: the stream equals a direct recomputation from the whole history -------------------
def _bucket(ts: int, window: int) -> int:
    resolution = 1000 if window <= DAY_MS else (60_000 if window <= 30 * DAY_MS else HOUR_MS)
    return ts - ts % resolution


def _direct(history: list[tuple[int, str]], t: int) -> dict[str, bool]:
    """The documented semantics, straight: an event counts while its bucket start <= t < start + window."""
    history = [(ts, name) for ts, name in history if ts <= t]
    def count(name, window):
        return sum(1 for ts, n in history if n == name and _bucket(ts, window) <= t < _bucket(ts, window) + window)

    views = sorted({_bucket(ts, DAY_MS) for ts, n in history if n == "Product Viewed" and _bucket(ts, DAY_MS) <= t < _bucket(ts, DAY_MS) + DAY_MS})
    adds = {_bucket(ts, DAY_MS) for ts, n in history if n == "Product Added" and _bucket(ts, DAY_MS) <= t < _bucket(ts, DAY_MS) + DAY_MS}
    abandon = any(v + HOUR_MS <= t and not any(v <= a <= v + HOUR_MS for a in adds) for v in views)
    return {"window_shopper": count("Product Viewed", 7 * DAY_MS) >= 5 and count("Order Completed", 30 * DAY_MS) < 1,
            "browse_abandon": abandon}


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.tuples(st.sampled_from([0, 999, 1000, 30 * MINUTE_MS, HOUR_MS, HOUR_MS + 1, DAY_MS - 1, DAY_MS, 3 * DAY_MS]),
                               st.sampled_from(["Product Viewed", "Product Viewed", "Product Added", "Order Completed"])),
                     min_size=1, max_size=25),
       seed=st.integers(0, 100))
def test_stream_equals_direct_recomputation(tmp_path_factory, gaps, seed):
    cfg = load_definitions(_definitions_file(tmp_path_factory))
    ts, history = T0 + 123, []
    for gap, name in gaps:
        ts += gap
        history.append((ts, name))
    rng = random.Random(seed)
    moments = sorted({ts for ts, _ in history} | {ts + d + e for ts, _ in history for d in (HOUR_MS, DAY_MS, 7 * DAY_MS) for e in (-1, 0, 1)})
    for t in rng.sample(moments, min(6, len(moments))):
        lines = [json.dumps(track("u", name, when, f"m{n}", revenue=1)).encode() for n, (when, name) in enumerate(history) if when <= t]
        _tr, dead, store = replay_records(lines, cfg, until_ms=t)
        members = decode_profile(store["u"]).members if "u" in store else {}
        got = {segment: segment in members for segment in ("window_shopper", "browse_abandon")}
        assert got == _direct(history, t), (t - T0, history)


def _definitions_file(factory) -> Path:
    path = factory.getbasetemp() / "custom-segments.yaml"
    if not path.exists():
        path.write_text(DEFINITIONS)
    return path
