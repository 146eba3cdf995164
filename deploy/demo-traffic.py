"""Synthetic clickstream for docker-compose.yml: the demo's personas sent to the input topic, for ever.

    python deploy/demo-traffic.py [--speed 1] [--behind-hours 0] [--sessions-per-minute 30] ...

First a backfill of history (``--history-users`` users over ``--history-days`` days, ending where the
live traffic starts), then new sessions as they happen, and now and then a malformed message, which the
workers dead-letter. Configured like the worker (KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL and
the other Kafka settings, STREAM_APP_INPUT_TOPIC, STREAM_APP_PARTITIONS); it creates the contract's
topics if they are missing, with the workers' partition count.

With the default ``--speed 1`` event time is the wall clock and it runs until stopped. ``--speed 60
--behind-hours 48`` is `make demo`'s compressed time (a 30-minute cart rule shows in 30 s): event time
starts 48 hours behind the wall clock and runs 60 times faster, so it would reach the wall clock after
about 49 minutes; the script stops there. The workers then need STREAM_APP_HISTORICAL_AFTER_MS and
STREAM_APP_BACKFILL_AGE_MS above the distance (e.g. 259200000, 3 days), or every transition is
historical. It uses the package's public demo functions only (stream_app/demo/).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time

from stream_app.demo.generator import MALFORMED_SAMPLES, as_wire
from stream_app.demo.live import backfill_events, live_events
from stream_app.kafka_security import check_access
from stream_app.settings import Settings
from stream_app.timeutil import HOUR_MS
from stream_app.worker.topics import ensure_topics


def _say(line: str) -> None:
    print(f"demo-traffic: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=float, default=1.0, help="event time runs this many times faster than the wall clock")
    parser.add_argument("--behind-hours", type=float, default=0.0, help="live event time starts this far behind the wall clock")
    parser.add_argument("--sessions-per-minute", type=int, default=30, help="new user sessions per minute of event time")
    parser.add_argument("--history-users", type=int, default=300)
    parser.add_argument("--history-days", type=int, default=10)
    parser.add_argument("--malformed-every", type=int, default=150, help="one malformed message after this many events (0: none)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until stopped)")
    args = parser.parse_args(argv)
    if args.speed < 1:
        parser.error("--speed must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s] [%(levelname)s] %(message)s")

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    settings = Settings()
    check_access(settings.kafka_security, settings.bootstrap_servers)
    ensure_topics(settings)
    from confluent_kafka import Producer

    # keyed by user; idempotent, so that a retried batch cannot land after later ones (each user's events
    # must arrive in timestamp order); murmur2 places the keys as the Java client does
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "client.id": f"{settings.app_id}-demo-traffic",
                         **settings.kafka_security.librdkafka_config(), "acks": "all", "linger.ms": 5,
                         "enable.idempotence": True, "partitioner": "murmur2_random",
                         "logger": logging.getLogger("demo-traffic.kafka")})

    def send(key: bytes | None, value: bytes) -> None:
        while True:
            try:
                producer.produce(settings.input_topic, value, key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)

    started = time.time()
    live_start = int(started * 1000) - int(args.behind_hours * HOUR_MS)
    history = backfill_events(args.seed, users=args.history_users, live_start_ms=live_start, days=args.history_days)
    for event in history:
        send(event["userId"].encode(), json.dumps(as_wire(event)).encode())
    producer.flush(60)
    _say(f"sent {len(history)} events of {args.history_days} days of history to {settings.input_topic}; now live "
         f"(event time {args.behind_hours:g} h behind the wall clock, {args.speed:g}x)")

    sent = malformed = 0
    reported = time.monotonic()
    for event in live_events(args.seed, live_start, args.speed, sessions_per_minute=args.sessions_per_minute):
        now_ms = time.time() * 1000
        if stop.is_set() or (args.duration and time.time() - started >= args.duration):
            break
        if event["timestamp"] > now_ms:  # compressed time has caught up with the wall clock
            _say("event time has reached the wall clock; stopping")
            break
        send(event["userId"].encode(), json.dumps(as_wire(event)).encode())
        sent += 1
        if args.malformed_every and sent % args.malformed_every == 0:
            send(None, MALFORMED_SAMPLES[(sent // args.malformed_every) % len(MALFORMED_SAMPLES)])
            malformed += 1
        if time.monotonic() - reported >= 60:
            reported = time.monotonic()
            _say(f"{sent} live events and {malformed} malformed messages sent")
    producer.flush(10)
    _say(f"stopped after {sent} live events and {malformed} malformed messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
