"""Regressions found in review: hostile numbers and text, old late duplicates, late cart events,
repeated definition loads."""

import json
import time

import pytest

from stream_app.engine import PartitionEngine, RawRecord
from stream_app.events import DeadLetterReason, InvalidEvent, decode_event
from stream_app.replay import InMemoryStore
from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import DAY_MS, MINUTE_MS

from .helpers import encode, track
from .helpers_core import changes, run

NOW = int(time.time() * 1000)
T0 = 1_790_000_000_000


@pytest.mark.parametrize("props", [{"quantity": 10**400}, {"quantity": 2**64}, {"quantity": 1e20}, {"revenue": 2**70},
                                   {"step": 1e300}, {"value": 10**300}, {"product_id": "\ud800"}])
def test_hostile_values_are_dead_letters_not_crashes(props):
    raw = json.dumps({"type": "track", "event": "Product Added", "userId": "u", "messageId": "m",
                      "timestamp": "2026-01-01T00:00:00Z", "properties": props}).encode()
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, NOW)
    assert info.value.reason == DeadLetterReason.SCHEMA_VIOLATION


def test_a_lone_surrogate_in_ids_is_a_dead_letter():
    raw = b'{"type":"track","event":"X","userId":"u","messageId":"\\ud800","timestamp":"2026-01-01T00:00:00Z"}'
    with pytest.raises(InvalidEvent):
        decode_event(raw, NOW)


def test_an_old_late_event_sent_twice_counts_once():
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CatalogConfig(), use_wall_clock=False)
    for batch in ([track("u", "Signed In", T0 + 10 * DAY_MS)], [track("u", "Order Completed", T0, mid="late", revenue=1)],
                  [track("u", "Order Completed", T0, mid="late", revenue=1)]):
        result = engine.handle([RawRecord(encode(e)) for e in batch], NOW)
        store.write(result.writes)
    assert result.counts["duplicate"] == 1


def test_a_late_cart_event_from_before_the_last_order_does_not_open_a_cart():
    events = [track("u", "Order Completed", T0 + MINUTE_MS, revenue=1)]
    late = [track("u", "Product Added", T0, product_id="p")]
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CatalogConfig(), use_wall_clock=False)
    store.write(engine.handle([RawRecord(encode(e)) for e in events], NOW).writes)
    store.write(engine.advance_to(T0 + 2 * MINUTE_MS, NOW).writes)
    result = engine.handle([RawRecord(encode(e)) for e in late], NOW)
    store.write(result.writes)
    out = engine.advance_to(T0 + DAY_MS, NOW)
    assert not [t for t in out.transitions + result.transitions if t["segment"] == "cart_abandoner"]


def test_loading_definitions_a_b_a_b_never_repeats_an_id():
    from dataclasses import replace

    a = CatalogConfig(version="a")
    b = replace(a, intent_threshold=3, version="b")
    store = InMemoryStore()
    engine = PartitionEngine(0, store, a, use_wall_clock=False)
    store.write(engine.handle([RawRecord(encode(track("u", "Product Added", T0, product_id="p")))], NOW).writes)
    store.write(engine.advance_to(T0 + 1, NOW).writes)
    ids = []
    for n, cfg in enumerate([b, a, b, a]):
        result = engine.reevaluate_all(cfg, NOW, loaded_at=NOW + n)
        store.write(result.writes)
        ids += [t["transition_id"] for t in result.transitions if t["segment"] == "high_intent"]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert PartitionEngine(0, store, a).saved_definitions == "a"  # stored with the clock


def test_quantity_one_and_a_half_is_read_as_one():
    out = run([track("u", "Product Added", T0, product_id="p", quantity=1.5),
               track("u", "Product Removed", T0 + 1, product_id="p", quantity=1)], until=T0 + DAY_MS)
    assert changes(out, "cart_abandoner") == []


def test_a_user_back_after_400_days_is_new_however_the_events_are_batched():
    T0 = 1_700_000_000_000  # noqa: N806 - far enough in the past for 401 days to stay in the past
    events = [track("u", "Order Completed", T0, revenue=1), track("u", "Product Viewed", T0 + 401 * DAY_MS)]
    together = changes(run(events, until=T0 + 401 * DAY_MS), "lifecycle")
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CatalogConfig(), use_wall_clock=False)
    store.write(engine.handle([RawRecord(encode(events[0]))], NOW).writes)
    store.write(engine.advance_to(T0 + 400 * DAY_MS + 1, NOW).writes)
    second = engine.handle([RawRecord(encode(events[1]))], NOW)
    store.write(second.writes)
    last = engine.advance_to(T0 + 401 * DAY_MS, NOW)
    apart = [(t["from"], t["to"]) for t in second.transitions + last.transitions if t["segment"] == "lifecycle"]
    assert together[-1][:2] == (None, "new_lead") and apart == [(None, "new_lead")]
