"""Standby copies (`STREAM_APP_STANDBY=on`, driver/standby.py) on the real broker.

Two workers with standbys share four partitions; each keeps a copy of the partitions the other owns. One
is killed with kill -9 and never comes back: the survivor takes its partitions and restores only the
tail of their changelog that its copies had not applied yet, not the whole changelog. Then the whole
output is compared by content with the replay (tests/output_check.py), as in the other fault tests.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from .fault_harness import Pacer, Scenario, Supervised, consumed, ticking
from .helpers import Names, WorkerProcess, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _changelog_records(names: Names, partitions: list[int]) -> int:
    """Offsets in the changelog partitions: an upper bound on what a restore from the start reads."""
    topic = names.settings().changelog_topic
    reader = Consumer({"bootstrap.servers": names.bootstrap, "group.id": f"{names.app_id}-standby-probe"})
    try:
        return sum(high - low for low, high in (reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                                                for p in partitions))
    finally:
        reader.close()


def _restored_after(log: str, mark: int) -> list[tuple[list[int], int]]:
    """(partitions, records read) of each restore logged after position `mark` of the log."""
    found = re.findall(r"restored partitions \[([0-9, ]*)\] from the changelog: (\d+) records", log[mark:])
    current = re.findall(r"partitions \[([0-9, ]*)\]: nothing to restore from the changelog", log[mark:])
    return [([int(p) for p in parts.split(",")], int(records)) for parts, records in [*found, *((parts, "0") for parts in current)]]


def test_a_survivor_with_standby_copies_restores_only_the_tail(kafka_bootstrap, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAM_APP_STANDBY", "on")
    names = Names(kafka_bootstrap, partitions=4)
    names.create_topics()
    scenario = Scenario(seed=41, users=2000)
    a = WorkerProcess(names, tmp_path / "a").start()
    b = Supervised(names, tmp_path / "b")
    pacer = Pacer(kafka_bootstrap, names.input, scenario.messages(), rate=450)
    try:
        wait_for(lambda: ticking(a) and ticking(b.poll().worker), 90, "both workers to own partitions")
        pacer.start()

        def copies_current() -> bool:
            b.poll()
            owned = b.worker.metric_value("stream_app_assigned_input_partitions")
            copies = b.worker.metric_value("stream_app_standby_partitions")
            return (consumed(a) > 1000 and 0 < owned < names.partitions and copies == names.partitions - owned
                    and b.worker.metric_value("stream_app_standby_records_total") > 300)

        wait_for(copies_current, 90, "the survivor-to-be to keep copies of the other worker's partitions")
        b_owned = b.worker.metric_value("stream_app_assigned_input_partitions")
        assert a.metric_value("stream_app_standby_partitions") == names.partitions - b_owned  # and the other way
        log_mark = len(b.worker.log())
        a.kill9()
        assert pacer.is_alive(), "the kill must land mid-stream"
        wait_for(lambda: b.poll().worker.metric_value("stream_app_assigned_input_partitions") == names.partitions, 60,
                 "the survivor to take every partition")
        taken = [entry for entry in _restored_after(b.worker.log(), log_mark) if entry[0]]
        assert taken, b.worker.log()[log_mark:][-3000:]
        moved = sorted(p for parts, _ in taken for p in parts)
        assert len(moved) == names.partitions - b_owned
        assert b.worker.metric_value("stream_app_standby_partitions") == 0  # every copy is owned now
        read = sum(records for _, records in taken)
        whole = _changelog_records(names, moved)
        print(f"the survivor restored {read} changelog records of partitions {moved}; their changelog holds {whole}")
        assert whole > 200 and read <= whole // 10, (read, whole)

        pacer.join(120)
        assert pacer.error is None and pacer.sent == len(scenario.lines)
        scenario.finish_and_compare(names, b)
        assert b.restarts == [], b.restarts
    finally:
        b.stop()
        if a.proc is not None and a.proc.poll() is None:
            a.kill9()


# --- the copies themselves (driver/standby.py), against the real broker ------------------------------


def _copies(bootstrap: str, tmp_path, topic: str):  # type: ignore[no-untyped-def]
    from stream_app.driver.clients import SlotConfig
    from stream_app.driver.standby import StandbyCopies
    from stream_app.driver.store import MIB, PartitionStore, StoreBudget

    budget = StoreBudget(8 * MIB)
    slot = SlotConfig(bootstrap_servers=bootstrap, group_id=f"standby-{uuid.uuid4().hex[:8]}", instance_id="t")
    return StandbyCopies(slot.reader("standby", offset_reset="error"), topic,
                         lambda p: PartitionStore(tmp_path / f"copy-{p}", budget, topic, p))


def _poll_until(copies, predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while not predicate():
        copies.poll()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_copies_follow_the_changelog_as_a_restore_writes_it_and_are_handed_over_open(kafka_bootstrap, tmp_path):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # kept: a collected client drops its futures
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    expected: dict[int, dict[str, bytes]] = {0: {}, 1: {}}

    def write(partition: int, key: str, value: bytes | None) -> None:
        producer.produce(topic, value, key.encode(), partition=partition)
        if value is None:
            expected[partition].pop(key, None)
        else:
            expected[partition][key] = value

    for n in range(300):
        write(n % 2, f"u{n % 40}", f"v{n}".encode())
    write(0, "u2", None)  # a tombstone: the copy deletes the profile too (an erasure)
    producer.flush(10)
    copies = _copies(kafka_bootstrap, tmp_path, topic)
    try:
        copies.follow([0, 1])
        copies.follow([1])  # already followed: nothing changes
        assert sorted(copies.stores) == [0, 1]

        def holds(partition: int) -> bool:
            return dict(copies.stores[partition].items()) == expected[partition] if partition in copies.stores else False

        _poll_until(copies, lambda: holds(0) and holds(1), "both copies to hold the changelog")
        assert copies.stores[0].next_changelog_offset() == 151 and copies.stores[1].next_changelog_offset() == 150
        assert "u2" not in dict(copies.stores[0].items())

        taken = copies.take(0)
        assert taken is not None and sorted(copies.stores) == [1] and copies.take(0) is None
        write(0, "late", b"after the hand-over")
        write(1, "u1", b"newer")
        producer.flush(10)
        _poll_until(copies, lambda: holds(1), "the copy still followed to apply the new record")
        assert taken.get("late") is None and taken.next_changelog_offset() == 151  # not written after the hand-over
        taken.close()
    finally:
        copies.close()


def test_a_copy_whose_position_does_not_fit_the_changelog_is_read_again_from_the_start(kafka_bootstrap, tmp_path):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from stream_app.driver.store import MIB, PartitionStore, StoreBudget

    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    stale = PartitionStore(tmp_path / "copy-0", StoreBudget(8 * MIB), topic, 0)
    stale.write_restored([(b"gone", b"from a topic deleted since", None)], 5_000)  # ahead of the new topic's end
    stale.close()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"v", b"kept", partition=0)
    producer.flush(10)
    copies = _copies(kafka_bootstrap, tmp_path, topic)
    try:
        copies.follow([0])
        _poll_until(copies, lambda: dict(copies.stores[0].items()) == {"kept": b"v"}, "the copy read again from the start")
        assert copies.stores[0].next_changelog_offset() == 1
    finally:
        copies.close()


def test_a_copy_whose_position_falls_out_of_the_changelog_while_followed_is_read_again(kafka_bootstrap, tmp_path):
    """The changelog's start moves past a copy's position while it is followed (records deleted, as a
    recreated topic would do): the reader reports an offset reset instead of skipping silently, and the
    copy is wiped and read again from the new start."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(20):
        producer.produce(topic, f"v{n}".encode(), f"old{n}".encode(), partition=0)
    producer.flush(10)
    copies = _copies(kafka_bootstrap, tmp_path, topic)
    try:
        copies.follow([0])
        _poll_until(copies, lambda: copies.positions.get(0) == 20, "the copy to reach the end")
        tp = TopicPartition(topic, 0)
        copies.reader.pause([tp])  # nothing more is fetched while the log's start moves past the copy
        for n in range(10):
            producer.produce(topic, f"w{n}".encode(), f"new{n}".encode(), partition=0)
        producer.flush(10)
        admin.delete_records([TopicPartition(topic, 0, 25)])[TopicPartition(topic, 0, 25)].result(30)
        copies.reader.resume([tp])
        expected = {f"new{n}": f"w{n}".encode() for n in range(5, 10)}
        _poll_until(copies, lambda: dict(copies.stores[0].items()) == expected, "the copy wiped and read from the new start")
        assert copies.positions[0] == 30 and copies.stores[0].next_changelog_offset() == 30
        assert copies.lag() == 0
    finally:
        copies.close()
