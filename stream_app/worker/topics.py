"""Create the topics of the topic contract (README "Topic contracts") if they do not exist yet."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from ..driver.patience import Patience, unreachable
from ..settings import Settings
from .population_exchange import population_topic

log = logging.getLogger(__name__)
# Only the cleanup policy is set per topic, and on the compacted topics that hold users' data a bound on
# how long an old value may outlive its tombstone. Replication: STREAM_APP_REPLICATION_FACTOR, by default
# -1, which CreateTopics (Kafka 2.4+, KIP-464) resolves to the cluster's default.replication.factor;
# min.insync.replicas and everything else come from the brokers' defaults.
COMPACTED = {"cleanup.policy": "compact"}
# An erased or dropped user's older records in a compacted topic go when the cleaner compacts their
# segment, which may otherwise wait for ever (the active segment, a log below min.cleanable.dirty.ratio):
# max.compaction.lag.ms (KIP-354, Kafka 2.3+) makes it compact them within 7 days (docs/security.md, "Erasure")
USER_DATA_COMPACTED = {**COMPACTED, "max.compaction.lag.ms": str(7 * 24 * 3600 * 1000)}


def topic_specs(settings: Settings) -> list[NewTopic]:
    n, rf = settings.partitions, settings.replication_factor
    return [
        NewTopic(settings.input_topic, n, rf),
        NewTopic(settings.transitions_topic, n, rf),
        NewTopic(settings.memberships_topic, n, rf, config=USER_DATA_COMPACTED),
        NewTopic(settings.dlq_topic, n, rf),
        # the profiles' changelog: one partition per input partition, compacted
        NewTopic(settings.changelog_topic, n, rf, config=USER_DATA_COMPACTED),
        # one partition: every worker reads every partition's RFM summary (key = input partition)
        NewTopic(population_topic(settings), 1, rf, config=COMPACTED),
    ]


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.bootstrap_servers, "client.id": f"{settings.app_id}-admin",
                        **settings.kafka_security.librdkafka_config()})


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create the contract's missing topics and check their partition counts. A cluster that does not
    answer is waited for (`Patience`): a worker started into an outage starts when it ends."""
    admin = admin_client(settings)
    existing = Patience().call(f"connecting to Kafka at {settings.bootstrap_servers}", admin.list_topics, None, timeout_s).topics
    missing = [spec for spec in topic_specs(settings) if spec.topic not in existing]
    if missing:
        _create(admin, missing, timeout_s)
        log.info("created topics: %s (replication factor %s)", ", ".join(t.topic for t in missing),
                 "of the cluster's default" if settings.replication_factor == -1 else settings.replication_factor)
    count = _partition_count(admin, settings.input_topic, timeout_s)
    if count != settings.partitions:
        raise SystemExit(f"topic {settings.input_topic} has {count} partitions but STREAM_APP_PARTITIONS={settings.partitions}; "
                         "set STREAM_APP_PARTITIONS to the topic's count")
    changelog = _partition_count(admin, settings.changelog_topic, timeout_s)
    if changelog != settings.partitions:
        raise SystemExit(f"topic {settings.changelog_topic} has {changelog} partitions but the input topic has "
                         f"{settings.partitions}; the changelog must have one partition per input partition")


def _create(admin: AdminClient, specs: list[NewTopic], timeout_s: float) -> None:
    """Create `specs`; a topic that exists meanwhile is fine. A request lost on its way (librdkafka drops
    the bootstrap connection once it knows the cluster's brokers: `_DESTROY_BROKER`; a transport error; a
    timeout) is sent again until `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while specs:
        retry = []
        by_name = {spec.topic: spec for spec in specs}
        for topic, future in admin.create_topics(specs, operation_timeout=timeout_s, request_timeout=timeout_s).items():
            spec = by_name[topic]
            try:
                future.result()
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                lost = unreachable(error) or error.code() == KafkaError._DESTROY_BROKER  # sending it again is safe
                if lost and time.monotonic() < deadline:
                    retry.append(spec)
                    continue
                raise
        if retry:
            log.info("creating topics %s again: the request was lost on its way", ", ".join(t.topic for t in retry))
            time.sleep(0.5)
        specs = retry


def _partition_count(admin: AdminClient, topic: str, timeout_s: float) -> int | None:
    """The topic's partition count; a topic just created may take a moment to show its partitions."""
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(topic=topic, timeout=timeout_s).topics.get(topic)
        count = len(metadata.partitions) if metadata is not None and metadata.error is None else 0
        if count or time.monotonic() > deadline:
            return count or None
        time.sleep(0.1)
