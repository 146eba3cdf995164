"""What reading a changelog costs a restore, apart from RocksDB: N records like a profile's changelog
record (a key, a 180-byte value, a 40-byte `schedule-entry` header) in one partition, read back to
the partition's end the way `stream_app/driver/restore.py` reads them (the worker's restore reader,
`consume` of 20,000 with a 50 ms timeout, the end-of-partition event), in three variants, each timed
in wall and in process CPU seconds (the process's every thread: librdkafka's too):

- `without headers()`: key, value and offset of every record;
- `with headers()`: the restore's own `changelog_record` (the entry looked up in `Message.headers()`);
- `with headers(), fetch.queue.backoff.ms 10`: librdkafka's default (1,000 ms) stops fetching a
  partition for a second once its local queue holds `queued.min.messages` (100,000).

    .venv/bin/python benchmarks/restore_read.py [--records 200000] [--rounds 3]

A private local broker, unless KAFKA_BOOTSTRAP_SERVERS names one; there the topic
(`restore-read-<N>`) is written once and kept for later runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from reliability_harness import broker_unless_given
from stream_app.driver.clients import SlotConfig
from stream_app.driver.restore import CHUNK, changelog_record
from stream_app.engine.schedule_entry import HEADER

VARIANTS: dict[str, tuple[bool, dict[str, Any]]] = {
    "without headers()": (False, {}),
    "with headers()": (True, {}),
    "with headers(), fetch.queue.backoff.ms 10": (True, {"fetch.queue.backoff.ms": 10}),
}


def write_once(bootstrap: str, topic: str, records: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=30).topics:
        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "restore-read-unused"})
        low, high = reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        reader.close()
        if high - low != records:  # an earlier run stopped while writing it
            raise SystemExit(f"{topic} holds {high - low} records, not {records}: delete the topic (or use another "
                             "broker) and run again")
        return
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    value, entry = os.urandom(180), os.urandom(40)
    for n in range(records):
        while True:
            try:
                producer.produce(topic, value, f"user-{n:08d}".encode(), headers=[(HEADER, entry)])
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60):
        raise SystemExit(f"{topic}: records still undelivered after 60 s; delete the topic and run again")


def read_to_end(bootstrap: str, topic: str, headers: bool, extra: dict[str, Any]) -> tuple[int, float, float]:
    slot = SlotConfig(bootstrap_servers=bootstrap, group_id="restore-read", instance_id="bench")
    reader = Consumer({**slot.reader_config("restore", fetch_wait_ms=10), **extra})  # the worker's restore reader
    reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    read, ended = 0, False
    wall, cpu = time.perf_counter(), time.process_time()
    while not ended:
        chunk = []
        for message in reader.consume(CHUNK, timeout=0.05):
            error = message.error()
            if error is not None:
                ended = ended or error.code() == KafkaError._PARTITION_EOF
                continue
            chunk.append(changelog_record(message) if headers else (message.key(), message.value(), None))
            message.offset()
        read += len(chunk)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    reader.close()
    return read, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bootstrap, broker = broker_unless_given(Path(tempfile.mkdtemp(prefix="restore-read-")))
    topic = f"restore-read-{args.records}"
    try:
        write_once(bootstrap, topic, args.records)
        for round_ in range(1, args.rounds + 1):
            for name, (headers, extra) in VARIANTS.items():
                read, wall, cpu = read_to_end(bootstrap, topic, headers, extra)
                print(f"round {round_}  {name:<44} {read} records: {wall:.2f} s wall ({read / wall:,.0f}/s), "
                      f"{cpu:.2f} s CPU ({cpu / read * 1e6:.1f} us per record)", flush=True)
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
