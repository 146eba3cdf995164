"""The latency floor of any exactly-once pipeline on this broker: a bare consume-produce-commit loop.

No segmentation, no state, no changelog: a process reads the input topic (read_committed), produces each
record unchanged to an output topic inside a transaction, adds the consumed offsets to it and commits,
with our driver's commit rule (commit as soon as nothing more is buffered, else 100 ms after the
transaction's first record). A producer sends records at --rate per second stamped with the wall time;
a read_committed reader of the output (fetch.wait.max.ms 5) takes, for each, the wall time it became
readable minus its stamp. Whatever the worker does on top can only add to these figures
(docs/performance.md, issue #13's latency target).

    .venv/bin/python benchmarks/transaction_floor.py --rate 200 --seconds 20 [--processes 1] [--producer KEY=VALUE]
"""

from __future__ import annotations

import argparse
import multiprocessing
import struct
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from reliability_harness import arrived, broker_unless_given

PARTITIONS = 6
COMMIT_INTERVAL_S = 0.1


def bare_loop(bootstrap: str, source: str, sink: str, group: str, slot: str, stop: "multiprocessing.synchronize.Event",
              producer_options: dict[str, str], consumer_options: dict[str, str]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                         "partition.assignment.strategy": "cooperative-sticky", **consumer_options})
    # retry.backoff.ms 5: a transaction begun right after a commit is told CONCURRENT_TRANSACTIONS while the
    # coordinator writes the commit's markers, and librdkafka's default 100 ms retry set this loop's pace
    # (p99 215 ms at 2,700/s, 73 ms with 5; docs/performance.md, "Latency")
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{group}-{slot}", "linger.ms": 0,
                         "retry.backoff.ms": 5, **producer_options})
    producer.init_transactions(30)
    consumer.subscribe([source])
    open_since = None
    while not stop.is_set():
        wait = 0.5 if open_since is None else max(0.0, COMMIT_INTERVAL_S - (time.monotonic() - open_since))
        first = consumer.poll(wait)
        batch = [first, *consumer.consume(499, 0)] if first is not None else []
        records = [m for m in batch if m.error() is None]
        if records:
            if open_since is None:
                producer.begin_transaction()
                open_since = time.monotonic()
            for message in records:
                producer.produce(sink, message.value(), message.key(), partition=message.partition())
        if open_since is not None and (len(batch) < 500 or time.monotonic() - open_since >= COMMIT_INTERVAL_S):
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 10)
            producer.commit_transaction(10)
            open_since = None
    consumer.close()


def _options(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=60,
                        help="seconds of traffic first, not measured: a fresh broker's JVM needs about a minute")
    parser.add_argument("--processes", type=int, default=1, help="bare loops in the group")
    parser.add_argument("--producer", action="append", default=[], metavar="KEY=VALUE", help="a librdkafka property of the loop's producer")
    parser.add_argument("--consumer", action="append", default=[], metavar="KEY=VALUE", help="a librdkafka property of the loop's consumer")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stream-app-floor-"))
    bootstrap, broker = broker_unless_given(work)
    tag = uuid.uuid4().hex[:8]
    source, sink, group = f"floor-in-{tag}", f"floor-out-{tag}", f"floor-{tag}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (source, sink)]).values():
        future.result()
    stop = multiprocessing.Event()
    loops = [multiprocessing.Process(target=bare_loop, args=(bootstrap, source, sink, group, str(i), stop,
                                                               _options(args.producer), _options(args.consumer))) for i in range(args.processes)]
    for loop in loops:
        loop.start()
    latencies: list[float] = []
    reading = threading.Event()

    def follow() -> None:
        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "floor-unused", "enable.auto.commit": False,
                           "isolation.level": "read_committed", "fetch.wait.max.ms": 5})
        reader.assign([TopicPartition(sink, p, 0) for p in range(PARTITIONS)])
        while not reading.is_set():
            for message in arrived(reader, 1000, 0.05):
                if message.error() is None:
                    sent_ms, measured = struct.unpack(">d?", message.value())
                    if measured:
                        latencies.append(time.time() * 1000 - sent_ms)
        reader.close()

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"})
        started, sent, measured = time.time(), 0, 0
        while time.time() - started < args.warmup + args.seconds:
            counted = time.time() - started >= args.warmup
            producer.produce(source, struct.pack(">d?", time.time() * 1000, counted), str(sent).encode())
            producer.poll(0)
            sent += 1
            measured += counted
            ahead = sent / args.rate - (time.time() - started)
            if ahead > 0.002:
                time.sleep(ahead)
        producer.flush()
        deadline = time.time() + 60
        while len(latencies) < measured and time.time() < deadline:
            time.sleep(0.1)
    except KafkaException as exc:
        print(f"Kafka error: {exc}", file=sys.stderr)
        return 1
    finally:
        reading.set()
        follower.join()
        stop.set()
        for loop in loops:
            loop.join(30)
        if broker is not None:
            broker.stop()
    latencies.sort()

    def at(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    print(f"bare exactly-once loop, {args.processes} process(es), rate {args.rate}/s for {args.seconds} s, "
          f"options {' '.join(args.producer + args.consumer) or 'none'}: "
          f"{len(latencies)} of {measured} records; p50 {at(0.5):.0f} ms, p99 {at(0.99):.0f} ms, max {latencies[-1]:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
