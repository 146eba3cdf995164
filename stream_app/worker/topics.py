"""Create the topics of the topic contract (docs/contracts.md) if they do not exist yet."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from ..settings import Settings
from .population_exchange import population_topic

log = logging.getLogger(__name__)


def topic_specs(settings: Settings) -> list[NewTopic]:
    n, rf = settings.partitions, settings.replication_factor
    return [
        NewTopic(settings.input_topic, n, rf),
        NewTopic(settings.ticks_topic, n, rf, topic_configs={"retention.ms": str(3600_000)}),
        NewTopic(settings.transitions_topic, n, rf),
        NewTopic(settings.memberships_topic, n, rf, topic_configs={"cleanup.policy": "compact"}),
        NewTopic(settings.dlq_topic, n, rf),
        # one partition: every worker reads every partition's RFM summary (key = input partition)
        NewTopic(population_topic(settings), 1, rf, topic_configs={"cleanup.policy": "compact"}),
    ]


def ensure_topics(settings: Settings) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id=f"{settings.app_id}-admin",
                             **settings.kafka_security.kafka_python_kwargs())
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics: %s", ", ".join(t.name for t in missing))
        described = admin.describe_topics([settings.input_topic, settings.ticks_topic])
        counts = {(d.get("name") or d.get("topic")): len(d["partitions"]) for d in described}
        if counts.get(settings.input_topic) != settings.partitions:
            raise SystemExit(
                f"topic {settings.input_topic} has {counts.get(settings.input_topic)} partitions but "
                f"STREAM_APP_PARTITIONS={settings.partitions}; set STREAM_APP_PARTITIONS to the topic's count"
            )
    finally:
        admin.close()
