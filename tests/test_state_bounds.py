"""Bounded state (docs/segments.md, "Bounded state"): every per-user structure has a bound, the largest
profile the bounds allow fits a changelog record, a heavy user's structures stay within their bounds,
and no input value becomes a metric label."""

from __future__ import annotations

import json
from collections import Counter

from prometheus_client import REGISTRY

from stream_app.engine import BatchResult
from stream_app.replay import replay_records
from stream_app.segments.config import CatalogConfig
from stream_app.segments.usage import metric_label
from stream_app.settings import Settings
from stream_app.state import bounds
from stream_app.state.aggregates import FEATURE_USES_KEPT
from stream_app.state.encoding import decode_profile, encode_profile
from stream_app.state.profile import Profile
from stream_app.timeutil import DAY_MS, format_timestamp
from stream_app.worker.segmentation import SegmentationProcessor

T0 = 1_790_000_000_000
CHANGELOG_RECORD_LIMIT = 1_000_000  # librdkafka's message.max.bytes and the broker's default, about 1 MB
LONGEST = 200  # kept text properties are cut to 200 characters (events/decode.py)


def _name(n: int) -> str:
    return f"{n:06d}".ljust(LONGEST, "x")


def test_the_largest_profile_the_bounds_allow_fits_a_changelog_record():
    big_ts = T0 + 365 * DAY_MS
    features = {_name(n): [big_ts - k for k in range(FEATURE_USES_KEPT)][::-1] for n in range(bounds.FEATURES)}
    profile = Profile(
        t=big_ts, first_seen=T0, last_event=big_ts, last_activity=big_ts, activated_at=T0,
        days={20_000 + d: big_ts for d in range(62)}, days_first={20_000 + d: big_ts for d in range(62)},
        orders=[[big_ts - n, 1e15, 1] for n in range(bounds.ORDERS)][::-1],
        refunds=[[big_ts - n, 1e15] for n in range(bounds.REFUNDS)][::-1], last_order=big_ts,
        intent=[[big_ts - n, 0.1] for n in range(bounds.INTENT_ENTRIES)][::-1],
        cart={_name(n): 2**31 for n in range(bounds.CART_ITEMS)}, cart_opened=big_ts, cart_last=big_ts,
        seen={2**64 - 1 - n: big_ts for n in range(bounds.SEEN_IDS)},
        members={f"power_user:{name}": f"power_user:{name}" for name in features} | {"lifecycle": "loyal_advocate"},
        promo_clicks=[big_ts - n for n in range(bounds.PROMO_CLICKS)][::-1],
        features=features, usage={_name(n): [big_ts, 1e15, 1e15] for n in range(bounds.USAGE_METRICS)},
        features_ever=[_name(n) for n in range(bounds.FEATURES_EVER)],
        orders_total=2**40, purchase_first_day=1, purchase_last_day=2, purchase_days=2**30, repeat_spend=1e15,
        eng_score=1e9, eng_ref=big_ts, engaged_until=big_ts, trial_started=big_ts, trial_ended=big_ts,
        onboarding_step=2**31, onboarding_step_at=big_ts,
    )
    encoded = encode_profile(profile)
    assert decode_profile(encoded) == profile
    assert len(encoded) < CHANGELOG_RECORD_LIMIT, f"{len(encoded):,} bytes"
    # and the bound is not vacuous: the seen ids alone are a large part of it
    assert len(encoded) > bounds.SEEN_IDS * 10


def _heavy_user_events(count: int, features: int) -> list[bytes]:
    """One user: 3/4 `Product Viewed`, 1/4 `Feature Used` over many feature names, one event every 0.4 s."""
    lines = []
    for n in range(count):
        ts = T0 + n * 400
        if n % 4 == 3:
            props = {"feature": f"feature-{(n // 4) % features}"}
            name = "Feature Used"
        else:
            props = {"product_id": f"p{n % 50}"}
            name = "Product Viewed"
        lines.append(json.dumps({"type": "track", "event": name, "userId": "heavy", "messageId": f"m{n}",
                                 "timestamp": format_timestamp(ts), "properties": props}).encode())
    return lines


def test_a_heavy_users_structures_stay_within_their_bounds():
    count = 30_000  # 3.3 hours of one event every 0.4 s: 22,500 views (intent), 7,500 feature uses
    transitions, dead, store = replay_records(_heavy_user_events(count, features=5_000), CatalogConfig())
    assert not dead
    profile = decode_profile(store["heavy"])
    assert len(profile.seen) == bounds.SEEN_IDS  # 30k ids within 7 days: only the newest are remembered
    assert len(profile.intent) == bounds.INTENT_ENTRIES
    assert len(profile.features) == bounds.FEATURES
    assert len(profile.features_ever) == bounds.FEATURES_EVER
    assert len(store["heavy"]) < CHANGELOG_RECORD_LIMIT
    # below its bound a decision is exact: intent needs 12 views (0.5 each) and has 256
    assert profile.members.get("high_intent") == "high_intent"


def test_bounds_are_counted_per_batch_by_the_engine():
    from stream_app.engine import PartitionEngine, RawRecord
    from stream_app.replay import InMemoryStore

    store = InMemoryStore()
    engine = PartitionEngine(0, store, CatalogConfig(), use_wall_clock=False)
    lines = _heavy_user_events(2 * bounds.INTENT_ENTRIES, features=10)  # 3/4 of them are intent events
    result = engine.handle([RawRecord(line) for line in lines], T0 + 30 * DAY_MS)
    assert result.counts["evicted:intent"] > 0
    again = engine.handle([], T0 + 30 * DAY_MS)
    assert not any(key.startswith("evicted:") for key in again.counts)  # the tally was taken


def _series(metric: str) -> set[tuple]:
    return {tuple(sorted(sample.labels.items())) for family in REGISTRY.collect() if family.name == metric
            for sample in family.samples}


def test_ten_thousand_feature_names_add_fewer_than_100_series():
    cfg = CatalogConfig(power_user_metric_features=("export",), key_feature="dashboards")
    processor = SegmentationProcessor(Settings(), cfg)
    before = {name: _series(name) for name in ("stream_app_transitions", "stream_app_segment_population")}
    result = BatchResult()
    for n in range(10_000):
        segment = f"power_user:someone{n}@example.com"
        result.transitions.append({"segment": segment, "from": None, "to": segment, "historical": True,
                                   "cause": {"type": "event"}})
        result.transition_times.append(T0)
    for named in ("export", "dashboards"):
        segment = f"power_user:{named}"
        result.transitions.append({"segment": segment, "from": None, "to": segment, "historical": True, "cause": {"type": "event"}})
        result.transition_times.append(T0)
    processor._observe(0, result, T0, T0, T0)
    processor._publish_population()
    added = set()
    for name, series in before.items():
        added |= _series(name) - series
    assert len(added) < 100, len(added)
    labels = {value for labels in added for _, value in labels}
    assert "power_user:other" in labels and "power_user:export" in labels and "power_user:dashboards" in labels
    assert not any("example.com" in value for value in labels)


def test_metric_labels_name_only_configured_features():
    cfg = CatalogConfig(power_user_metric_features=("export",), activation_feature="sync")
    assert metric_label("power_user:export", cfg) == "power_user:export"
    assert metric_label("power_user:sync", cfg) == "power_user:sync"
    assert metric_label("power_user:a@b.c", cfg) == "power_user:other"
    assert metric_label("lifecycle", cfg) == "lifecycle" and metric_label(None, cfg) is None
    assert Counter(metric_label(f"power_user:f{n}", cfg) for n in range(10_000)) == {"power_user:other": 10_000}
