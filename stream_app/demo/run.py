"""`stream-app demo`: local broker (unless KAFKA_BOOTSTRAP_SERVERS is set), the worker, synthetic
traffic, and every transition printed as it happens. Ctrl-C stops everything."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..settings import Settings
from ..timeutil import DAY_MS
from .generator import MALFORMED_SAMPLES, as_wire
from .live import backfill_events, live_events

if TYPE_CHECKING:
    from ..broker.local_kafka import LocalKafka

SPEED = 60.0


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _local_broker(root: Path) -> LocalKafka:
    """The demo's own broker, fetched with Maven on the first run; not started yet."""
    from ..broker.local_kafka import LocalKafka, fetch_kafka, kafka_version, libs_dir

    port = int(os.environ.get("STREAM_APP_KAFKA_PORT", "9092"))
    if not (libs_dir() / f"kafka_2.13-{kafka_version()}.jar").exists():
        _print(f"demo: fetching Apache Kafka {kafka_version()} with Maven (first run only)...")
    fetch_kafka()
    return LocalKafka(root / "kafka", port=port, controller_port=port + 1)


def _client_config(settings: Settings, purpose: str) -> dict[str, Any]:
    return {"bootstrap.servers": settings.bootstrap_servers, "client.id": f"{settings.app_id}-demo-{purpose}",
            **settings.kafka_security.librdkafka_config(), "logger": logging.getLogger(f"stream_app.demo.{purpose}")}


def _send(producer: Any, topic: str, key: bytes | None, value: bytes) -> None:
    """`producer.produce`, waiting for room when librdkafka's queue is full (BufferError)."""
    while True:
        try:
            producer.produce(topic, value, key)
            break
        except BufferError:
            producer.poll(0.1)  # serves delivery reports, which frees the queue
    producer.poll(0)


def _produce(settings: Settings, stop: threading.Event, backfilled: threading.Event, seed: int) -> None:
    from confluent_kafka import Producer

    # keyed by user; murmur2 places the keys as the Java client does (records without a key: random)
    # idempotent: a retried batch (the topics are new) must not land after later ones, since each user's
    # events have to arrive in timestamp order
    producer = Producer({**_client_config(settings, "producer"), "acks": "all", "linger.ms": 5,
                         "enable.idempotence": True, "partitioner": "murmur2_random"})
    live_start = int(time.time() * 1000) - 2 * DAY_MS
    history = backfill_events(seed, users=300, live_start_ms=live_start)
    for event in history:
        _send(producer, settings.input_topic, event["userId"].encode(), json.dumps(as_wire(event)).encode())
    producer.flush()
    backfilled.set()
    _print(f"demo: backfilled {len(history)} events of 10 days of history; now live, event time runs {SPEED:.0f}x faster than the wall clock")
    sent = 0
    for event in live_events(seed, live_start, SPEED):
        if stop.is_set():
            break
        _send(producer, settings.input_topic, event["userId"].encode(), json.dumps(as_wire(event)).encode())
        sent += 1
        if sent % 150 == 0:  # now and then a malformed message, to show the dead-letter topic
            _send(producer, settings.input_topic, None, MALFORMED_SAMPLES[(sent // 150) % len(MALFORMED_SAMPLES)])
    producer.flush(10)  # stopping: the broker may be going away


def _follow(settings: Settings, stop: threading.Event) -> None:
    """Print the transitions and dead letters written from now on (the partitions are assigned at their
    ends; no consumer group)."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    consumer = Consumer({
        **_client_config(settings, "follower"),
        "group.id": f"{settings.app_id}-demo-follower-unused",  # never joined: the partitions are assigned
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "isolation.level": "read_committed", "auto.offset.reset": "latest",
    })
    try:
        assignment = []
        for topic in (settings.transitions_topic, settings.dlq_topic):
            metadata = consumer.list_topics(topic, timeout=30).topics[topic]
            assignment += [TopicPartition(topic, partition, OFFSET_END) for partition in sorted(metadata.partitions)]
        consumer.assign(assignment)
        counts: dict[str, int] = {}
        while not stop.is_set():
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:  # librdkafka retries what can be retried
                continue
            record = json.loads(message.value())
            if message.topic() == settings.dlq_topic:
                _print(f"  DEAD LETTER  {record['reason']}: {record['detail']}")
                continue
            counts[record["segment"]] = counts.get(record["segment"], 0) + 1
            before = record["from"] or "-"
            after = record["to"] or "-"
            cause = record["cause"]["type"]
            flag = " (historical)" if record["historical"] else ""
            _print(f"  {record['at'][:16].replace('T', ' ')}  {record['user_id']:<12} {record['segment']:<15} {before:>15} -> {after:<15} [{cause}]{flag}")
    finally:
        consumer.close()


def _say(line: str) -> None:
    """`_print` while stopping, where the output may be gone (a closed terminal: EIO) or busy (a signal
    handler's print during the main thread's own): a lost line must not cut the clean-up short."""
    try:
        _print(line)
    except (OSError, ValueError, RuntimeError):
        pass


class _StopSignals:
    """Ctrl-C, SIGTERM and SIGHUP (`timeout`, `kill`, a closed terminal) stop the demo: the first one
    raises KeyboardInterrupt, so that the worker (in its own session) and the broker are stopped too
    instead of being left running. Any later one, and any during the clean-up, only says so: a second
    signal must not cut the clean-up short (Ctrl-C pressed again; `timeout -s INT`, which signals the
    process and then its whole process group; the two SIGHUPs of a closed terminal). A signal the demo
    was started with ignored (a background job's SIGINT, `nohup`'s SIGHUP) stays ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.stopping = False
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            current = signal.getsignal(signum)
            if current is not signal.SIG_IGN:
                self.previous[signum] = current
                signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.stopping:
            _say("demo: already stopping: the worker and the broker are being stopped cleanly")
            return
        self.stopping = True
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


def run_demo(seed: int = 7) -> int:
    signals = _StopSignals()
    signals.install()
    root = Path(os.environ.get("STREAM_APP_DEMO_DIR", "var/demo"))
    root.mkdir(parents=True, exist_ok=True)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if bootstrap else _local_broker(root)
    stop = threading.Event()
    follower: threading.Thread | None = None
    worker: subprocess.Popen[bytes] | None = None
    # The broker, the follower and the worker are stopped in `finally`, whenever Ctrl-C (or SIGTERM) comes:
    # while the broker starts, while the backfill is written, or while the worker runs (the producer
    # thread is a daemon; it ends with the process).
    try:
        if broker is not None:
            _print(f"demo: starting the local Kafka broker on {broker.bootstrap} (data in {broker.data_dir})")
            broker.start()
            bootstrap = broker.bootstrap
        settings, env = _demo_settings(root, bootstrap, local_broker=broker is not None)
        backfilled = threading.Event()
        follower = threading.Thread(target=_follow, args=(settings, stop), daemon=True)
        follower.start()
        threading.Thread(target=_produce, args=(settings, stop, backfilled, seed), daemon=True).start()
        # The worker starts once every partition has input: a partition that is empty and idle for longer
        # than the lateness allowance would (rightly) move its clock to the wall clock, ahead of the demo's
        # compressed event time.
        if not backfilled.wait(120):
            _print("demo: the synthetic backfill did not reach Kafka within 120 s")
            return 1
        log_path = root / "worker.log"
        worker = subprocess.Popen([sys.executable, "-m", "stream_app", "worker"], env=env,
                                  stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        _print(f"demo: worker started (log: {log_path}, metrics: http://{settings.web_host}:{settings.web_port}/metrics)")
        _print("demo: transitions as they happen (event time, user, segment, from -> to, cause); Ctrl-C stops")
        while worker.poll() is None:
            time.sleep(0.5)
        _print(f"demo: the worker exited with {worker.returncode}; see {log_path}")
        return 1
    except KeyboardInterrupt:
        _say("\ndemo: stopping...")
        return 0
    finally:
        signals.stopping = True
        stop.set()
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        if follower is not None:
            follower.join(5)
        if broker is not None:
            broker.stop()
        _say("demo: stopped")
        signals.restore()


def _demo_settings(root: Path, bootstrap: str, local_broker: bool) -> tuple[Settings, dict[str, str]]:
    """The worker's settings and environment; topics created, access to a remote cluster checked."""
    # The demo's live traffic runs in compressed event time, up to 2 days behind the wall clock: with a
    # 3-day historical and backfill age it is live traffic, and only the older history is a backfill.
    settings = replace(Settings(), bootstrap_servers=bootstrap, data_dir=root / "worker", historical_after_ms=3 * DAY_MS,
                       backfill_age_ms=3 * DAY_MS)
    worker_env = dict(os.environ)
    if local_broker:  # the local broker is plaintext on loopback: any TLS / SASL settings are for another cluster
        from ..kafka_security import KafkaSecurity

        settings = replace(settings, kafka_security=KafkaSecurity())
        worker_env = {k: v for k, v in worker_env.items() if not k.startswith(("KAFKA_SECURITY_", "KAFKA_SASL_", "KAFKA_SSL_"))}
    else:
        from ..kafka_security import check_access

        check_access(settings.kafka_security, bootstrap)
    from ..worker.topics import ensure_topics

    ensure_topics(settings)
    env = dict(worker_env, KAFKA_BOOTSTRAP_SERVERS=bootstrap, STREAM_APP_DATA_DIR=str(settings.data_dir),
               STREAM_APP_HISTORICAL_AFTER_MS=str(settings.historical_after_ms),
               STREAM_APP_BACKFILL_AGE_MS=str(settings.backfill_age_ms))
    return settings, env
