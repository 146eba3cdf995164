"""Shared test helpers: build Segment events, run a worker process, read topics."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from stream_app.broker.cluster import LocalKafkaCluster
from stream_app.broker.local_kafka import BrokerError, LocalKafka, free_port
from stream_app.timeutil import format_timestamp


def free_port_pair() -> int:
    """A free port whose next one is free too: `stream-app demo` and `stream-app kafka up` put their
    broker's controller on the port after the broker's."""
    while True:
        port = free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


REPO = Path(__file__).resolve().parents[1]


def track(user: str, name: str, ts: int, mid: str | None = None, **props: Any) -> dict[str, Any]:
    return {"type": "track", "event": name, "userId": user, "messageId": mid or uuid.uuid4().hex,
            "timestamp": format_timestamp(ts), "properties": props}


def page(user: str, name: str, ts: int, mid: str | None = None, **props: Any) -> dict[str, Any]:
    return {"type": "page", "name": name, "userId": user, "messageId": mid or uuid.uuid4().hex,
            "timestamp": format_timestamp(ts), "properties": props}


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def interleave_users_within(events: list[dict[str, Any]], allowance_ms: int, seed: int) -> list[dict[str, Any]]:
    """Users' events interleaved at random so that none arrives after an event more than ``allowance_ms``
    newer, each user's own events still in timestamp order: the order the catalog asks producers for."""
    import random

    from stream_app.timeutil import parse_timestamp

    def ts(event: dict[str, Any]) -> int:
        return event["timestamp"] if isinstance(event["timestamp"], int) else parse_timestamp(event["timestamp"])

    rng = random.Random(seed)
    arrival = sorted(events, key=lambda e: ts(e) + rng.uniform(0, allowance_ms))
    by_user: dict[str, list[dict[str, Any]]] = {}
    for event in sorted(events, key=ts):
        by_user.setdefault(event.get("userId") or event["anonymousId"], []).append(event)
    return [by_user[e.get("userId") or e["anonymousId"]].pop(0) for e in arrival]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Names:
    """Unique topic and app names for one test, so tests never share state on the broker."""

    def __init__(self, bootstrap: str, partitions: int = 3) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.app_id = f"t-{tag}"
        self.input = f"in-{tag}"
        self.transitions = f"tr-{tag}"
        self.memberships = f"mem-{tag}"
        self.dlq = f"dlq-{tag}"
        # test data is hours old, so it is a backfill: let it drain in 3 s rather than the default 60 s
        self.backfill_drained_after_ms = 3000

    def env(self, data_dir: Path, web_port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap, STREAM_APP_ID=self.app_id, STREAM_APP_INPUT_TOPIC=self.input,
            STREAM_APP_TRANSITIONS_TOPIC=self.transitions, STREAM_APP_MEMBERSHIPS_TOPIC=self.memberships,
            STREAM_APP_DLQ_TOPIC=self.dlq, STREAM_APP_PARTITIONS=str(self.partitions), STREAM_APP_DATA_DIR=str(data_dir),
            STREAM_APP_WEB_PORT=str(web_port), STREAM_APP_SESSION_TIMEOUT_S="6", STREAM_APP_LOG_LEVEL="info",
            STREAM_APP_BACKFILL_DRAINED_AFTER_MS=str(self.backfill_drained_after_ms),
        )
        return env

    def settings(self):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        from stream_app.settings import Settings

        return replace(Settings(), bootstrap_servers=self.bootstrap, app_id=self.app_id, input_topic=self.input,
                       transitions_topic=self.transitions, memberships_topic=self.memberships, dlq_topic=self.dlq,
                       partitions=self.partitions)

    def create_topics(self) -> None:
        from stream_app.worker.topics import ensure_topics

        ensure_topics(self.settings())


class WorkerProcess:
    """`stream-app worker` as a real process."""

    def __init__(self, names: Names, data_dir: Path, command: tuple[str, ...] = ("-m", "stream_app", "worker")) -> None:
        self.names = names
        self.data_dir = data_dir
        self.command = command  # what the interpreter runs: the worker, or tests/crash_worker.py
        self.web_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start_env: dict[str, str] = {}
        self.log_path = data_dir.parent / f"{data_dir.name}-worker-{int(time.time() * 1000)}.log"

    def start(self) -> "WorkerProcess":
        self.web_port = free_port()
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-worker-{int(time.time() * 1000)}.log"
        self.proc = subprocess.Popen(
            [sys.executable, *self.command], env={**self.names.env(self.data_dir, self.web_port), **self.start_env},
            stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )
        return self

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=2) as response:
            return response.read().decode()

    def metric_value(self, name: str, labels: str = "") -> float:
        prefix = f"{name}{{{labels}}}" if labels else name
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(prefix + " ") or (not labels and line.startswith(name + "{")):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"worker exited with {self.proc and self.proc.returncode}:\n{self.log()[-4000:]}"

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGUSR1)  # the worker prints every thread's stack (worker/app.py)
            time.sleep(1)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise AssertionError(f"worker did not stop within {timeout} s:\n{self.log()[-6000:]}")


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def read_all(bootstrap: str, topic: str, idle_ms: int = 2000) -> list[Any]:
    """Every committed record of a topic, values decoded from JSON (None for tombstones)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                             isolation_level="read_committed", consumer_timeout_ms=idle_ms)
    rows = [None if m.value is None else json.loads(m.value) for m in consumer]
    consumer.close()
    return rows


def population_independent(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Transitions that depend only on each user's own events and the clock. RFM scores depend on the
    population at each refresh, which the worker takes every `rfm.refresh_interval` of wall time and a
    replay at every midnight of event time, so RFM transitions are compared by their own tests."""
    return [row for row in rows if row is not None and row.get("segment") != "rfm"]


def without_rfm(segments: dict[str, str]) -> dict[str, str]:
    return {segment: member for segment, member in segments.items() if segment != "rfm"}


@contextmanager
def local_broker(prefix: str) -> Iterator[LocalKafka]:
    """A real local Kafka broker on free loopback ports for the duration of the block. Its data folder is
    outside pytest's basetemp (another session's clean-up of old basetemps must not delete it). If it
    cannot start, the test fails: Kafka tests are never skipped."""
    import pytest

    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    broker = LocalKafka(data_dir, port=free_port(), controller_port=free_port())
    try:
        broker.start()
    except BrokerError as exc:
        pytest.fail(f"these tests need the real Kafka broker and it could not be started: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def local_cluster(prefix: str, size: int = 3) -> Iterator[LocalKafkaCluster]:
    """A real local Kafka cluster of `size` nodes (stream_app/broker/cluster.py: combined broker +
    controller each, three replicas and two in sync by default) on free loopback ports for the duration of
    the block, with its data folder outside pytest's basetemp like `local_broker`'s. If it cannot start,
    the test fails: Kafka tests are never skipped."""
    import pytest

    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        cluster = LocalKafkaCluster(data_dir, size=size)
        cluster.start()
    except BrokerError as exc:
        shutil.rmtree(data_dir, ignore_errors=True)
        pytest.fail(f"these tests need a real {size}-node Kafka cluster and it could not be started: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
