"""Hostile input at full size through the real worker on a real broker: >= 100,000 malformed messages
of every kind (stream_app/demo/hostile.py) interleaved with valid events. Checks that every malformed
message is on the dead-letter topic (once, with a reason), that every valid event was processed and
that the worker never stopped; prints counts and times.

    .venv/bin/python benchmarks/fuzz_run.py [--malformed 100000] [--valid-every 3] [--seed 1]

Uses a private local broker on free ports unless KAFKA_BOOTSTRAP_SERVERS is set.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections import Counter

from reliability_harness import Bench, Worker

from stream_app.demo.hostile import hostile_stream


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--malformed", type=int, default=100_000)
    parser.add_argument("--valid-every", type=int, default=3, help="one valid event after every N malformed ones")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    from kafka import KafkaConsumer, KafkaProducer

    bench = Bench("fuzz", partitions=args.partitions)
    print(f"work folder {bench.work}; broker {bench.bootstrap}", flush=True)
    started = time.monotonic()
    expected: Counter = Counter()
    kinds: Counter = Counter()
    valid = 0
    producer = KafkaProducer(bootstrap_servers=bench.bootstrap, linger_ms=20, acks="all", max_request_size=4 << 20)
    for kind, key, value, malformed in hostile_stream(args.seed, args.malformed, args.valid_every):
        kinds[kind] += 1
        if malformed:
            expected[value] += 1
        else:
            valid += 1
        producer.send(bench.settings.input_topic, key=key, value=value)
    producer.flush()
    producer.close()
    produced_s = time.monotonic() - started
    total_bad = sum(expected.values())
    print(f"produced {total_bad} malformed ({len(kinds) - 2} kinds) and {valid} valid messages in {produced_s:.1f} s", flush=True)

    worker = Worker(bench, bench.work / "worker")
    began = time.monotonic()
    try:
        while True:
            if not worker.alive():
                print(f"FAIL: the worker exited with {worker.proc.returncode}; see {worker.log_path}")
                return 1
            consumed = worker.metric("stream_app_events_consumed_total")
            dead = worker.metric("stream_app_dead_letters_total")
            if consumed >= valid and dead >= total_bad:
                break
            if time.monotonic() - began > args.timeout:
                print(f"FAIL: timed out with {consumed:.0f}/{valid} valid and {dead:.0f}/{total_bad} dead letters")
                return 1
            time.sleep(2)
        processing_s = time.monotonic() - began
        time.sleep(3)
        consumer = KafkaConsumer(bench.settings.dlq_topic, bootstrap_servers=bench.bootstrap, group_id=None,
                                 auto_offset_reset="earliest", isolation_level="read_committed", consumer_timeout_ms=5000,
                                 fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
        got: Counter = Counter()
        reasons: Counter = Counter()
        for message in consumer:
            letter = json.loads(message.value)
            got[base64.b64decode(letter["original"])] += 1
            reasons[letter["reason"]] += 1
            assert letter["detail"], letter
        consumer.close()
        alive = worker.alive()
        consumed = worker.metric("stream_app_events_consumed_total")
    finally:
        code = worker.stop()
        bench.close()
    missing = expected - got
    extra = got - expected
    print(f"worker: processed {consumed:.0f} of {valid} valid events; {sum(got.values())} dead letters read; "
          f"alive at the end: {alive}; stopped with {code}")
    print(f"time from worker start until everything was processed: {processing_s:.1f} s "
          f"({(total_bad + valid) / processing_s:,.0f} messages/s)")
    print("dead letters by reason: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    print("malformed by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    ok = not missing and not extra and consumed == valid and alive and code == 0
    print(("OK" if ok else "FAIL") + f": missing dead letters {sum(missing.values())}, unexpected {sum(extra.values())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
