"""Recovery time of the worker's state from the changelog, per million users.

Loads N users' profiles through the real worker (a few events each), stops it cleanly, deletes its
local state folder (a new disk or host), starts it again and measures
- restore: from the moment recovery starts reading the changelog to "Recovery complete" (Faust's log),
- ready: from the process start to the first new event processed (a new event is produced right
  after the start; this includes interpreter start-up, joining the group and the restore).
The restore is linear in the changelog records read, so it is extrapolated to 1,000,000 users.

    .venv/bin/python benchmarks/recovery_time.py [--users 100000] [--events-per-user 2]

Uses a private local broker on free ports unless KAFKA_BOOTSTRAP_SERVERS is set.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from datetime import datetime

from reliability_harness import Bench, Worker

from stream_app.timeutil import DAY_MS, format_timestamp

LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def log_time(line: str) -> float:
    match = LOG_TIME.match(line)
    assert match, line
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events-per-user", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    from kafka import KafkaProducer

    bench = Bench("recovery", partitions=args.partitions)
    topic = bench.settings.input_topic
    print(f"work folder {bench.work}; broker {bench.bootstrap}; {args.users} users x {args.events_per_user} events", flush=True)
    producer = KafkaProducer(bootstrap_servers=bench.bootstrap, linger_ms=50, acks=1, batch_size=256 << 10)
    now = int(time.time() * 1000)
    names = ("Signed In", "Product Viewed", "Product Added", "Order Completed")
    sent = 0
    for k in range(args.events_per_user):
        for n in range(args.users):
            user = f"r-{n:07d}"
            body = {"type": "track", "event": names[k % len(names)], "userId": user, "messageId": f"{user}-{k}",
                    "timestamp": format_timestamp(now - 2 * DAY_MS + k * 60_000 + n % 50_000), "properties": {"product_id": "sku-1"}}
            producer.send(topic, key=user.encode(), value=json.dumps(body).encode())
            sent += 1
    producer.flush()
    data_dir = bench.work / "worker"
    loading = time.monotonic()
    worker = Worker(bench, data_dir, name="load")
    try:
        worker.wait_until(lambda: worker.metric("stream_app_events_consumed_total") >= sent, 7200, f"{sent} events processed")
        print(f"loaded {args.users} profiles ({sent} events) in {time.monotonic() - loading:.0f} s", flush=True)
        time.sleep(3)  # the last transactions commit
    finally:
        code = worker.stop()
    if code != 0:
        raise SystemExit(f"the loading worker stopped with {code}")
    state_mb = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file()) / 1e6
    shutil.rmtree(data_dir)

    started = time.monotonic()
    worker = Worker(bench, data_dir, name="recover")
    producer.send(topic, key=b"r-0000000", value=json.dumps({
        "type": "track", "event": "Signed In", "userId": "r-0000000", "messageId": "after-restart",
        "timestamp": format_timestamp(int(time.time() * 1000))}).encode())
    producer.flush()
    producer.close()
    try:
        worker.wait_until(lambda: worker.metric("stream_app_events_consumed_total") >= 1, 7200, "the first new event after the restart")
        ready_s = time.monotonic() - started
        lines = worker.log_path.read_text(errors="replace").splitlines()
    finally:
        worker.stop()
        bench.close()
    reading = [log_time(l) for l in lines if "Highwater for active changelog partitions" in l]
    complete = [log_time(l) for l in lines if "Recovery complete" in l]
    restore_s = complete[-1] - reading[0] if reading and complete else float("nan")
    records = 0
    if reading:  # the table under the first "Highwater for active changelog partitions": | topic | partition | highwater |
        start = next(i for i, l in enumerate(lines) if "Highwater for active changelog partitions" in l)
        for line in lines[start + 1:start + 4 + args.partitions]:
            cells = [c.strip() for c in line.split("|")]
            if len(cells) == 5 and cells[2].isdigit():
                records += int(cells[3]) + 1
    per_million = restore_s * 1_000_000 / args.users
    print(f"local state before deletion: {state_mb:.0f} MB")
    print(f"restore from the changelog: {restore_s:.1f} s for {args.users} users ({records} changelog records) -> "
          f"{per_million:.0f} s per 1,000,000 users")
    print(f"process start to first new event processed: {ready_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
