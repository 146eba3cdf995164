"""Fast fuzzing of the pure core with hostile input: the seeded generator of malformed messages
(`stream_app.demo.hostile`, also used on the real broker by tests/test_kafka_fuzz.py and
benchmarks/fuzz_run.py) and hypothesis mutations of a valid event. Every malformed message is a dead
letter with a reason and a detail; every valid one is processed; nothing raises."""

from __future__ import annotations

import json
import time
from collections import Counter

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.demo.hostile import hostile_stream
from stream_app.engine import PartitionEngine, RawRecord
from stream_app.events import DeadLetterReason, InvalidEvent, decode_event
from stream_app.replay.run import InMemoryStore
from stream_app.segments.config import CatalogConfig

NOW = int(time.time() * 1000)
REASONS = {r.value for r in DeadLetterReason}


def test_every_generated_malformed_message_is_a_dead_letter_and_every_valid_one_decodes():
    kinds: Counter = Counter()
    for kind, _key, value, malformed in hostile_stream(seed=1, malformed=4000, now_ms=NOW):
        kinds[kind] += 1
        try:
            event = decode_event(value, NOW)
        except InvalidEvent as exc:
            assert malformed, f"a valid {kind} message was refused: {exc}"
            assert exc.reason.value in REASONS and exc.detail
            continue
        assert not malformed, f"a malformed {kind} message was accepted: {value[:200]!r}"
        assert event.user_id and event.message_id and event.name
    assert len(kinds) >= 25, kinds  # every kind was drawn


def test_the_engine_dead_letters_the_malformed_and_processes_the_valid():
    stream = list(hostile_stream(seed=2, malformed=1500, now_ms=NOW))
    engine = PartitionEngine(0, InMemoryStore(), CatalogConfig(), max_event_bytes=32 * 1024)
    engine.rebuild_schedule()
    records = [RawRecord(value, "in", 0, offset) for offset, (_k, _key, value, _m) in enumerate(stream)]
    result = engine.handle(records, NOW)
    malformed = {offset for offset, row in enumerate(stream) if row[3]}
    assert {record.offset for record, _ in result.dead_letters} == malformed
    assert all(invalid.reason.value in REASONS and invalid.detail for _, invalid in result.dead_letters)
    valid = len(stream) - len(malformed)
    assert sum(n for key, n in result.counts.items() if key.startswith("type:")) == valid


VALID = {"type": "track", "event": "Order Completed", "messageId": "m-1", "userId": "u-1",
         "timestamp": "2026-11-28T10:00:00.250Z", "properties": {"revenue": 12.5}}
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
                      max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(field=st.sampled_from(sorted(VALID) + ["anonymousId", "properties.revenue", "properties.quantity", "properties.coupon"]),
       value=VALUES, as_msgpack=st.booleans(), drop=st.booleans())
def test_mutating_one_field_never_raises_anything_but_a_dead_letter(field, value, as_msgpack, drop):
    doc = json.loads(json.dumps(VALID))
    target, key = (doc["properties"], field.split(".", 1)[1]) if field.startswith("properties.") else (doc, field)
    if drop:
        target.pop(key, None)
    else:
        target[key] = value
    try:
        raw = msgpack.packb(doc) if as_msgpack else json.dumps(doc).encode()
    except (OverflowError, ValueError, TypeError):
        raw = json.dumps(doc, default=str).encode()
    try:
        event = decode_event(raw, NOW)
    except InvalidEvent as exc:
        assert exc.reason.value in REASONS and exc.detail
        return
    # accepted: then what the engine keeps has the promised types
    assert isinstance(event.user_id, str) and event.user_id and isinstance(event.message_id, str)
    assert isinstance(event.ts, int) and event.ts <= NOW + 24 * 3600 * 1000
    for name in ("revenue", "quantity"):
        if name in event.props:
            assert isinstance(event.props[name], (int, float)) and not isinstance(event.props[name], bool)
            assert abs(event.props[name]) <= 1e15
