"""Every supported local Kafka version really runs: LocalKafka fetches it (Maven, cached per version),
formats KRaft storage, starts it on free loopback ports, and it serves a transactional
consume-transform-produce cycle (confluent-kafka: init/begin, produce, send_offsets_to_transaction with the
consumer's group metadata, commit; an aborted transaction too) that a read_committed consumer reads back.
On 4.x the same cycle also runs with a KIP-848 consumer (group.protocol=consumer). Then it stops.

If a broker cannot start, the test fails: Kafka tests are never skipped.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from stream_app.broker.local_kafka import (TESTED_KAFKA_VERSIONS, BrokerError, LocalKafka, default_kafka_version, free_port,
                                           libs_dir, port_open)

pytestmark = [pytest.mark.kafka]


def _create_topics(bootstrap: str, *names: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1) for name in names]).values():
        future.result(30)


def _poll(consumer, count: int, timeout: float) -> list:
    records, deadline = [], time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        assert message.error() is None, message.error()
        records.append(message)
    return records


def _transactional_cycle(bootstrap: str, protocol: str) -> None:
    """Read 10 records with a group consumer, write them on in one transaction with the consumer's offsets,
    abort a second one; a read_committed reader sees exactly the first, and the group's offsets are the
    transaction's."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer
    from confluent_kafka.admin import AdminClient

    suffix = f"{protocol}-{uuid.uuid4().hex[:8]}"
    source, sink, group = f"in-{suffix}", f"out-{suffix}", f"group-{suffix}"
    _create_topics(bootstrap, source, sink)

    plain = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(10):
        plain.produce(source, key=str(i).encode(), value=f"event-{i}".encode())
    assert plain.flush(30) == 0

    settings = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                "enable.auto.commit": False, "isolation.level": "read_committed", "group.protocol": protocol}
    consumer = Consumer(settings)
    consumer.subscribe([source])
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{suffix}"})
    try:
        producer.init_transactions(30)
        records = _poll(consumer, 10, timeout=60)
        assert len(records) == 10, f"{protocol} consumer read {len(records)} of 10 records"

        producer.begin_transaction()
        for record in records:
            producer.produce(sink, key=record.key(), value=record.value() + b"-out")
        positions = consumer.position(consumer.assignment())
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)

        producer.begin_transaction()
        producer.produce(sink, value=b"aborted")
        producer.flush(30)
        producer.abort_transaction(30)
    finally:
        consumer.close()

    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{suffix}", "auto.offset.reset": "earliest",
                       "isolation.level": "read_committed"})
    reader.subscribe([sink])
    try:
        read = _poll(reader, 10, timeout=60)
        read += _poll(reader, 1, timeout=1.5)  # the aborted record must not follow
    finally:
        reader.close()
    assert sorted(record.value() for record in read) == sorted(f"event-{i}-out".encode() for i in range(10))

    # the offsets went in with the transaction; its markers are written just after the commit returns
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 15
    while True:
        listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], require_stable=True)[group].result(30)
        committed = {tp.partition: tp.offset for tp in listed.topic_partitions if tp.error is None}
        if sum(committed.values()) == 10 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert committed == {tp.partition: tp.offset for tp in positions if tp.offset >= 0}


def _start_or_fail(broker: LocalKafka, what: str) -> None:
    """Start the broker; the test fails (never skips) when it cannot."""
    try:
        broker.start()
    except BrokerError as exc:
        pytest.fail(f"{what} could not be started: {exc}", pytrace=False)


@pytest.mark.parametrize("version", TESTED_KAFKA_VERSIONS)
def test_broker_version_serves_transactions(version: str) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix=f"stream-app-test-kafka-{version}-"))
    broker = LocalKafka(data_dir, port=free_port(), controller_port=free_port(), version=version)
    try:
        _start_or_fail(broker, f"the local Kafka {version} broker")
        assert (libs_dir(version) / f"kafka_2.13-{version}.jar").exists()
        assert (data_dir / "kafka.version").read_text().strip() == version

        _transactional_cycle(broker.bootstrap, "classic")
        if broker.major >= 4:
            _transactional_cycle(broker.bootstrap, "consumer")  # KIP-848: on by default from 4.0

        # the logging backend of this version (3.x reload4j, 4.x log4j2) writes the broker's log file,
        # and nothing complains on the console (no missing slf4j binding, no log4j2 configuration error)
        log = broker.log_file.read_text()
        assert "Transition from STARTING to STARTED" in log, log[-2000:]
        console = (data_dir / "broker.stdout").read_text()
        assert "SLF4J" not in console and "ERROR" not in console, console[-2000:]
    finally:
        broker.stop()
        try:
            assert broker.running_pid() is None
            assert not port_open("127.0.0.1", broker.port)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


def test_version_comes_from_the_environment(monkeypatch, tmp_path) -> None:
    from stream_app.broker import local_kafka

    monkeypatch.delenv(local_kafka.VERSION_ENV, raising=False)
    assert local_kafka.kafka_version() == default_kafka_version() in TESTED_KAFKA_VERSIONS
    assert LocalKafka(tmp_path).version == default_kafka_version()
    monkeypatch.setenv(local_kafka.VERSION_ENV, "4.4.0")
    assert local_kafka.kafka_version() == "4.4.0"
    assert LocalKafka(tmp_path).version == "4.4.0"
    assert local_kafka.libs_dir() == local_kafka.cache_root() / "kafka-4.4.0" / "libs"
    monkeypatch.setenv(local_kafka.VERSION_ENV, "latest")
    with pytest.raises(BrokerError, match="MAJOR.MINOR.PATCH"):
        local_kafka.kafka_version()


def test_data_of_3x_upgrades_in_place_to_4x_and_is_not_downgraded() -> None:
    """`stream-app kafka up` and the demo keep their data folder: when the version moves from 3.x to 4.x
    the 4.x broker runs on it, with the features a fresh 4.x folder has (KIP-848 groups need group.version),
    and 3.x is then refused on it with a message rather than failing inside Kafka."""
    from confluent_kafka import Consumer, Producer
    from kafka import KafkaAdminClient

    old, new = TESTED_KAFKA_VERSIONS[0], TESTED_KAFKA_VERSIONS[-1]
    assert int(old.split(".")[0]) < 4 <= int(new.split(".")[0])
    data_dir = Path(tempfile.mkdtemp(prefix="stream-app-test-kafka-upgrade-"))
    topic = f"kept-{uuid.uuid4().hex[:8]}"
    broker = LocalKafka(data_dir, port=free_port(), controller_port=free_port(), version=old)
    try:
        _start_or_fail(broker, f"the local Kafka {old} broker")
        _create_topics(broker.bootstrap, topic)
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        producer.produce(topic, value=b"written by " + old.encode())
        assert producer.flush(30) == 0
        broker.stop()

        broker = LocalKafka(data_dir, port=free_port(), controller_port=free_port(), version=new)
        _start_or_fail(broker, f"the local Kafka {new} broker, on data of {old},")
        assert (data_dir / "kafka.version").read_text().strip() == new
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            features = admin.describe_features()
        finally:
            admin.close()
        assert features["group.version"].get("finalized", (0, 0))[1] >= 1, features

        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{topic}", "group.protocol": "consumer",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        try:
            assert [m.value() for m in _poll(consumer, 1, timeout=30)] == [b"written by " + old.encode()]
        finally:
            consumer.close()
        broker.stop()

        with pytest.raises(BrokerError, match=f"holds data of Kafka {new}"):
            LocalKafka(data_dir, port=free_port(), controller_port=free_port(), version=old).start()
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
