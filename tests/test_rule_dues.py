"""Per-rule due times (`catalog.RuleDues`): after any sequence of events, late events, timers, RFM
refreshes, new definitions and dormancy, the cached due time of every rule equals its own next_change
computed from scratch, and a timeline driven with the cache decides exactly as one driven without it."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.engine.timeline import advance, next_timer, reevaluate, refresh, take_event
from stream_app.events import Event
from stream_app.predict.bgnbd import BGNBDParams
from stream_app.predict.gamma_gamma import GammaGammaParams
from stream_app.predict.model_file import PredictiveModel
from stream_app.segments import catalog
from stream_app.segments.catalog import RULES, RuleDues
from stream_app.segments.config import CatalogConfig
from stream_app.segments.definitions import load_definitions, with_model
from stream_app.state.profile import Profile
from stream_app.timeutil import DAY_MS, HOUR_MS, MINUTE_MS

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000
GAPS = [0, 1, 999, MINUTE_MS, 5 * MINUTE_MS, 29 * MINUTE_MS, 30 * MINUTE_MS, 31 * MINUTE_MS, 3 * HOUR_MS,
        20 * HOUR_MS, DAY_MS, 3 * DAY_MS + 1, 6 * DAY_MS, 7 * DAY_MS, 13 * DAY_MS, 28 * DAY_MS, 61 * DAY_MS]
CUSTOM = """\
custom_segments:
  - id: window_shopper
    when:
      all:
        - {count: {event: Product Viewed, window: 7d}, at_least: 2}
        - not: {count: {event: Order Completed, window: 30d}, at_least: 1}
  - id: browse_abandon
    when:
      not_followed_by: {event: Product Viewed, then: Product Added, within: 1h, window: 1d}
  - id: lapsed_login
    when: {last: {event: Signed In, window: 60d}, at_least: 14d}
  - id: pro_plan
    when: {last_value: {event: Plan Changed, property: plan, window: 30d}, equals: pro}
"""


def _model(percentiles: tuple[float, ...] = tuple(float(n) for n in range(101))) -> PredictiveModel:
    """Fader, Hardie & Lee's CDNOW estimates (weeks), and the CLV percentiles that give the cut-off."""
    return PredictiveModel(unit="weeks", unit_days=7, calibration_end=date(1997, 9, 30), fitted_at="test",
                           bgnbd=BGNBDParams(0.243, 4.414, 0.793, 2.426),
                           gamma_gamma=GammaGammaParams(6.25, 3.74, 15.44), model_version="test-model",
                           clv_percentiles=percentiles)


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, CatalogConfig]:
    path = tmp_path_factory.mktemp("defs") / "custom.yaml"
    path.write_text(CUSTOM)
    saas = dict(key_feature="reports", onboarding_last_step=3)
    return {
        "default": CatalogConfig(),
        "saas+custom": replace(load_definitions(path), **saas),
        # every window in minutes: expiries and timers at nearly every step
        "minutes": replace(load_definitions(REPO / "benchmarks" / "soak-steady-state.yaml"), **saas),
        "model": with_model(load_definitions(), _model()),
        # engaged for an hour after any activity, churn risk for two hours after: leaving `engaged` makes
        # `engaged_until` the churn risk rule's next moment
        "short engaged": CatalogConfig(engaged_window_ms=HOUR_MS, engaged_min_days=1,
                                       churn_risk_engaged_within_ms=2 * HOUR_MS),
    }


def _event(n: int, kind: int, variant: int, ts: int) -> Event:
    track = [
        ("Product Added", {"product_id": f"p{variant % 2}", "quantity": 1 + variant % 2}),
        ("Product Removed", {"product_id": f"p{variant % 2}", "quantity": 1}),
        ("Checkout Started", {}),
        ("Order Completed", {"revenue": 10 + 40 * variant, **({"coupon": "SAVE"} if variant % 2 else {})}),
        ("Order Refunded", {"revenue": 5}),
        ("Product Viewed", {}),
        ("Signed In", {}),
        ("Email Link Clicked", {}),
        ("Invite Sent", {}),
        ("NPS Submitted", {"score": [6, 9, 10, 3][variant]}),
        ("Promotion Clicked", {}),
        ("Feature Used", {"feature": ["reports", "export", "search", "export"][variant]}),
        ("Usage Reported", {"metric": "seats", "value": [50, 80, 95, 10][variant], "limit": 100}),
        ("Content Downloaded", {"category": ["buying_guide", "other"][variant % 2]}),
        ("Trial Started", {}),
        ("Trial Ended", {}),
        ("Onboarding Step Completed", {"step": 1 + variant % 3}),
        ("Plan Changed", {"plan": ["pro", "free"][variant % 2]}),
        ("Application Opened", {}),
    ]
    if kind == len(track):
        return Event(f"m{n}", "u", "page", ["Pricing", "Home"][variant % 2], ts, {"path": "/"})
    if kind == len(track) + 1:
        return Event(f"m{n}", "u", "identify", "", ts, {})
    name, props = track[kind]
    return Event(f"m{n}", "u", "track", name, ts, props)


EVENT_KINDS = 21


class Population:
    """A stand-in RFM population: scores that depend on the population, so a refresh renames users."""

    def __init__(self, shift: int) -> None:
        self.version = f"pop-{shift}"
        self.shift = shift
        self.size = 10

    def scores(self, last_order: int, f: int, m: float) -> tuple[int, int, int]:
        return (last_order // DAY_MS + self.shift) % 5 + 1, (f + self.shift) % 5 + 1, (int(m) // 10 + self.shift) % 5 + 1


@st.composite
def operations(draw):
    ops = []
    for _ in range(draw(st.integers(1, 50))):
        kind = draw(st.sampled_from(["event"] * 8 + ["late", "advance", "advance", "refresh", "definitions", "dormant"]))
        check = draw(st.integers(0, 3)) > 0  # sometimes several steps go by before the next look
        if kind == "event":
            ops.append(("event", draw(st.sampled_from(GAPS)), draw(st.integers(0, EVENT_KINDS - 1)), draw(st.integers(0, 3)), check))
        elif kind == "late":
            ops.append(("late", draw(st.sampled_from(GAPS[1:])), draw(st.integers(0, EVENT_KINDS - 1)), draw(st.integers(0, 3)), check))
        elif kind == "advance":
            ops.append(("advance", draw(st.sampled_from(GAPS)), 0, 0, check))
        elif kind == "refresh":
            ops.append(("refresh", 0, draw(st.integers(0, 4)), 0, check))
        elif kind == "definitions":
            ops.append(("definitions", 0, 0, 0, check))
        else:
            ops.append(("dormant", 400 * DAY_MS + draw(st.sampled_from([-1, 0, 1, DAY_MS])), 0, 0, check))
    return ops


def _every_rule(profile: Profile, cfg: CatalogConfig) -> list[int | None]:
    return [rule.next_change(profile, cfg) for rule in RULES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["default", "saas+custom", "minutes", "model", "short engaged"]), ops=operations())
def test_cached_due_times_equal_every_rules_own_after_every_step(configs, name, ops):
    cfg = base = configs[name]
    changed = replace(base, intent_threshold=3, cart_abandon_after_ms=base.cart_abandon_after_ms + MINUTE_MS, version="changed")
    cached, full, dues = Profile(), Profile(), RuleDues()
    now = T0
    for n, (op, gap, a, b, check) in enumerate(ops):
        dormant = False
        if op in ("event", "late", "dormant"):
            if op == "late":
                ts = max(T0, cached.t - gap)
            else:
                now += gap
                ts = now
            event = _event(n, a if op != "dormant" else 6, b, ts)
            got = take_event("u", cached, event, cfg, dues)
            assert got == take_event("u", full, event, cfg)
        elif op == "advance":
            now += gap
            got, dormant = advance("u", cached, now, cfg, dues)
            assert (got, dormant) == advance("u", full, now, cfg)
        elif op == "refresh":  # as the engine does: timers due by the clock first, then the new population
            got, dormant = advance("u", cached, now, cfg, dues)
            assert (got, dormant) == advance("u", full, now, cfg)
            cfg = replace(cfg, rfm_population=Population(a))
            if not dormant:
                got = refresh("u", cached, now, cfg, cfg.rfm_population.version, dues)
                assert got == refresh("u", full, now, cfg, cfg.rfm_population.version)
        else:  # new definitions (and back): every rule's due time is computed again
            cfg = replace(changed if cfg.version == base.version else base, rfm_population=cfg.rfm_population)
            got = reevaluate("u", cached, cfg, now, dues)
            assert got == reevaluate("u", full, cfg, now)
        if dormant:  # the engine drops the profile
            cached, full, dues = Profile(), Profile(), RuleDues()
            continue
        assert cached == full
        if check and cached.last_event:
            assert next_timer(cached, cfg, dues) == next_timer(full, cfg)
            assert dues.per_rule() == _every_rule(full, cfg), (n, op)


def test_a_rule_whose_field_changed_is_computed_again_and_the_others_are_not(monkeypatch):
    """The cache is used: after a change of `intent` only the rules reading it run again (besides those
    computed at every step), and when the profile's time reaches a cached due time, only that rule."""
    cfg = CatalogConfig()
    profile, dues = Profile(), RuleDues()
    take_event("u", profile, Event("a", "u", "track", "Product Added", T0, {"product_id": "p"}), cfg, dues)
    next_timer(profile, cfg, dues)
    calls: list[str] = []

    def counted(rule):
        return lambda p, c: calls.append(rule.segment) or rule.next_change(p, c)

    monkeypatch.setattr(catalog, "_CACHED_NEXT", tuple(counted(rule) for rule in catalog._CACHED))
    profile.intent.append([T0 + 1, 1.0])  # as an intent event would
    profile.t = T0 + 1
    dues.touch({"intent"})
    assert next_timer(profile, cfg, dues) == catalog.next_change(profile, cfg)
    assert calls == ["high_intent"]
    calls.clear()
    assert next_timer(profile, cfg, dues) == catalog.next_change(profile, cfg)  # nothing changed: nothing runs
    assert calls == []
    profile.t = T0 + 30 * MINUTE_MS  # the cart's due time: time alone may have changed the cart's rule
    assert next_timer(profile, cfg, dues) == catalog.next_change(profile, cfg)
    assert calls == ["cart_abandoner"]


def test_a_population_refresh_keeps_the_cache_and_new_definitions_drop_it():
    cfg = CatalogConfig()
    token = catalog._dues_token(cfg)
    assert catalog._dues_token(replace(cfg, rfm_population=Population(1))) is token
    assert catalog._dues_token(replace(cfg, intent_threshold=3)) is not token
    assert catalog._dues_token(replace(cfg, rfm_population=Population(2))).rfm_population is None


def test_a_user_forgotten_for_dormancy_has_every_due_time_computed_again(configs):
    """Only a reset can drop what the forgotten profile's rules had cached: with a cut-off of 0 nobody
    leaves `high_predicted_value`, whose due time then lies 20 years ahead, and no field the new event
    touches is one the predicted segments read."""
    cfg = with_model(load_definitions(), _model((0.0,) * 101))
    cached, full, dues = Profile(), Profile(), RuleDues()
    events = [Event("o1", "u", "track", "Order Completed", T0, {"revenue": 50}),
              Event("o2", "u", "track", "Order Completed", T0 + 3 * DAY_MS, {"revenue": 70}),
              Event("back", "u", "track", "Signed In", T0 + 3 * DAY_MS + 401 * DAY_MS, {})]
    for event in events[:2]:
        take_event("u", cached, event, cfg, dues)
        take_event("u", full, event, cfg)
    assert next_timer(cached, cfg, dues) == next_timer(full, cfg)
    predicted = [n for n, rule in enumerate(RULES) if rule.segment.startswith(("predicted", "high_predicted"))]
    assert any(dues.per_rule()[n] is not None for n in predicted)
    assert dues.per_rule()[RULES.index(catalog._BY_SEGMENT["high_predicted_value"])] > events[2].ts
    assert take_event("u", cached, events[2], cfg, dues) == take_event("u", full, events[2], cfg)
    assert cached == full and cached.orders == []
    assert next_timer(cached, cfg, dues) == next_timer(full, cfg)
    assert dues.per_rule() == _every_rule(full, cfg)
    assert all(dues.per_rule()[n] is None for n in predicted)
