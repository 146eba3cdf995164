"""kill -9 in mid-stream, then a restart: state continues, nothing is lost and nothing is emitted twice."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from stream_app.demo.generator import as_wire, generate
from stream_app.replay import replay_records
from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import DAY_MS

from .helpers import Names, WorkerProcess, encode, population_independent, produce, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_kill_9_mid_stream_then_restart_loses_nothing_and_repeats_nothing(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    now = int(time.time() * 1000)
    events = [as_wire(e) for e in generate(seed=21, users=4000, start_ms=now - 4 * DAY_MS, span_ms=3 * DAY_MS)]
    produce(kafka_bootstrap, names.input, [(e["userId"].encode(), encode(e)) for e in events])
    expected, _dead, _store = replay_records([encode(e) for e in events], CatalogConfig(), until_ms=now)
    expected = population_independent(expected)

    data_dir = tmp_path / "w"
    worker = WorkerProcess(names, data_dir).start()
    # wait until part of the output is committed, then kill -9 while input is still unprocessed
    wait_for(lambda: len(population_independent(read_all(kafka_bootstrap, names.transitions, idle_ms=500))) >= len(expected) // 5, 120, "the first transitions")
    worker.kill9()
    before_restart = read_all(kafka_bootstrap, names.transitions, idle_ms=1000)
    assert len(population_independent(before_restart)) < len(expected), "the kill must land while input is still unprocessed"

    restarted = WorkerProcess(names, data_dir).start()
    try:
        got = wait_for(lambda: (rows := read_all(kafka_bootstrap, names.transitions, idle_ms=1000)) and len(population_independent(rows)) >= len(expected) and rows,
                       180, f"{len(expected)} transitions after the restart")
        time.sleep(3)  # anything emitted twice would show up now
        got = read_all(kafka_bootstrap, names.transitions, idle_ms=1000)
        occurrences = Counter(r["transition_id"] for r in got)
        assert [tid for tid, n in occurrences.items() if n > 1] == [], "a transition id appeared twice in the raw output"
        expected_ids = {r["transition_id"] for r in population_independent(expected)}
        assert expected_ids - set(occurrences) == set(), "transitions were lost"
        # after the restart the worker may also fire timers that came due since `now`; nothing else is extra
        extra = [r for r in population_independent(got) if r["transition_id"] not in expected_ids]
        assert all(r["cause"]["type"] == "timer" for r in extra)
        # local state holds only committed writes, so a kill -9 leaves it usable: the restart keeps it and
        # reads only the changelog tail
        log = restarted.log()
        kept = sum(int(n) for n in re.findall(r"schedule rebuilt for (\d+) profiles", log))
        tail = sum(int(n) for n in re.findall(r"from the changelog: (\d+) records", log))
        assert kept > 0 and tail < kept, (kept, tail)
        # every profile's schedule entry was found (kept locally, or in the restored records' headers)
        computed = [int(n) for n in re.findall(r"\((\d+) of them without a current schedule entry\)", log)]
        assert computed and set(computed) == {0}, computed
    finally:
        assert restarted.stop() == 0, restarted.log()[-3000:]
