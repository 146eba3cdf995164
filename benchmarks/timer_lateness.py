"""Timer lateness under steady load, measured on a real broker with the real worker.

Lateness of a timer transition = the wall time it was emitted (`emitted_at`) minus the wall time the
partition clock passed its due time. With live traffic (event time close to the wall clock) the clock
trails the newest event by the 5 s lateness allowance, so the clock passes a due time `at` when the
wall clock reads `at + 5 s`: lateness = emitted_at - (at + allowance).

    .venv/bin/python benchmarks/timer_lateness.py [--carts 600] [--seconds 30] [--rate 200]

Starts a local Kafka broker on free ports unless KAFKA_BOOTSTRAP_SERVERS is set, then the worker,
then steady background traffic plus carts whose 30-minute abandonment timers come due while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reliability_harness import broker_unless_given  # noqa: E402

from stream_app.broker.local_kafka import free_port  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.timeutil import MINUTE_MS, format_timestamp, parse_timestamp  # noqa: E402
from stream_app.worker.topics import ensure_topics  # noqa: E402

ALLOWANCE_MS = 5000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--carts", type=int, default=600)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rate", type=int, default=200, help="background events per second")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="timer-lateness-"))
    bootstrap, broker = broker_unless_given(work)
    tag = str(int(time.time()))
    settings = replace(Settings(), bootstrap_servers=bootstrap, app_id=f"lateness-{tag}", input_topic=f"lat-in-{tag}",
                       transitions_topic=f"lat-tr-{tag}", memberships_topic=f"lat-mem-{tag}", dlq_topic=f"lat-dlq-{tag}")
    ensure_topics(settings)
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, STREAM_APP_ID=settings.app_id, STREAM_APP_INPUT_TOPIC=settings.input_topic,
               STREAM_APP_TRANSITIONS_TOPIC=settings.transitions_topic, STREAM_APP_MEMBERSHIPS_TOPIC=settings.memberships_topic,
               STREAM_APP_DLQ_TOPIC=settings.dlq_topic, STREAM_APP_DATA_DIR=str(work / "worker"), STREAM_APP_WEB_PORT=str(free_port()))
    worker = subprocess.Popen([sys.executable, "-m", "stream_app", "worker"], env=env, cwd=REPO,
                              stdout=open(work / "worker.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)

    def send(user: str, name: str, ts: int, **props: object) -> None:
        body = {"type": "track", "event": name, "userId": user, "messageId": f"{user}-{ts}-{name}",
                "timestamp": format_timestamp(ts), "properties": props}
        producer.send(settings.input_topic, key=user.encode(), value=json.dumps(body).encode())

    try:
        time.sleep(12)  # worker start-up and first rebalance
        start = int(time.time() * 1000)
        spread = args.seconds * 1000 - 10_000
        for n in range(args.carts):  # carts opened 30 minutes ago, due over the run
            send(f"cart-{n}", "Product Added", start - 30 * MINUTE_MS + 2000 + n * spread // args.carts, product_id="p")
        sent = 0
        while time.time() * 1000 < start + args.seconds * 1000:
            now = int(time.time() * 1000)
            for _ in range(max(1, args.rate // 20)):
                sent += 1
                send(f"bg-{sent % 5000}", "Product Viewed", now)
            time.sleep(0.05)
        producer.flush()
        time.sleep(8)
        consumer = KafkaConsumer(settings.transitions_topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                 isolation_level="read_committed", consumer_timeout_ms=3000)
        late = []
        for message in consumer:
            record = json.loads(message.value)
            if record["segment"] == "cart_abandoner" and record["cause"]["type"] == "timer":
                late.append(parse_timestamp(record["emitted_at"]) - parse_timestamp(record["at"]) - ALLOWANCE_MS)
        consumer.close()
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)
        if broker is not None:
            broker.stop()
    if not late:
        print("no timer transitions were read; see", work / "worker.log")
        return 1
    late.sort()
    p99 = late[min(len(late) - 1, int(0.99 * len(late)))]
    print(f"timers: {len(late)} of {args.carts}; background {args.rate}/s; lateness ms: p50 {statistics.median(late):.0f}, "
          f"p99 {p99}, max {late[-1]}, min {late[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
