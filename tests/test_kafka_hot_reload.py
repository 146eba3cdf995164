"""Editing the definitions file under a running worker: a valid change takes effect without a restart,
an invalid one is rejected with a clear message while the old definitions keep running."""

from __future__ import annotations

import time

import pytest

from stream_app.segments.definitions import DEFAULTS_FILE

from .helpers import Names, WorkerProcess, encode, page, produce, read_all, track, wait_for

pytestmark = [pytest.mark.kafka]


def test_definitions_hot_reload(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=2)
    names.create_topics()
    definitions = tmp_path / "segments.yaml"
    definitions.write_text(DEFAULTS_FILE.read_text())
    now = int(time.time() * 1000)
    # intent 2 + 3 = 5: below the default threshold of 6
    events = [page("reader", "Pricing", now - 60_000), track("reader", "Product Added", now - 59_000, product_id="p")]
    produce(kafka_bootstrap, names.input, [(e["userId"].encode(), encode(e)) for e in events])
    worker = WorkerProcess(names, tmp_path / "w")
    worker.start_env = {"STREAM_APP_SEGMENTS_FILE": str(definitions), "STREAM_APP_RELOAD_INTERVAL_MS": "500"}
    worker.start()
    try:
        wait_for(lambda: _safe(lambda: worker.metric_value("stream_app_events_consumed_total")) == 2, 90, "2 events consumed")
        first = wait_for(lambda: (rows := read_all(kafka_bootstrap, names.transitions)) and len(rows) >= 2 and rows, 30, "the first transitions")
        assert sorted((r["segment"], r["to"]) for r in first) == [("engagement", "inactive"), ("lifecycle", "new_lead")]
        old_version = first[0]["model_version"]

        # an invalid edit is rejected; the worker keeps running the old definitions
        definitions.write_text(DEFAULTS_FILE.read_text().replace("threshold: 6", "threshold: six"))
        wait_for(lambda: _safe(lambda: worker.metric_value("stream_app_definition_reloads_total", 'result="rejected"')) == 1, 30, "the rejection")
        assert f"{definitions}:" in worker.log() and "expected a number" in worker.log()
        worker.assert_alive()

        # a valid edit takes effect without a restart: the reader now has enough intent
        definitions.write_text(DEFAULTS_FILE.read_text().replace("threshold: 6", "threshold: 5"))
        rows = wait_for(lambda: [r for r in read_all(kafka_bootstrap, names.transitions) if r["segment"] == "high_intent"], 30, "high_intent after the reload")
        assert rows[0]["to"] == "high_intent" and rows[0]["cause"]["type"] == "definitions"
        assert rows[0]["model_version"] != old_version and rows[0]["cause"]["version"] == rows[0]["model_version"]
        assert worker.metric_value("stream_app_definition_reloads_total", 'result="accepted"') == 1

        # user-defined segments, added by editing the file: an event-driven one reading a property the
        # catalog does not know, and a timer-driven "A not followed by B within N"
        definitions.write_text(DEFAULTS_FILE.read_text().replace("threshold: 6", "threshold: 5") + CUSTOM)
        wait_for(lambda: worker.metric_value("stream_app_definition_reloads_total", 'result="accepted"') == 2, 30, "the custom segments loaded")
        now = int(time.time() * 1000)
        later = [page("fan", "Pricing", now, campaign="spring"), page("fan", "Pricing", now + 1, campaign="autumn"),
                 track("browser", "Product Viewed", now, product_id="p"),
                 track("buyer", "Product Viewed", now, product_id="p"), track("buyer", "Product Added", now + 500, product_id="p")]
        produce(kafka_bootstrap, names.input, [(e["userId"].encode(), encode(e)) for e in later])
        custom = wait_for(lambda: (rows := [r for r in read_all(kafka_bootstrap, names.transitions) if r["segment"] in ("spring_fan", "browse_abandon")])
                          and len(rows) >= 2 and rows, 60, "the user-defined segments' transitions")
        time.sleep(3)  # nothing else may follow: the buyer added the product in time
        custom = [r for r in read_all(kafka_bootstrap, names.transitions) if r["segment"] in ("spring_fan", "browse_abandon")]
        assert sorted((r["user_id"], r["segment"], r["to"], r["cause"]["type"]) for r in custom) == [
            ("browser", "browse_abandon", "browse_abandon", "timer"), ("fan", "spring_fan", "spring_fan", "event")]
        worker.assert_alive()
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]


CUSTOM = """
custom_segments:
  - id: spring_fan
    when: {count: {event: "page:Pricing", where: {campaign: spring}, window: 1d}, at_least: 1}
  - id: browse_abandon
    when:
      not_followed_by: {event: Product Viewed, then: Product Added, within: 3s, window: 1h}
"""


def _safe(fn):
    try:
        return fn()
    except OSError:
        return None
