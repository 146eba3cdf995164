"""A local Apache Kafka (KRaft) that the project owns, for the demo and the tests: one combined broker +
controller (`LocalKafka`), or a cluster of three of them on loopback (`LocalKafkaCluster`)."""

from .cluster import LocalKafkaCluster
from .local_kafka import LocalKafka, fetch_kafka, kafka_version

__all__ = ["LocalKafka", "LocalKafkaCluster", "fetch_kafka", "kafka_version"]
