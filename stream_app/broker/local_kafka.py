"""Fetch, format, start and stop a local Apache Kafka broker (combined broker + controller, KRaft).

Maven resolves the pinned ``org.apache.kafka:kafka_2.13`` and its runtime dependencies from
``deploy/kafka/pom.xml`` into a cache folder (``$STREAM_APP_CACHE``, default ``~/.cache/stream-app``).
Nothing listens beyond loopback.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"


class BrokerError(RuntimeError):
    pass


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:
        raise BrokerError(f"{POM} has no <kafka.version>")
    return match.group(1)


def cache_root() -> Path:
    return Path(os.environ.get("STREAM_APP_CACHE", Path.home() / ".cache" / "stream-app"))


def libs_dir() -> Path:
    return cache_root() / f"kafka-{kafka_version()}" / "libs"


def fetch_kafka(quiet: bool = True) -> Path:
    """Resolve the broker jars with Maven (once; later calls reuse the cache)."""
    target = libs_dir()
    marker = target / f"kafka_2.13-{kafka_version()}.jar"
    if marker.exists():
        return target
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is not on PATH; install Maven 3.8+ and Java 17 to fetch the local Kafka broker")
    if shutil.which("java") is None:
        raise BrokerError("java is not on PATH; install Java 17 to run the local Kafka broker")
    partial = target.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = ["mvn", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={partial}", "-DincludeScope=runtime"]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=quiet, text=True)
    if proc.returncode != 0:
        raise BrokerError(f"Maven could not fetch Kafka {kafka_version()}:\n{(proc.stdout or '')[-3000:]}{(proc.stderr or '')[-2000:]}")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _cluster_id() -> str:
    """A KRaft cluster id (base64url of a UUID). One that starts with '-' would be read by the storage
    tool as an option, so those are drawn again."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dir}
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=168
log.segment.bytes=67108864
log.cleaner.enable=true
"""

LOG4J_PROPERTIES = """\
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""


def _with_overrides(properties: str, overrides: dict[str, str]) -> str:
    lines = [line for line in properties.splitlines() if line.split("=", 1)[0] not in overrides]
    return "\n".join(lines + [f"{key}={value}" for key, value in overrides.items()]) + "\n"


@dataclass
class LocalKafka:
    """One broker in ``data_dir``. ``start()`` formats storage on first use and waits until it serves."""

    data_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "768m"
    # server.properties entries that replace (same key) or extend the defaults, e.g. an extra SASL_SSL listener
    overrides: dict[str, str] = field(default_factory=dict)
    # SCRAM credentials written at format time, as `kafka-storage format --add-scram` takes them:
    # "SCRAM-SHA-512=[name=admin,password=...]"
    scram_credentials: tuple[str, ...] = ()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _java(self, main: str, *args: str) -> list[str]:
        classpath = str(libs_dir() / "*")
        log4j = self.data_dir / "log4j.properties"
        return [
            "java", f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{log4j}", "-cp", classpath, main, *args,
        ]

    def format(self) -> None:
        fetch_kafka()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text(_with_overrides(
            SERVER_PROPERTIES.format(port=self.port, controller_port=self.controller_port, log_dir=self.data_dir / "logs"),
            self.overrides))
        (self.data_dir / "log4j.properties").write_text(LOG4J_PROPERTIES.format(log_file=self.log_file))
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        scram = [arg for credential in self.scram_credentials for arg in ("--add-scram", credential)]
        for attempt in range(3):
            cluster_id = _cluster_id()
            proc = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), "--ignore-formatted", *scram),
                capture_output=True, text=True,
            )
            if proc.returncode == 0:
                return
            time.sleep(1 + attempt)
        raise BrokerError(f"formatting KRaft storage failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def start(self, timeout: float = 90.0) -> None:
        if self.running_pid() is not None and port_open("127.0.0.1", self.port):
            return
        for p in (self.port, self.controller_port):
            if port_open("127.0.0.1", p):
                raise BrokerError(f"port {p} on 127.0.0.1 is taken; stop what uses it or set STREAM_APP_KAFKA_PORT")
        self.format()
        out = open(self.data_dir / "broker.stdout", "ab")
        proc = subprocess.Popen(
            self._java("kafka.Kafka", str(self.data_dir / "server.properties")),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"Kafka exited with {proc.returncode}; see {self.log_file} and {self.data_dir / 'broker.stdout'}")
            if port_open("127.0.0.1", self.port) and self._serves():
                return
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"Kafka did not accept connections on {self.bootstrap} within {timeout:.0f} s; see {self.log_file}")

    def _serves(self) -> bool:
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000, client_id="stream-app-probe")
        except Exception:
            return False
        try:
            admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            admin.close()

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.running_pid()
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                # reap if it is our child
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pid_file.unlink(missing_ok=True)
