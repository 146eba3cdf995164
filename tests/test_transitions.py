import json
from pathlib import Path

from jsonschema import Draft202012Validator

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
