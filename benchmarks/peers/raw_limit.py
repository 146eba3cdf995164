"""Peer (a), the limit: a raw aiokafka ``getmany`` + msgpack decode loop over the input topic, no
processing. Prints one JSON line: {"events": N, "seconds": S, "rate": N / S} (from the first batch
received to the last record).

    python benchmarks/peers/raw_limit.py BOOTSTRAP TOPIC EXPECTED_EVENTS [PARTITIONS]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import msgpack
from aiokafka import AIOKafkaConsumer, TopicPartition


async def main(bootstrap: str, topic: str, expected: int, partition_count: int) -> dict:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count, first, unpack = 0, None, msgpack.unpackb
        while count < expected:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                if first is None:
                    first = time.perf_counter()
                for record in records:
                    unpack(record.value)
                count += len(records)
        seconds = time.perf_counter() - (first or time.perf_counter())
        return {"events": count, "seconds": seconds, "rate": count / seconds if seconds else 0.0}
    finally:
        await consumer.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 6))))
