"""History sent to a running worker is decided in its own time (the catalog's "History is decided in
its own time"): the worker's output equals `stream-app replay --until T` on the same input, by content.

The worker has idled first, so its live clock is at the wall clock: before the backfill rule, every one
of these events was late and each new profile was dropped as 400 days dormant at the next tick.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.demo.generator import as_wire, generate
from stream_app.timeutil import DAY_MS, HOUR_MS, SECOND_MS, parse_timestamp

from .output_check import compare_with_replay, entered_from_null_twice, read_partitioned
from .helpers import Names, WorkerProcess, encode, interleave_users_within, produce, track, wait_for

pytestmark = [pytest.mark.kafka]
PARTITIONS = 3


def _idle_worker(kafka_bootstrap: str, data_dir, **env: str) -> tuple[Names, WorkerProcess]:
    names = Names(kafka_bootstrap, partitions=PARTITIONS)
    names.create_topics()
    worker = WorkerProcess(names, data_dir)
    worker.start_env.update(env)
    worker.start()
    wall = time.time()

    def idle() -> bool:  # every partition's live clock follows the wall clock (minus the 5 s allowance)
        try:
            return all(worker.metric_value("stream_app_partition_clock_seconds", f'partition="{p}"') > wall - 5
                       for p in range(PARTITIONS))
        except OSError:  # /metrics is not served yet
            return False

    wait_for(idle, 90, "the idle worker's clocks at the wall clock")
    return names, worker


def _year_of_history(now: int, users: int, seed: int) -> list[dict]:
    """A year of generated users' events, ending a day before ``now``, in timestamp order."""
    start = now - DAY_MS - 365 * DAY_MS
    return [as_wire(e) for e in generate(seed, users, start, 365 * DAY_MS)]


def _messages(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["userId"].encode(), encode(e)) for e in events]


def _drained(worker: WorkerProcess) -> bool:
    return all(worker.metric_value("stream_app_partition_backfill_clock_seconds", f'partition="{p}"') == 0
               for p in range(PARTITIONS))


def _finish_and_compare(names: Names, worker: WorkerProcess, events: list[dict]) -> dict:
    wait_for(lambda: worker.metric_value("stream_app_events_consumed_total") >= len(events), 180, "every event consumed")
    wait_for(lambda: _drained(worker), 120, "the backfill drained")
    worker.assert_alive()
    assert worker.metric_value("stream_app_backfill_events_total") == len(events)
    assert worker.metric_value("stream_app_late_events_total") == 0
    assert worker.stop() == 0
    compared = compare_with_replay(names, events, encode)
    assert compared["compared"] > len(events) / 10, "the history produces transitions"
    assert not entered_from_null_twice(compared["transitions"])
    return compared


def test_an_idle_worker_decides_a_years_history_at_full_speed_as_the_replay_does(kafka_bootstrap, tmp_path):
    names, worker = _idle_worker(kafka_bootstrap, tmp_path / "w")
    try:
        events = _year_of_history(int(time.time() * 1000), users=4300, seed=21)
        assert len(events) >= 45_000
        produce(kafka_bootstrap, names.input, _messages(events))
        compared = _finish_and_compare(names, worker, events)
        timers = sum(1 for r in compared["transitions"] if r["cause"]["type"] == "timer")
        assert timers > 1000, "cart, decay, churn and expiry timers fired on the backfill clock"
        # caused by the backfill: historical; after the drain, a refresh or timer decided within the last
        # hour (the historical age) is present-day news
        assert all(r["historical"] for r in compared["transitions"] if r["cause"]["type"] == "event")
        assert all(r["historical"] or parse_timestamp(r["emitted_at"]) - parse_timestamp(r["at"]) <= HOUR_MS
                   for r in compared["transitions"])
    finally:
        worker.stop()


def test_the_same_history_at_a_quarter_of_the_throughput_with_a_pause(kafka_bootstrap, tmp_path):
    # drained after 20 s without a backfill event: longer than the 10 s pause, as the default 60 s is
    names, worker = _idle_worker(kafka_bootstrap, tmp_path / "w", STREAM_APP_BACKFILL_DRAINED_AFTER_MS="20000")
    try:
        events = _year_of_history(int(time.time() * 1000), users=4300, seed=21)
        messages = _messages(events)
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=10)
        rate = 1250  # events/s: a quarter of the worker's ~5,000 (docs/performance.md)
        started = time.monotonic()
        for n, (key, value) in enumerate(messages):
            if n == len(messages) // 2:
                producer.flush()
                time.sleep(10)
                started -= 10
            producer.send(names.input, key=key, value=value)
            ahead = n / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.flush()
        producer.close()
        _finish_and_compare(names, worker, events)
    finally:
        worker.stop()


def test_live_traffic_interleaved_with_a_ten_day_backfill(kafka_bootstrap, tmp_path):
    """Documented in docs/segments.md: live users are decided at once and stay live; the backfill's users
    are decided on its clock. No profile is lost mid-history, nobody enters a family from null twice, and
    nothing caused by the backfill is a non-historical transition."""
    names, worker = _idle_worker(kafka_bootstrap, tmp_path / "w")
    try:
        now = int(time.time() * 1000)
        backfill = [as_wire(e) for e in generate(31, 800, now - 2 * HOUR_MS - 10 * DAY_MS, 10 * DAY_MS)]
        backfill_ids = {e["messageId"] for e in backfill}
        live_users = [f"live-{n}" for n in range(60)]
        produced_live: list[dict] = []
        step = max(1, len(backfill) // 40)
        for chunk_no, start in enumerate(range(0, len(backfill), step)):
            wall = int(time.time() * 1000)
            live = [track(user, "Product Added", wall - 200, mid=f"{user}-add-{chunk_no}", product_id="p")
                    for user in live_users[chunk_no % 3::3]]
            produced_live += live
            produce(kafka_bootstrap, names.input, _messages(backfill[start:start + step]) + _messages(live))
            time.sleep(0.1)
        everything = len(backfill) + len(produced_live)
        wait_for(lambda: worker.metric_value("stream_app_events_consumed_total") >= everything, 180, "every event consumed")
        wait_for(lambda: _drained(worker), 120, "the backfill drained")
        assert worker.metric_value("stream_app_backfill_events_total") == len(backfill)
        assert worker.metric_value("stream_app_dormant_profiles_dropped_total") == 0  # no profile lost mid-history
        assert worker.metric_value("stream_app_late_events_total") == 0
        assert worker.stop() == 0
        got = [json.loads(v) for _, _, v in read_partitioned(kafka_bootstrap, names.transitions) if v is not None]
        assert not entered_from_null_twice(got)
        by_event = [r for r in got if r["cause"]["type"] == "event"]
        assert all(r["historical"] for r in by_event if r["cause"]["message_id"] in backfill_ids)
        live_rows = [r for r in by_event if r["user_id"].startswith("live-")]
        assert live_rows and not any(r["historical"] for r in live_rows)
        # timers of the backfill's users are historical unless due within the historical age (1 h) of
        # their emission: those are absences that happened just now, after the history ended
        backfill_timers = [r for r in got if r["cause"]["type"] == "timer" and not r["user_id"].startswith("live-")]
        assert backfill_timers and all(
            r["historical"] or parse_timestamp(r["emitted_at"]) - parse_timestamp(r["at"]) <= HOUR_MS for r in backfill_timers)
    finally:
        worker.stop()


# -- any interleaving across partitions --------------------------------------------------------------
def _streams(seed: int, now: int) -> dict[int, list[dict]]:
    """Per partition, its users' events in timestamp order (users interleaved within the allowance)."""
    events = [as_wire(e) for e in generate(seed, 45, now - 2 * DAY_MS - 20 * DAY_MS, 20 * DAY_MS)]
    streams: dict[int, list[dict]] = {p: [] for p in range(PARTITIONS)}
    for event in interleave_users_within(events, 4 * SECOND_MS, seed):
        streams[sum(event["userId"].encode()) % PARTITIONS].append(event)
    return streams


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), order=st.lists(st.integers(0, PARTITIONS - 1), min_size=1, max_size=60),
       chunk=st.integers(1, 80), batch_max=st.sampled_from(["1", "7", "2000"]))
def test_any_interleaving_of_the_partitions_gives_the_replays_output(kafka_bootstrap, tmp_path_factory, seed, order, chunk, batch_max):
    from kafka import KafkaProducer

    now = int(time.time() * 1000)
    streams = _streams(seed, now)
    names, worker = _idle_worker(kafka_bootstrap, tmp_path_factory.mktemp("w"), STREAM_APP_BATCH_MAX=batch_max)
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        positions = dict.fromkeys(streams, 0)
        turns = iter(order * (1 + sum(map(len, streams.values())) // max(1, chunk * len(order))))
        while any(positions[p] < len(s) for p, s in streams.items()):
            partition = next(turns, None)
            if partition is None:  # the drawn order is used up: the rest in partition order
                partition = min(p for p, s in streams.items() if positions[p] < len(s))
            for event in streams[partition][positions[partition]:positions[partition] + chunk]:
                producer.send(names.input, key=event["userId"].encode(), value=encode(event), partition=partition)
            positions[partition] += chunk
            producer.flush()
        producer.close()
        events = [e for s in streams.values() for e in s]
        _finish_and_compare(names, worker, events)
    finally:
        worker.stop()
