"""A restore right after a broker's loss asks for a changelog partition its reader's metadata does not know
yet (seen on the three-broker cluster: `_UNKNOWN_PARTITION` from `get_watermark_offsets` while leaders
moved, and the worker exited). `restore._watermarks` asks again for a bounded time, then lets the error
stand. Against the real broker: a partition that appears while it waits, and one that never does."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from stream_app.driver.restore import _watermarks

pytestmark = pytest.mark.kafka


def _topic(bootstrap: str) -> tuple[AdminClient, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"changelog-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    return admin, name


def _reader(bootstrap: str) -> Consumer:
    """A reader whose own metadata refresh (every 5 minutes by default) would not see a change in time:
    `_watermarks` asks for the topic's metadata itself before asking again."""
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"restore-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False})


def test_a_partition_that_appears_while_the_restore_waits_is_read(kafka_bootstrap):
    admin, name = _topic(kafka_bootstrap)
    reader = _reader(kafka_bootstrap)
    try:
        reader.get_watermark_offsets(TopicPartition(name, 0), timeout=10)  # the topic is in its metadata
        with pytest.raises(KafkaException) as unknown:
            reader.get_watermark_offsets(TopicPartition(name, 1), timeout=10)
        assert unknown.value.args[0].code() == KafkaError._UNKNOWN_PARTITION

        grow = threading.Timer(2.0, lambda: admin.create_partitions([NewPartitions(name, 2)])[name].result(30))
        grow.start()
        started = time.monotonic()
        assert _watermarks(reader, TopicPartition(name, 1), timeout_s=10, deadline=time.monotonic() + 60, pause_s=0.2) == (0, 0)
        grow.join()
        assert time.monotonic() - started >= 2.0, "it waited for the partition"
    finally:
        reader.close()


def test_a_partition_that_never_appears_fails_after_the_patience(kafka_bootstrap):
    _, name = _topic(kafka_bootstrap)
    reader = _reader(kafka_bootstrap)
    try:
        reader.get_watermark_offsets(TopicPartition(name, 0), timeout=10)
        started = time.monotonic()
        with pytest.raises(KafkaException) as unknown:
            _watermarks(reader, TopicPartition(name, 5), timeout_s=10, deadline=time.monotonic() + 2, pause_s=0.2)
        assert unknown.value.args[0].code() == KafkaError._UNKNOWN_PARTITION
        assert 2.0 <= time.monotonic() - started < 4  # each attempt ends by the deadline
    finally:
        reader.close()
