"""Faults on the real broker, each compared with the pure replay of the same seeded input (as in
test_kafka_crash_recovery.py): the raw read_committed output must hold every replayed transition, no
transition id twice, and nothing else but timers that came due after the replay's end.

- the broker is stopped and started again in mid-stream (its own broker: the session broker is shared);
- two workers share the partitions; one is killed with kill -9 and later comes back (rebalance both ways);
- the worker's local RocksDB folder is deleted: state comes back from the changelog, results identical.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from stream_app.broker.local_kafka import LocalKafka
from stream_app.demo.generator import as_wire, generate
from stream_app.replay import replay_records
from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import DAY_MS

from .helpers import Names, WorkerProcess, encode, local_broker, produce, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# RFM memberships are scored against the population of all users, refreshed on the wall clock in the
# worker and daily in event time in the replay, so they are not a function of the input alone: they are
# checked for repeats here (every segment is), not compared with the replay.
POPULATION_SEGMENTS = {"rfm"}


class Scenario:
    """A seeded clickstream split into consecutive parts (by event time), and its replayed transitions."""

    def __init__(self, seed: int, users: int, cuts: tuple[float, ...]) -> None:
        self.now = int(time.time() * 1000)
        self.events = [as_wire(e) for e in generate(seed=seed, users=users, start_ms=self.now - 4 * DAY_MS, span_ms=3 * DAY_MS)]
        bounds = [0, *(int(len(self.events) * c) for c in cuts), len(self.events)]
        self.parts = [self.events[a:b] for a, b in zip(bounds, bounds[1:])]
        self.expected, _dead, _store = replay_records([encode(e) for e in self.events], CatalogConfig(), until_ms=self.now)
        self.expected = [r for r in self.expected if r["segment"] not in POPULATION_SEGMENTS]
        self.expected_ids = {r["transition_id"] for r in self.expected}

    def produce(self, bootstrap: str, topic: str, part: int) -> None:
        produce(bootstrap, topic, [(e["userId"].encode(), encode(e)) for e in self.parts[part]])

    def users_in(self, part: int) -> set[str]:
        return {e["userId"] for e in self.parts[part]}

    def wait_and_check(self, bootstrap: str, topic: str, timeout: float = 150, supervised: tuple["Supervised", ...] = ()) -> list[dict]:
        seen: set[str] = set()

        def complete() -> bool:
            for each in supervised:
                each.poll()
            seen.update(r["transition_id"] for r in read_all(bootstrap, topic, idle_ms=1000))
            return self.expected_ids <= seen

        try:
            wait_for(complete, timeout, f"all {len(self.expected_ids)} replayed transitions")
        except AssertionError:
            missing = [r for r in self.expected if r["transition_id"] not in seen]
            raise AssertionError(f"{len(missing)} replayed transitions never arrived, e.g. {missing[:3]}") from None
        time.sleep(3)  # anything emitted twice would show up now
        everything = read_all(bootstrap, topic, idle_ms=1500)
        occurrences = Counter(r["transition_id"] for r in everything)
        assert [tid for tid, n in occurrences.items() if n > 1] == [], "a transition id appeared twice in the raw output"
        got = [r for r in everything if r["segment"] not in POPULATION_SEGMENTS]
        assert self.expected_ids - set(occurrences) == set(), "transitions were lost"
        # the worker may also fire timers that came due after the replay's end (`now`); nothing else is extra
        extra = [r for r in got if r["transition_id"] not in self.expected_ids]
        assert [r for r in extra if r["cause"]["type"] != "timer"] == [], "transitions the replay does not have"
        return got


class Supervised:
    """A worker kept running as a supervisor (systemd Restart=on-failure, Kubernetes) would: when it exits
    with a non-zero status it is started again (status 70: it cannot go on, e.g. fenced or a failed
    batch); the restart resumes from its local state and the changelog tail."""

    def __init__(self, names: Names, data_dir: Path) -> None:
        self.names, self.data_dir = names, data_dir
        self.worker = WorkerProcess(names, data_dir).start()
        self.restarts: list[str] = []
        self.stopped = False

    def poll(self) -> "Supervised":
        proc = self.worker.proc
        if proc is not None and proc.poll() is not None and not self.stopped:
            log = self.worker.log()
            assert proc.returncode != 0, f"the worker stopped by itself with status 0:\n{log[-3000:]}"
            errors = re.findall(r"\[ERROR\] (.*)", log)
            self.restarts.append(f"exit {proc.returncode}: {errors[-1] if errors else 'no error logged'}")
            self.worker = WorkerProcess(self.names, self.data_dir).start()
        return self

    def stop(self) -> None:
        if self.stopped:
            return
        self.poll()
        self.stopped = True
        assert self.worker.stop() == 0, self.worker.log()[-3000:]


def committed_count(bootstrap: str, topic: str) -> int:
    return sum(1 for r in read_all(bootstrap, topic, idle_ms=500) if r["segment"] not in POPULATION_SEGMENTS)


# --- a. broker stop and restart -------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_broker() -> Iterator[LocalKafka]:
    """A broker for this module alone (stopping the session broker would disturb every other test)."""
    with local_broker("stream-app-test-kafka-faults-") as broker:
        yield broker


def test_broker_stop_and_restart_mid_stream_loses_nothing_and_repeats_nothing(own_broker, tmp_path):
    bootstrap = own_broker.bootstrap
    names = Names(bootstrap, partitions=3)
    names.create_topics()
    scenario = Scenario(seed=31, users=1500, cuts=())
    scenario.produce(bootstrap, names.input, 0)
    worker = Supervised(names, tmp_path / "w")
    try:
        # stop the broker as soon as the worker is under way (its metrics are cheap to read, unlike the
        # output topic), so most of the input is still unprocessed however fast the machine is
        total = len(scenario.events)
        wait_for(lambda: _consumed(worker.poll().worker) >= total // 8, 120, "the worker to process an eighth of the input")
        consumed_at_stop = _consumed(worker.worker)
        own_broker.stop()  # SIGTERM: the broker's controlled shutdown
        assert consumed_at_stop < total, "the outage must land mid-stream"
        time.sleep(8)  # longer than the worker's session timeout and several commit intervals
        own_broker.start()  # same ports and data folder
        print(f"the broker stopped after {consumed_at_stop:.0f} of {total} events")
        scenario.wait_and_check(bootstrap, names.transitions, supervised=(worker,))
        print(f"restarts after the broker outage: {worker.restarts}")
    finally:
        worker.stop()


# --- b. two workers, one killed and back ----------------------------------------------------------


class Pacer(threading.Thread):
    """Produces events in order at a steady rate, so input keeps arriving while workers come and go."""

    def __init__(self, bootstrap: str, topic: str, events: list[dict], rate: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.events, self.rate = bootstrap, topic, events, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaProducer

        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=10)
            started = time.monotonic()
            for n, event in enumerate(self.events):
                producer.send(self.topic, key=event["userId"].encode(), value=encode(event))
                self.sent = n + 1
                ahead = n / self.rate - (time.monotonic() - started)
                if ahead > 0.02:
                    time.sleep(ahead)
            producer.flush()
            producer.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_two_workers_one_killed_and_back_loses_nothing_and_repeats_nothing(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=4)
    names.create_topics()
    scenario = Scenario(seed=32, users=2000, cuts=())
    a = WorkerProcess(names, tmp_path / "a").start()
    b = Supervised(names, tmp_path / "b")
    pacer = Pacer(kafka_bootstrap, names.input, scenario.events, rate=450)
    restarted = None
    try:
        wait_for(lambda: _ticking(a) and _ticking(b.poll().worker), 90, "both workers to own partitions")
        pacer.start()
        wait_for(lambda: _consumed(a) > 0 and _consumed(b.poll().worker) > 0, 60, "both workers to process input")
        a.kill9()
        time.sleep(2)
        b_before = _consumed(b.worker)
        wait_for(lambda: _consumed(b.poll().worker) > b_before + 500, 60, "the surviving worker to take over the partitions")
        restarted = Supervised(names, tmp_path / "a")
        wait_for(lambda: _consumed(restarted.poll().worker) > 0 and b.poll(), 90, "the restarted worker to get partitions back and process input")
        assert pacer.is_alive(), "input must still be flowing when the worker comes back"
        pacer.join(120)
        assert pacer.error is None and pacer.sent == len(scenario.events)
        scenario.wait_and_check(kafka_bootstrap, names.transitions, supervised=(b, restarted))
        # and once more the other way: the returning worker stops cleanly, the survivor takes everything
        # back (after the session timeout: a static member does not leave the group when it stops),
        # keeping the partitions it had
        restarted.stop()
        wait_for(lambda: b.worker.metric_value("stream_app_assigned_input_partitions") == names.partitions, 60,
                 "the survivor to take all partitions")
        time.sleep(3)
        assert b.poll().restarts == [] and restarted.restarts == [], f"workers stopped: {b.restarts}, {restarted.restarts}"
        scenario.wait_and_check(kafka_bootstrap, names.transitions, timeout=30)
    finally:
        for worker in (restarted, b):
            if worker is not None:
                worker.stop()
        if a.proc is not None and a.proc.poll() is None:
            a.kill9()


def _ticking(worker: WorkerProcess) -> bool:
    try:
        return worker.metric_value("stream_app_clock_ticks_total") > 0
    except OSError:
        return False


def _consumed(worker: WorkerProcess) -> float:
    try:
        return worker.metric_value("stream_app_events_consumed_total")
    except OSError:
        return 0.0


# --- c. local state deleted: restored from the changelog ------------------------------------------


def test_local_state_deleted_is_restored_from_the_changelog_with_identical_results(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    scenario = Scenario(seed=33, users=1500, cuts=())
    scenario.produce(kafka_bootstrap, names.input, 0)
    data_dir = tmp_path / "w"
    worker = WorkerProcess(names, data_dir).start()
    wait_for(lambda: committed_count(kafka_bootstrap, names.transitions) >= len(scenario.expected) // 4, 120, "the first transitions")
    assert worker.stop() == 0, worker.log()[-3000:]  # a clean stop: the local state would be kept...
    assert (data_dir / "state").exists()
    done = committed_count(kafka_bootstrap, names.transitions)
    assert done < len(scenario.expected), "the stop must land mid-stream"
    shutil.rmtree(data_dir)  # ...but it is lost (a new disk, a new host)

    restarted = WorkerProcess(names, data_dir).start()
    try:
        scenario.wait_and_check(kafka_bootstrap, names.transitions)
        restarted.assert_alive()
        log = restarted.log()
        restored = sum(int(n) for n in re.findall(r"schedule rebuilt for (\d+) profiles", log)[:3])
        assert restored > 0, "the restarted worker began with the profiles restored from the changelog"
    finally:
        assert restarted.stop() == 0, restarted.log()[-3000:]
