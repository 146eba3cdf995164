"""A change of definitions under a worker process that owns many users, on a real broker.

The demo generator's users (10 days of history) are produced to a 6-partition input topic; one worker
decides them (a backfill, drained after 3 s); then the definitions file is edited (the intent threshold
from 6 to 3) and the worker decides every stored user again. Prints how long that took, whether the
worker lived through it, and the warnings its log gained meanwhile. `--worker-repo` runs the worker
of another checkout (its own .venv), e.g. one from before the bounded pass, on the same input.

    .venv/bin/python benchmarks/definitions_pass_worker.py --users 100000 [--worker-repo /path/to/checkout]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from reliability_harness import REPO, Bench, Worker

from stream_app.demo.generator import as_wire, generate
from stream_app.segments.definitions import DEFAULTS_FILE
from stream_app.timeutil import DAY_MS


def _produce(bootstrap: str, topic: str, users: int) -> int:
    now = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000, "compression.type": "lz4"})
    count = 0
    for event in generate(seed=7, users=users, start_ms=now - 11 * DAY_MS, span_ms=10 * DAY_MS):
        wire = as_wire(event)
        while True:
            try:
                producer.produce(topic, json.dumps(wire).encode(), wire["userId"].encode())
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    producer.flush(120)
    return count


def _ends_committed(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = consumer.committed(tps, timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
        return all(c.offset >= e for c, e in zip(committed, ends))
    except KafkaException:  # the group's coordinator not ready yet
        return False
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--worker-repo", type=Path, default=REPO, help="the checkout whose worker runs (default: this one)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds to wait for the new definitions to be decided")
    args = parser.parse_args()

    bench = Bench("defpass", partitions=6)
    try:
        s = bench.settings
        started = time.monotonic()
        events = _produce(bench.bootstrap, s.input_topic, args.users)
        print(f"{events:,} events of {args.users:,} users produced in {time.monotonic() - started:.0f} s")
        definitions = bench.work / "segments.yaml"
        definitions.write_text(DEFAULTS_FILE.read_text())
        worker = Worker(bench, bench.work / "w", repo=args.worker_repo, STREAM_APP_SEGMENTS_FILE=str(definitions),
                        STREAM_APP_RELOAD_INTERVAL_MS="500", STREAM_APP_BACKFILL_DRAINED_AFTER_MS="3000")
        log_path, proc = worker.log_path, worker.proc
        try:
            started = time.monotonic()
            while not _ends_committed(bench.bootstrap, s.app_id, s.input_topic, s.partitions):
                if not worker.alive():
                    raise SystemExit(f"the worker exited with {proc.returncode} before the input was decided; see {log_path}")
                time.sleep(2)
            print(f"history decided in {time.monotonic() - started:.0f} s; waiting 10 s for the backfill to drain")
            time.sleep(10)
            before = log_path.read_text(errors="replace")
            definitions.write_text(DEFAULTS_FILE.read_text().replace("threshold: 6", "threshold: 3"))
            edited = time.monotonic()
            done = 0
            while time.monotonic() - edited < args.timeout and worker.alive():
                done = log_path.read_text(errors="replace")[len(before):].count("every stored user is decided under definitions")
                if done >= s.partitions:
                    break
                time.sleep(0.5)
            took = time.monotonic() - edited
            after = log_path.read_text(errors="replace")[len(before):]
            warnings = re.findall(r"\[(?:WARNING|ERROR|CRITICAL)\] .*", after)
            status = "alive" if worker.alive() else f"exited with {proc.returncode}"
            print(f"after the edit: {done} of {s.partitions} partitions logged their pass done in {took:.1f} s; the worker {status}; "
                  f"{len(warnings)} warning or error lines")
            for line in warnings[:8]:
                print("   ", line[:240])
            print(f"worker log: {log_path}")
        finally:
            worker.stop()
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
