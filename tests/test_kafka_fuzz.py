"""Hostile input through the real worker on the real broker (a reduced benchmarks/fuzz_run.py): a few
thousand malformed messages of every kind (stream_app.demo.hostile) interleaved with valid events.
Every malformed one lands on the dead-letter topic with a reason, the original bytes and its offset;
every valid one is processed; the worker never stops."""

from __future__ import annotations

import base64
import time
from collections import Counter

import pytest

from stream_app.demo.hostile import hostile_stream
from stream_app.events import DeadLetterReason

from .helpers import Names, WorkerProcess, produce, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_malformed_messages_are_dead_letters_and_valid_ones_are_processed(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    stream = list(hostile_stream(seed=11, malformed=3000))
    malformed = Counter(value for _kind, _key, value, bad in stream if bad)
    valid = sum(1 for row in stream if not row[3])
    produce(kafka_bootstrap, names.input, [(key, value) for _kind, key, value, _bad in stream])
    worker = WorkerProcess(names, tmp_path / "w").start()
    try:
        wait_for(lambda: _metric(worker, "stream_app_events_consumed_total") >= valid
                 and _metric(worker, "stream_app_dead_letters_total") >= sum(malformed.values()), 150,
                 f"{valid} valid events and {sum(malformed.values())} dead letters")
        worker.assert_alive()
        time.sleep(2)  # the last transaction commits
        dead = read_all(kafka_bootstrap, names.dlq)
        assert Counter(base64.b64decode(d["original"]) for d in dead) == malformed, "each malformed message exactly once, nothing else"
        reasons = {r.value for r in DeadLetterReason}
        assert all(d["reason"] in reasons and d["detail"] and d["topic"] == names.input and d["offset"] >= 0 for d in dead)
        assert _metric(worker, "stream_app_events_consumed_total") == valid
        assert _metric(worker, "stream_app_dead_letters_total") == sum(malformed.values())
        assert read_all(kafka_bootstrap, names.transitions), "the valid events produced transitions"
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]


def _metric(worker: WorkerProcess, name: str) -> float:
    try:
        return worker.metric_value(name)
    except OSError:
        return 0.0
