import json
import math
import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.events import DeadLetterReason, InvalidEvent, decode_event

NOW = int(time.time() * 1000)


def body(**overrides):
    doc = {"type": "track", "event": "Order Completed", "messageId": "m-1", "userId": "u-1",
           "timestamp": "2026-11-28T10:00:00.250Z", "properties": {"revenue": 12.5, "coupon": "X", "junk": [1, 2]}}
    doc.update(overrides)
    return doc


def reason_of(raw: bytes) -> DeadLetterReason:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, NOW)
    assert info.value.detail, "every dead letter says what was wrong"
    return info.value.reason


def test_json_track_is_normalized():
    event = decode_event(json.dumps(body()).encode(), NOW)
    assert (event.user_id, event.type, event.name, event.message_id) == ("u-1", "track", "Order Completed", "m-1")
    assert event.ts == 1795860000250
    assert event.props == {"revenue": 12.5, "coupon": "X"}  # only the properties the catalog reads


def test_msgpack_and_epoch_millis_and_anonymous_id():
    doc = body(timestamp=1795860000250, userId=None, anonymousId="anon-7")
    event = decode_event(msgpack.packb(doc), NOW)
    assert event.user_id == "anon-7" and event.ts == 1795860000250


def test_page_name_is_the_event_name():
    event = decode_event(json.dumps({"type": "page", "name": "Pricing", "messageId": "p", "userId": "u", "timestamp": 5}).encode(), NOW)
    assert (event.type, event.name, event.is_activity) == ("page", "Pricing", True)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", DeadLetterReason.UNDECODABLE),
        (b"\xff\xfe\x00garbage", DeadLetterReason.UNDECODABLE),
        (b"\x93\x01", DeadLetterReason.UNDECODABLE),  # truncated msgpack
        (b'{"type": "track", "event": "\xff"}', DeadLetterReason.UNDECODABLE),  # invalid UTF-8
        (b'{"type": "track",', DeadLetterReason.UNDECODABLE),
        (json.dumps(body(userId=None)).encode(), DeadLetterReason.MISSING_USER_ID),
        (json.dumps(body(userId="")).encode(), DeadLetterReason.MISSING_USER_ID),
        (json.dumps(body(event=42)).encode(), DeadLetterReason.SCHEMA_VIOLATION),
        (json.dumps(body(type="purchase")).encode(), DeadLetterReason.SCHEMA_VIOLATION),
        (json.dumps({k: v for k, v in body().items() if k != "messageId"}).encode(), DeadLetterReason.SCHEMA_VIOLATION),
        (json.dumps(body(properties={"revenue": "lots"})).encode(), DeadLetterReason.SCHEMA_VIOLATION),
        (msgpack.packb(body(properties={"revenue": math.nan})), DeadLetterReason.SCHEMA_VIOLATION),
        (msgpack.packb(body(properties={"revenue": math.inf})), DeadLetterReason.SCHEMA_VIOLATION),
        (json.dumps([1, 2, 3]).encode(), DeadLetterReason.SCHEMA_VIOLATION),
        (json.dumps(body(timestamp="yesterday at noon")).encode(), DeadLetterReason.BAD_TIMESTAMP),
        (json.dumps(body(timestamp="2999-01-01T00:00:00Z")).encode(), DeadLetterReason.FUTURE_TIMESTAMP),
        (json.dumps(body(properties={"pad": "x" * 40_000})).encode(), DeadLetterReason.OVERSIZE),
    ],
)
def test_invalid_messages_name_their_reason(raw, reason):
    assert reason_of(raw) == reason


@pytest.mark.parametrize("timestamp, says", [
    (-5, "-5 is less than the minimum of 0"),
    ("2026", "'2026' is too short"),
    (True, "True is not of type 'string', 'integer'"),
    (12.5, "12.5 is not of type 'string', 'integer'"),
])
def test_a_malformed_timestamp_is_explained(timestamp, says):
    """The sender learns what is wrong with the timestamp, not only that no alternative matched."""
    with pytest.raises(InvalidEvent) as info:
        decode_event(json.dumps(body(timestamp=timestamp)).encode(), NOW)
    assert info.value.reason == DeadLetterReason.SCHEMA_VIOLATION
    assert info.value.detail == f"at timestamp: {says}"


def test_a_user_id_that_would_be_the_engines_own_key_is_a_dead_letter():
    from stream_app.engine import PartitionEngine, RawRecord
    from stream_app.engine.partition import CLOCK_KEY
    from stream_app.replay import InMemoryStore
    from stream_app.segments.config import CatalogConfig

    for field in ("userId", "anonymousId"):
        doc = body(**{field: CLOCK_KEY}) if field == "userId" else {**body(userId=None), "anonymousId": "\x00x"}
        with pytest.raises(InvalidEvent) as raised:
            decode_event(json.dumps(doc).encode(), NOW)
        assert raised.value.reason == DeadLetterReason.SCHEMA_VIOLATION and "NUL" in raised.value.detail
    # the engine keeps its clock under that key: such an event must not reach it as a user's
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CatalogConfig())
    store.write(engine.tick(NOW).writes)
    result = engine.handle([RawRecord(json.dumps(body(userId=CLOCK_KEY)).encode())], NOW)
    assert [invalid.reason for _, invalid in result.dead_letters] == [DeadLetterReason.SCHEMA_VIOLATION]


def test_deeply_nested_input_is_a_dead_letter_not_a_crash():
    nested = b"[" * 100_000 + b"]" * 100_000
    assert reason_of(b"{\"a\":" + nested + b"}") in (DeadLetterReason.UNDECODABLE, DeadLetterReason.OVERSIZE)
    packed = msgpack.packb(body(properties={"deep": [[[[[[[[[[1]]]]]]]]]]}))
    assert decode_event(packed, NOW).props == {}


def test_a_timestamp_just_under_24h_ahead_is_accepted():
    ahead = NOW + 24 * 3600 * 1000 - 1000
    assert decode_event(json.dumps(body(timestamp=ahead)).encode(), NOW).ts == ahead


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_invalid_event(raw):
    try:
        decode_event(raw, NOW)
    except InvalidEvent:
        pass


_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**63), st.floats(allow_nan=False), st.text(max_size=12),
                    st.just(""), st.just("2026-01-01T00:00:00Z"), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def _segment_like(draw):
    doc = {}
    for key, likely in (("type", st.sampled_from(["track", "page", "identify", "screen", "alias", "Track"])),
                        ("messageId", st.text(min_size=0, max_size=300)), ("userId", st.text(max_size=5)),
                        ("anonymousId", st.text(max_size=5)), ("timestamp", st.one_of(st.integers(-5, 2**45), st.text(max_size=45))),
                        ("event", st.text(max_size=5)), ("name", st.text(max_size=5)), ("properties", st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
                        ("traits", st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)), ("previousId", st.text(max_size=3))):
        choice = draw(st.integers(0, 9))
        if choice < 6:
            doc[key] = draw(likely)
        elif choice < 8:
            doc[key] = draw(_values)
    return doc


@settings(max_examples=3000, deadline=None)
@given(doc=_segment_like())
def test_the_fast_validator_agrees_with_the_reference_validator(doc):
    from stream_app.events.decode import _fast_validator, _validator

    try:
        _fast_validator()(doc)
        fast = True
    except Exception:
        fast = False
    assert fast == _validator().is_valid(doc), doc
