"""A local, single-node Apache Kafka (KRaft) broker that the project owns, for the demo and the tests."""

from .local_kafka import LocalKafka, fetch_kafka, kafka_version

__all__ = ["LocalKafka", "fetch_kafka", "kafka_version"]
