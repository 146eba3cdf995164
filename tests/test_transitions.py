import json
from datetime import datetime, timezone
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from jsonschema import Draft202012Validator

from stream_app.timeutil import format_timestamp
from stream_app.transitions import Change, to_record, transition_id

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "segment-transition.schema.json").read_text())


def test_ids_are_deterministic_and_depend_on_user_segment_and_cause():
    base = transition_id("u", "cart_abandoner", "timer:5")
    assert base == transition_id("u", "cart_abandoner", "timer:5")
    assert len({base, transition_id("v", "cart_abandoner", "timer:5"), transition_id("u", "high_intent", "timer:5"),
                transition_id("u", "cart_abandoner", "timer:6")}) == 4


def test_records_follow_the_published_schema_and_flag_historical():
    change = Change("u", "lifecycle", "new_lead", "activated", 1_000, "event", "m-1", {"orders_365d": 1})
    record = to_record(change, emitted_at_ms=1_000 + 3600_001, historical_after_ms=3600_000, model_version="catalog-1")
    Draft202012Validator(SCHEMA).validate(record)
    assert record["historical"] is True and record["cause"] == {"type": "event", "message_id": "m-1"}
    fresh = to_record(change, emitted_at_ms=1_050, historical_after_ms=3600_000, model_version="catalog-1")
    assert fresh["historical"] is False and fresh["transition_id"] == record["transition_id"]
    timer = to_record(Change("u", "cart_abandoner", None, "cart_abandoner", 1_800_000, "timer", "1800000", {}), 1_800_100, 3600_000, "v")
    Draft202012Validator(SCHEMA).validate(timer)
    assert timer["cause"] == {"type": "timer", "due": "1970-01-01T00:30:00.000Z"}


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, 32503680000000))
def test_timestamps_are_formatted_as_the_calendar_says(millis):
    """format_timestamp assembles the text from tables; it must equal the calendar's own formatting."""
    seconds, ms = divmod(millis, 1000)
    expected = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"
    assert format_timestamp(millis) == expected


def test_timestamps_at_day_and_year_boundaries():
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert format_timestamp(86_399_999) == "1970-01-01T23:59:59.999Z"
    assert format_timestamp(86_400_000) == "1970-01-02T00:00:00.000Z"
    assert format_timestamp(1_767_225_599_999) == "2025-12-31T23:59:59.999Z"
    assert format_timestamp(1_709_164_800_000) == "2024-02-29T00:00:00.000Z"
