"""Latency of event-caused transitions under a steady stream of brand-new users' first events.

The worker runs on a private local broker (or KAFKA_BOOTSTRAP_SERVERS); a producer sends `Signed In`
events of new users at --rate per second for --seconds, each stamped with the wall time; a read_committed
consumer of the transitions topic records, for each `lifecycle: null -> new_lead` transition, the wall
time it became readable minus the event's timestamp. Prints p50, p99 and max, and the worker's mean commit
time (docs/performance.md, "On the worker's own driver").

    .venv/bin/python benchmarks/live_latency.py --rate 1000 --seconds 20 --allowance-ms 0
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from reliability_harness import Bench, Worker, arrived

from stream_app.timeutil import format_timestamp, parse_timestamp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--allowance-ms", type=int, default=5000)
    parser.add_argument("--warmup", type=float, default=60, help="seconds of traffic sent first and not measured: a fresh "
                        "broker's JVM needs about a minute (with 5 s, p50 79 ms and p99 193 ms at 50/s; with 60 s, 17 and 42)")
    parser.add_argument("--verbose", action="store_true", help="also print the commit-duration histogram")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a setting for the worker")
    parser.add_argument("--reader-fetch-wait-ms", type=int, default=5, help="the transitions reader's fetch.wait.max.ms")
    args = parser.parse_args()
    bench = Bench("latency")
    settings = bench.settings
    worker = Worker(bench, bench.work / "worker", STREAM_APP_LATENESS_MS=str(args.allowance_ms), **dict(kv.split("=", 1) for kv in args.env))
    latencies: list[float] = []
    decided: list[float] = []  # event time to the moment the worker decided it (`emitted_at`)
    stop = threading.Event()

    def follow() -> None:
        # a short long-poll: the broker does not answer a read_committed fetch when only the stable offset
        # moves, so with the default 500 ms the reader's own wait would be measured, not the visibility
        reader = Consumer({"bootstrap.servers": bench.bootstrap, "group.id": "latency-unused", "enable.auto.commit": False,
                           "isolation.level": "read_committed", "fetch.wait.max.ms": args.reader_fetch_wait_ms})
        reader.assign([TopicPartition(settings.transitions_topic, p, 0) for p in range(settings.partitions)])
        while not stop.is_set():
            for message in arrived(reader, 1000, 0.05):
                if message.error() is None:
                    record = json.loads(message.value())
                    if record["segment"] == "lifecycle" and record["cause"]["type"] == "event" and not record["user_id"].startswith("warm-"):
                        visible = time.time() * 1000
                        latencies.append(visible - parse_timestamp(record["at"]))
                        decided.append(parse_timestamp(record["emitted_at"]) - parse_timestamp(record["at"]))
        reader.close()

    try:
        worker.wait_until(lambda: worker.metric("stream_app_assigned_input_partitions") == settings.partitions, 120, "the worker to own every partition")
        follower = threading.Thread(target=follow)
        follower.start()
        producer = Producer({"bootstrap.servers": bench.bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"})
        started, sent, warm = time.time(), 0, 0
        while time.time() - started < args.warmup + args.seconds:
            warming = time.time() - started < args.warmup  # clients and the worker settle; not measured
            warm += warming
            user = f"warm-{sent}" if warming else f"new-{sent}"
            event = {"type": "track", "event": "Signed In", "userId": user, "messageId": user,
                     "timestamp": format_timestamp(int(time.time() * 1000)), "properties": {}}
            producer.produce(settings.input_topic, json.dumps(event).encode(), user.encode())
            producer.poll(0)
            sent += 1
            ahead = sent / args.rate - (time.time() - started)
            if ahead > 0.002:
                time.sleep(ahead)
        producer.flush()
        worker.wait_until(lambda: len(latencies) >= sent - warm, 120 + args.allowance_ms / 1000, f"{sent} transitions")
        stop.set()
        follower.join()
        commits = worker.metric("stream_app_commit_duration_seconds_count")
        commit_buckets = [line for line in worker.metrics().splitlines() if line.startswith("stream_app_commit_duration_seconds_bucket")]
        commit_ms = 1000 * worker.metric("stream_app_commit_duration_seconds_sum") / max(1.0, commits)
    finally:
        stop.set()
        worker.stop()
        bench.close()
    latencies.sort()
    decided.sort()
    if args.verbose:
        print("\n".join(commit_buckets))

    def at(q: float, values: list[float] = latencies) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    print(f"rate {args.rate}/s for {args.seconds} s, allowance {args.allowance_ms} ms: {len(latencies)} transitions; "
          f"p50 {at(0.5):.0f} ms, p99 {at(0.99):.0f} ms, max {latencies[-1]:.0f} ms; {commits:.0f} commits, mean {commit_ms:.1f} ms; "
          f"of which event to decision (emitted_at): p50 {at(0.5, decided):.0f} ms, p99 {at(0.99, decided):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
