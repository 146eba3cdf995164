"""A local Apache Kafka cluster of several nodes on loopback (KRaft), for tests that need a partition's
leader to die while the others carry on (tests/test_kafka_cluster_faults.py).

Each node is a :class:`LocalKafka` (the same jars, format, start and stop) in combined mode (broker and
controller), with its own ports and data folder, ``node.id`` 1..N, one static quorum of all N controllers
(``controller.quorum.voters``, formatted without ``--standalone`` / ``--initial-controllers`` on 3.x and
4.x alike) and one cluster id. The cluster's defaults are what a production cluster of three uses:
three replicas of every topic, two of them in sync for a write to succeed (``acks=all``), for the
consumer offsets and the transaction log as well. Nothing listens beyond loopback.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from contextlib import ExitStack
from pathlib import Path

from .local_kafka import BrokerError, LocalKafka, _checked, _cluster_id, kafka_version, major_version


def cluster_defaults(size: int, version: str) -> dict[str, str]:
    """Replication defaults of a cluster of `size` nodes: min(3, size) replicas, one fewer in sync."""
    replicas = min(3, size)
    in_sync = max(1, replicas - 1)
    defaults = {
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(in_sync),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(in_sync),
    }
    if major_version(version) >= 4:  # share groups' state topic (4.x only; the single broker sets 1 and 1)
        defaults.update({"share.coordinator.state.topic.replication.factor": str(replicas),
                         "share.coordinator.state.topic.min.isr": str(in_sync)})
    return defaults


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (each socket is held until all are chosen)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


class LocalKafkaCluster:
    """`size` combined broker + controller nodes in `data_dir`/node-<id>. ``start()`` formats each node on
    first use, starts all of them and waits until each serves; ``stop()`` stops them all. A single node is
    killed (``node(i).kill()``) and started again (``node(i).start()``) with LocalKafka's own methods."""

    def __init__(self, data_dir: Path, size: int = 3, version: str | None = None, heap: str = "512m",
                 overrides: dict[str, str] | None = None) -> None:
        if size < 1:
            raise BrokerError(f"a cluster needs at least one node, not {size}")
        self.data_dir = Path(data_dir)
        version = _checked(version) if version else kafka_version()
        ports = free_ports(2 * size)
        voters = ",".join(f"{i + 1}@127.0.0.1:{ports[2 * i + 1]}" for i in range(size))
        cluster_id = self._formatted_cluster_id(size) or _cluster_id()
        self.nodes = [
            LocalKafka(self.data_dir / f"node-{i + 1}", port=ports[2 * i], controller_port=ports[2 * i + 1], heap=heap,
                       version=version, node_id=i + 1, quorum_voters=voters, cluster_id=cluster_id,
                       overrides={**cluster_defaults(size, version), **(overrides or {})})
            for i in range(size)
        ]

    def _formatted_cluster_id(self, size: int) -> str | None:
        """The cluster id of a node formatted before (a cluster started again on the same folder): a node
        formatted anew must join the same cluster."""
        for i in range(size):
            meta = self.data_dir / f"node-{i + 1}" / "logs" / "meta.properties"
            if meta.exists():
                match = re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.MULTILINE)
                if match:
                    return match.group(1)
        return None

    @property
    def version(self) -> str:
        return self.nodes[0].version

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        """The node whose ``node.id`` (the broker id in metadata: a partition's leader) is `node_id`."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node {node_id} in the cluster ({[n.node_id for n in self.nodes]})")

    def start(self, timeout: float = 120.0) -> None:
        """Start every node that does not run and wait until each serves: a node answers only once a
        majority of the controllers runs, so all are launched before any is waited for."""
        deadline = time.monotonic() + timeout
        try:
            launched = [node for node in self.nodes if node.launch()]
            for node in launched:
                node.wait_until_serving(max(1.0, deadline - time.monotonic()))
            self.wait_until_registered(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def wait_until_registered(self, timeout: float) -> None:
        """Until the metadata lists every node as a broker: a node answers before the controller has
        registered it, and a topic created meanwhile with three replicas fails ("only 2 broker(s) are
        registered")."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + timeout
        while True:
            try:
                brokers = admin.list_topics(timeout=5).brokers
            except Exception:  # noqa: BLE001 - not answering yet: try again until the deadline
                brokers = {}
            if len(brokers) >= len(self.nodes):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"only {len(brokers)} of {len(self.nodes)} Kafka nodes registered as brokers after {timeout:.0f} s; "
                                  f"see the logs under {self.data_dir}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to every node at once (each shuts down while the quorum still stands), then wait for
        all; whatever still runs after `timeout` is killed."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.wait_stopped(max(0.0, deadline - time.monotonic()))
