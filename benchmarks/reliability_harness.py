"""Shared pieces of the reliability benchmarks (soak.py, recovery_time.py, fuzz_run.py): a broker (a
private local one on free ports unless KAFKA_BOOTSTRAP_SERVERS is set), unique topic names, the real
worker as a process, its RSS from /proc, its /metrics, and the consumer group's lag."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

from stream_app.broker.local_kafka import LocalKafka, free_port  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.worker.topics import ensure_topics  # noqa: E402


def arrived(consumer: "Consumer", most: int, timeout_s: float) -> list["Message"]:
    """What the consumer has, as soon as it has anything: confluent-kafka's consume(n, timeout) waits out
    its whole timeout unless n records come, which a latency reader would measure as latency."""
    first = consumer.poll(timeout_s)
    return [first, *consumer.consume(most - 1, 0)] if first is not None else []


def broker_unless_given(work: Path) -> tuple[str, LocalKafka | None]:
    """KAFKA_BOOTSTRAP_SERVERS when set, else a private local broker on free ports (the caller stops it)."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        return bootstrap, None
    broker = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    return broker.bootstrap, broker


class Bench:
    """A work folder, a broker and one set of unique topics."""

    def __init__(self, prefix: str, partitions: int = 6, work: Path | None = None) -> None:
        self.work = work or Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.bootstrap, self.broker = broker_unless_given(self.work)
        bootstrap = self.bootstrap
        tag = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.settings = replace(Settings(), bootstrap_servers=bootstrap, app_id=tag, input_topic=f"{tag}-in",
                                transitions_topic=f"{tag}-tr", memberships_topic=f"{tag}-mem", dlq_topic=f"{tag}-dlq",
                                partitions=partitions)
        ensure_topics(self.settings)

    def worker_env(self, data_dir: Path, web_port: int, **extra: str) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(KAFKA_BOOTSTRAP_SERVERS=self.bootstrap, STREAM_APP_ID=s.app_id, STREAM_APP_INPUT_TOPIC=s.input_topic,
                   STREAM_APP_TRANSITIONS_TOPIC=s.transitions_topic, STREAM_APP_MEMBERSHIPS_TOPIC=s.memberships_topic,
                   STREAM_APP_DLQ_TOPIC=s.dlq_topic, STREAM_APP_PARTITIONS=str(s.partitions), STREAM_APP_DATA_DIR=str(data_dir),
                   STREAM_APP_WEB_PORT=str(web_port), STREAM_APP_SESSION_TIMEOUT_S="6")
        env.update(extra)
        return env

    def close(self) -> None:
        if self.broker is not None:
            self.broker.stop()


class Worker:
    """`stream-app worker` as a process (its own process group)."""

    def __init__(self, bench: Bench, data_dir: Path, name: str = "worker", repo: Path = REPO, **extra_env: str) -> None:
        """``repo``: the checkout whose worker runs, with its own .venv (default: this one, this Python)."""
        self.bench = bench
        self.data_dir = data_dir
        self.web_port = free_port()
        self.log_path = bench.work / f"{name}-{int(time.time())}.log"
        python = sys.executable if repo == REPO else str(repo / ".venv" / "bin" / "python")
        self.proc = subprocess.Popen([python, "-m", "stream_app", "worker"],
                                     env=bench.worker_env(data_dir, self.web_port, **extra_env), cwd=repo,
                                     stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        """Resident set size of the worker process (VmRSS in /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=3) as response:
            return response.read().decode()

    def metric(self, name: str) -> float:
        """Sum of every sample of a metric (all label sets); 0 when the endpoint is not up yet."""
        try:
            text = self.metrics()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_until(self, predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        """Poll `predicate` until it holds; exit (SystemExit) if the worker dies or `timeout` s pass."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if not self.alive():
                raise SystemExit(f"the worker exited with {self.proc.returncode} while waiting for {what}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}; see {self.log_path}")
            time.sleep(0.2)

    def log_contains(self, text: str) -> bool:
        return text in self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)


def group_lag(bootstrap: str, group: str, topic: str) -> int | None:
    """Input records not yet committed by the consumer group (end offsets minus committed offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    # a consumer with the group's id that never subscribes: it only reads the group's committed offsets
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             isolation_level="read_committed")
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = consumer.end_offsets(tps)
        lag = 0
        for tp in tps:
            committed = consumer.committed(tp)
            lag += max(0, ends[tp] - (committed or 0))
        return lag
    except Exception:  # noqa: BLE001 - a sample is skipped, not the run
        return None
    finally:
        consumer.close()
