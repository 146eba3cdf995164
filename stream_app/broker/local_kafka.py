"""Fetch, format, start and stop a local Apache Kafka broker (combined broker + controller, KRaft).
A node of a several-node cluster on loopback is the same class (``node_id``, ``quorum_voters``, ``cluster_id``;
``stream_app/broker/cluster.py`` puts three together).

Maven resolves ``org.apache.kafka:kafka_2.13`` and its runtime dependencies from the package's ``broker/pom.xml``
(``deploy/kafka/pom.xml`` in a checkout)
into a cache folder (``$STREAM_APP_CACHE``, default ``~/.cache/stream-app``), one folder per version.
The version is ``$STREAM_APP_KAFKA_VERSION`` if set, else the pom's ``<kafka.version>``; 3.x and 4.x
brokers are both supported (4.x logs through log4j2 instead of reload4j: the pom's ``kafka4`` profile).
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

from ..resources import package_file

POM = package_file("broker", "pom.xml")  # deploy/kafka/pom.xml in a checkout links to it


class BrokerError(RuntimeError):
    pass


VERSION_ENV = "STREAM_APP_KAFKA_VERSION"
# the versions tests/test_local_broker.py starts; the default (the pom's <kafka.version>) is one of them
TESTED_KAFKA_VERSIONS = ("3.9.1", "4.4.0")
_VERSION_RE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")


def default_kafka_version() -> str:
    """The pom's ``<kafka.version>``: the version used when ``$STREAM_APP_KAFKA_VERSION`` is not set."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:
        raise BrokerError(f"{POM} has no <kafka.version>")
    return match.group(1)


def kafka_version() -> str:
    """The broker version to fetch and run: ``$STREAM_APP_KAFKA_VERSION``, else the pom's default."""
    version = os.environ.get(VERSION_ENV, "").strip() or default_kafka_version()
    return _checked(version)


def _checked(version: str) -> str:
    if not _VERSION_RE.fullmatch(version):
        raise BrokerError(f"Kafka version {version!r} is not of the form MAJOR.MINOR.PATCH (set {VERSION_ENV}, e.g. 4.4.0)")
    if int(version.split(".")[0]) < 3:
        raise BrokerError(f"Kafka {version} has no KRaft mode this module can run; use 3.x or 4.x")
    return version


def major_version(version: str | None = None) -> int:
    return int((version or kafka_version()).split(".")[0])


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def cache_root() -> Path:
    return Path(os.environ.get("STREAM_APP_CACHE", Path.home() / ".cache" / "stream-app"))


def libs_dir(version: str | None = None) -> Path:
    return cache_root() / f"kafka-{version or kafka_version()}" / "libs"


def _logging_jar(version: str) -> str:
    """The slf4j binding that a complete fetch of this version holds (3.x: reload4j; 4.x: log4j2)."""
    return "log4j-slf4j-impl-*.jar" if major_version(version) >= 4 else "slf4j-reload4j-*.jar"


def fetch_kafka(quiet: bool = True, version: str | None = None) -> Path:
    """Resolve the broker jars of ``version`` (default: :func:`kafka_version`) with Maven, once per
    version; later calls reuse the cache."""
    version = _checked(version) if version else kafka_version()
    target = libs_dir(version)
    if (target / f"kafka_2.13-{version}.jar").exists() and any(target.glob(_logging_jar(version))):
        return target
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is not on PATH; install Maven 3.8+ and Java 17 to fetch the local Kafka broker")
    if shutil.which("java") is None:
        raise BrokerError("java is not on PATH; install Java 17 to run the local Kafka broker")
    # a folder of this process's own: two processes fetching at once must not write into one folder
    partial = target.with_name(f"libs.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    profile = "kafka4" if major_version(version) >= 4 else "kafka3"
    cmd = ["mvn", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={partial}",
           "-DincludeScope=runtime", f"-Dkafka.version={version}", f"-P{profile}"]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=quiet, text=True)
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise BrokerError(f"Maven could not fetch Kafka {version}:\n{(proc.stdout or '')[-3000:]}{(proc.stderr or '')[-2000:]}")
    shutil.rmtree(target, ignore_errors=True)
    try:
        partial.rename(target)
    except OSError:  # another process put a complete folder there first
        shutil.rmtree(partial, ignore_errors=True)
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
node.id={node_id}
controller.quorum.voters={quorum_voters}
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

# 4.x only (unknown to 3.x): share groups (KIP-932; 4.4 formats with share.version=2, so they are on)
# keep their state in a topic that defaults to 3 replicas and min.isr 2, which one broker cannot host
SERVER_PROPERTIES_4X = """\
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
"""

# Kafka 3.x: reload4j (log4j 1.x), given by -Dlog4j.configuration
LOG4J_PROPERTIES = """\
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""

# Kafka 4.x: log4j2, given by -Dlog4j2.configurationFile (the same file, level and pattern as above)
LOG4J2_PROPERTIES = """\
status=warn
shutdownHook=disable
name=stream-app-local-kafka
appender.file.type=File
appender.file.name=file
appender.file.fileName={log_file}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
logger.brokerserver.name=kafka.server.BrokerServer
logger.brokerserver.level=INFO
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
    # the broker version; None: kafka_version() ($STREAM_APP_KAFKA_VERSION, else the pom's default)
    version: str | None = None
    # a node of a cluster (stream_app/broker/cluster.py): its id, the static quorum of every controller
    # ("1@127.0.0.1:9093,2@..."; None: this node alone) and the one cluster id all of them are formatted with
    # (None: a new one at the first format)
    node_id: int = 1
    quorum_voters: str | None = None
    cluster_id: str | None = None
    # set by format() when a 4.x broker is about to run on data of 3.x; start() then finalizes the features
    _upgrade_features: bool = field(default=False, init=False, repr=False)
    # the broker process launch() started (None: not started by this object)
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # checked by format() (through fetch_kafka), so that a bad $STREAM_APP_KAFKA_VERSION is a BrokerError
        # there rather than at construction
        self.version = self.version or os.environ.get(VERSION_ENV, "").strip() or default_kafka_version()

    @property
    def major(self) -> int:
        return major_version(self.version)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def _log_config(self) -> Path:
        return self.data_dir / ("log4j2.properties" if self.major >= 4 else "log4j.properties")

    def _java(self, main: str, *args: str) -> list[str]:
        classpath = str(libs_dir(self.version) / "*")
        if self.major >= 4:
            logging = [f"-Dlog4j2.configurationFile={self._log_config}"]
        else:
            logging = [f"-Dlog4j.configuration=file:{self._log_config}"]
        return [
            "java", f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            *logging, "-cp", classpath, main, *args,
        ]

    @property
    def _version_file(self) -> Path:
        """The newest Kafka version that ran on this data folder (none in folders made when only 3.9.1 ran)."""
        return self.data_dir / "kafka.version"

    def _recorded_version(self) -> str | None:
        try:
            return _checked(self._version_file.read_text().strip())
        except (FileNotFoundError, BrokerError):
            return None

    def format(self) -> None:
        fetch_kafka(version=self.version)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        formatted = (self.data_dir / "logs" / "meta.properties").exists()
        previous = self._recorded_version() if formatted else None
        if previous is not None and _version_key(previous) > _version_key(self.version):
            # "formatted directories are not forward-compatible" (kafka-storage format --help), and a newer
            # broker may have raised metadata.version (see _finalize_features)
            raise BrokerError(f"{self.data_dir} holds data of Kafka {previous}, which Kafka {self.version} cannot run on; "
                              f"set {VERSION_ENV}={previous} or remove that folder")
        config = self.data_dir / "server.properties"
        properties = SERVER_PROPERTIES + (SERVER_PROPERTIES_4X if self.major >= 4 else "")
        config.write_text(_with_overrides(
            properties.format(port=self.port, controller_port=self.controller_port, log_dir=self.data_dir / "logs",
                              node_id=self.node_id,
                              quorum_voters=self.quorum_voters or f"{self.node_id}@127.0.0.1:{self.controller_port}"),
            self.overrides))
        template = LOG4J2_PROPERTIES if self.major >= 4 else LOG4J_PROPERTIES
        self._log_config.write_text(template.format(log_file=self.log_file))
        if formatted:
            # data of an older version keeps its feature levels (4.x on 3.x data: metadata.version 3.9,
            # no group.version, so no KIP-848 groups) until start() finalizes the new ones. A folder without
            # kafka.version was made when 3.9.1 was the only version.
            if previous is None:
                self._upgrade_features = self.major >= 4
            else:
                self._upgrade_features = _version_key(previous) < _version_key(self.version)
            return
        scram = [arg for credential in self.scram_credentials for arg in ("--add-scram", credential)]
        for attempt in range(3):
            cluster_id = self.cluster_id or _cluster_id()
            # static quorum (controller.quorum.voters): 3.x and 4.x both format it without
            # --standalone / --initial-controllers, which are for a dynamic quorum (KIP-853)
            proc = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), "--ignore-formatted", *scram),
                capture_output=True, text=True,
            )
            if proc.returncode == 0:
                self._version_file.write_text(self.version + "\n")
                return
            time.sleep(1 + attempt)
        raise BrokerError(f"formatting KRaft storage for Kafka {self.version} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    def _finalize_features(self) -> None:
        """After an upgrade in place (e.g. 3.x data, 4.x broker): raise every feature to the highest level this
        broker supports, as a fresh format would have set it (`kafka-features upgrade`). metadata.version
        first: the other levels depend on it. kraft.version stays (a static quorum cannot change it).
        This cannot be undone; format() refuses to run an older version on the folder afterwards."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=15000, client_id="stream-app-features")
        try:
            for only_metadata in (True, False):
                updates = {}
                for name, levels in admin.describe_features().items():
                    if name == "kraft.version" or (name == "metadata.version") != only_metadata:
                        continue
                    highest = levels["supported"][1]
                    if levels.get("finalized", (0, 0))[1] < highest:
                        updates[name] = highest
                if not updates:
                    continue
                failed = {k: v for k, v in admin.update_features(updates).items() if v != "OK"}
                if failed:
                    raise BrokerError(f"Kafka {self.version} could not finalize the features {failed} on {self.data_dir}")
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:  # until the broker's own metadata shows them
                    features = admin.describe_features()
                    if all(features.get(k, {}).get("finalized", (0, 0))[1] >= v for k, v in updates.items()):
                        break
                    time.sleep(0.2)
        finally:
            admin.close()

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def start(self, timeout: float = 90.0) -> None:
        """Format on first use, start the broker and wait until it serves (nothing to do if it runs)."""
        if self.launch():
            self.wait_until_serving(timeout)

    def launch(self) -> bool:
        """Format on first use and start the broker process without waiting for it (a node of a cluster
        serves only once a quorum of its controllers runs). False if it already runs and serves."""
        if self.running_pid() is not None and port_open("127.0.0.1", self.port):
            return False
        for p in (self.port, self.controller_port):
            if port_open("127.0.0.1", p):
                raise BrokerError(f"port {p} on 127.0.0.1 is taken; stop what uses it or set STREAM_APP_KAFKA_PORT")
        self.format()
        with open(self.data_dir / "broker.stdout", "ab") as out:
            self._process = subprocess.Popen(
                self._java("kafka.Kafka", str(self.data_dir / "server.properties")),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.pid_file.write_text(str(self._process.pid))
        return True

    def wait_until_serving(self, timeout: float = 90.0) -> None:
        """Wait until the broker that launch() started answers a metadata request; stop it and raise
        BrokerError if it exits or does not answer within `timeout`."""
        proc = self._process
        if proc is None:
            raise BrokerError(f"the broker in {self.data_dir} was not launched by this object")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"Kafka {self.version} exited with {proc.returncode}; see {self.log_file} and {self.data_dir / 'broker.stdout'}")
            if port_open("127.0.0.1", self.port) and self._serves():
                if self._upgrade_features:
                    try:
                        self._finalize_features()
                    except Exception as exc:
                        self.stop()
                        raise exc if isinstance(exc, BrokerError) else BrokerError(
                            f"Kafka {self.version} could not finalize its features on {self.data_dir}: {exc!r}") from exc
                    self._upgrade_features = False
                recorded = self._recorded_version()
                if recorded is None or _version_key(recorded) < _version_key(self.version):
                    self._version_file.write_text(self.version + "\n")
                return
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"Kafka {self.version} did not accept connections on {self.bootstrap} within {timeout:.0f} s; see {self.log_file}")

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
        """SIGTERM (a controlled shutdown), then SIGKILL if it still runs after `timeout`."""
        self.send_signal(signal.SIGTERM)
        self.wait_stopped(timeout)

    def kill(self) -> None:
        """SIGKILL, as `kill -9`: no controlled shutdown, nothing flushed."""
        self.send_signal(signal.SIGKILL)
        self.wait_stopped(10.0)

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the broker's process group (nothing if it does not run)."""
        pid = self.running_pid()
        if pid is None:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass

    def wait_stopped(self, timeout: float = 30.0) -> None:
        """Wait until the broker's process is gone; SIGKILL it after `timeout`."""
        pid = self.running_pid()
        if pid is not None and not _exited(pid, timeout):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _exited(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)


def _exited(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` for process `pid` to end (reaping it if it is this process's child)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
