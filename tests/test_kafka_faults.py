"""Faults on the real broker, each compared by content with the pure replay of the same seeded input
(tests/output_check.py): once every input offset is committed, the workers are stopped and every
transition decided by T, the memberships, the dead letters and the committed offsets must equal the
replay's. A lost, repeated or stale transition fails, and so does a wrong `from`, `to`, `at` or trait.

- the broker is stopped and started again in mid-stream (its own broker: the session broker is shared);
- two workers share the partitions; one is killed with kill -9 and later comes back (rebalance both ways);
- the worker's local RocksDB folder is deleted: state comes back from the changelog, results identical.
"""

from __future__ import annotations

import re
import shutil
import urllib.request
import time
from typing import Iterator

import pytest

from stream_app.broker.local_kafka import LocalKafka

from .fault_harness import Pacer, Scenario, Supervised, consumed, ticking
from .helpers import Names, WorkerProcess, local_broker, wait_for
from .output_check import everything_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

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
    scenario = Scenario(seed=31, users=1500)
    scenario.produce(bootstrap, names.input)
    worker = Supervised(names, tmp_path / "w")
    try:
        # stop the broker as soon as the worker is under way (its metrics are cheap to read, unlike the
        # output topic), so most of the input is still unprocessed however fast the machine is
        total = len(scenario.lines)
        wait_for(lambda: consumed(worker.poll().worker) >= total // 8, 120, "the worker to process an eighth of the input")
        consumed_at_stop = consumed(worker.worker)
        own_broker.stop()  # SIGTERM: the broker's controlled shutdown
        assert consumed_at_stop < total, "the outage must land mid-stream"
        time.sleep(8)  # the outage itself: longer than the worker's session timeout and several commit intervals
        own_broker.start()  # same ports and data folder
        print(f"the broker stopped after {consumed_at_stop:.0f} of {total} events")
        scenario.finish_and_compare(names, worker)
        print(f"restarts after the broker outage: {worker.restarts}")
        # At most two, each for a known reason (docs/reliability.md): librdkafka may report the static
        # member fenced by its own rejoin after the coordinator came back (librdkafka #3437), and a call
        # into librdkafka that is 15 s past its own timeout ends the process (watchdog, driver/call_deadline.py):
        # send_offsets_to_transaction ignores its timeout while the group coordinator is away
        # (librdkafka #5456 and #5511, open).
        assert len(worker.restarts) <= 2, worker.restarts
    finally:
        worker.stop()


OUTAGE_S = 120


def test_all_brokers_unreachable_for_two_minutes_the_worker_waits_and_resumes(own_broker, tmp_path):
    """The whole cluster away for two minutes (issue #15): the worker waits in its process, without a
    crash loop, stays live for its probe (it is waiting on purpose), and resumes when the broker is back;
    then the output equals the replay's by content."""
    bootstrap = own_broker.bootstrap
    names = Names(bootstrap, partitions=3)
    names.create_topics()
    scenario = Scenario(seed=34, users=1000)
    scenario.produce(bootstrap, names.input)
    worker = Supervised(names, tmp_path / "w")
    try:
        total = len(scenario.lines)
        wait_for(lambda: consumed(worker.poll().worker) >= total // 8, 120, "the worker to process an eighth of the input")
        own_broker.stop()
        pid = worker.worker.proc.pid
        outage_ends = time.monotonic() + OUTAGE_S
        while time.monotonic() < outage_ends:
            time.sleep(5)
            assert worker.poll().restarts == [], f"the worker exited during the outage: {worker.restarts}"
        assert worker.worker.proc.pid == pid
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.worker.web_port}/healthz", timeout=5) as response:
            assert response.status == 200  # waiting for Kafka is not being stuck: no liveness restart
        own_broker.start()
        scenario.finish_and_compare(names, worker)
        print(f"restarts after the outage: {worker.restarts}")
        # at most one: librdkafka may report the static member fenced by its own rejoin (see above)
        assert len(worker.restarts) <= 1, worker.restarts
    finally:
        worker.stop()


# --- b. two workers, one killed and back ----------------------------------------------------------


def test_two_workers_one_killed_and_back_loses_nothing_and_repeats_nothing(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=4)
    names.create_topics()
    scenario = Scenario(seed=32, users=2000)
    a = WorkerProcess(names, tmp_path / "a").start()
    b = Supervised(names, tmp_path / "b")
    pacer = Pacer(kafka_bootstrap, names.input, scenario.messages(), rate=450)
    restarted = None
    try:
        wait_for(lambda: ticking(a) and ticking(b.poll().worker), 90, "both workers to own partitions")
        pacer.start()
        wait_for(lambda: consumed(a) > 0 and consumed(b.poll().worker) > 0, 60, "both workers to process input")
        a.kill9()
        b_before = consumed(b.worker)
        wait_for(lambda: consumed(b.poll().worker) > b_before + 500, 60, "the surviving worker to take over the partitions")
        restarted = Supervised(names, tmp_path / "a")
        wait_for(lambda: consumed(restarted.poll().worker) > 0 and b.poll(), 90, "the restarted worker to get partitions back and process input")
        assert pacer.is_alive(), "input must still be flowing when the worker comes back"
        pacer.join(120)
        assert pacer.error is None and pacer.sent == len(scenario.lines)
        wait_for(lambda: everything_committed(names, b, restarted), 180, "every input offset committed")
        # and once more the other way: the returning worker stops cleanly, the survivor takes everything
        # back (after the session timeout: a static member does not leave the group when it stops)
        restarted.stop()
        wait_for(lambda: b.worker.metric_value("stream_app_assigned_input_partitions") == names.partitions, 60,
                 "the survivor to take all partitions")
        assert b.poll().restarts == [] and restarted.restarts == [], f"workers stopped: {b.restarts}, {restarted.restarts}"
        scenario.finish_and_compare(names, b)
        assert b.restarts == [], b.restarts
    finally:
        for worker in (restarted, b):
            if worker is not None:
                worker.stop()
        if a.proc is not None and a.proc.poll() is None:
            a.kill9()


# --- c. local state deleted: restored from the changelog ------------------------------------------


def test_local_state_deleted_is_restored_from_the_changelog_with_identical_results(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    scenario = Scenario(seed=33, users=1500)
    scenario.produce(kafka_bootstrap, names.input)
    data_dir = tmp_path / "w"
    worker = WorkerProcess(names, data_dir).start()
    total = len(scenario.lines)
    wait_for(lambda: consumed(worker) >= total // 4, 120, "a quarter of the input processed")
    assert worker.stop() == 0, worker.log()[-3000:]  # a clean stop: the local state would be kept...
    assert (data_dir / "state").exists()
    assert _committed_input(names) < total, "the stop must land mid-stream"
    shutil.rmtree(data_dir)  # ...but it is lost (a new disk, a new host)

    restarted = Supervised(names, data_dir)
    try:
        wait_for(lambda: "schedule rebuilt for" in restarted.poll().worker.log(), 90, "the restarted worker to restore its partitions")
        log = restarted.worker.log()
        restored = sum(int(n) for n in re.findall(r"schedule rebuilt for (\d+) profiles", log)[:3])
        assert restored > 0, "the restarted worker began with the profiles restored from the changelog"
        # the changelog carried every profile's schedule entry in its headers: no profile was decoded for it
        computed = [int(n) for n in re.findall(r"\((\d+) of them without a current schedule entry\)", log)]
        assert computed and set(computed) == {0}, computed
        scenario.finish_and_compare(names, restarted)
        assert restarted.restarts == []
    finally:
        restarted.stop()


def _committed_input(names: Names) -> int:
    """How many input records the group has committed, over all partitions."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": names.bootstrap, "group.id": names.app_id, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(names.input, p) for p in range(names.partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()
