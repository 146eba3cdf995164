"""The librdkafka clients of one process slot, configured in one place.

A process slot has a stable identity (`instance_id`): it is the consumer's `group.instance.id` (static
membership: a restarted slot gets its partitions back without a rebalance) and the suffix of the
producer's `transactional.id` (a restarted slot fences its predecessor's open transaction at once, in
`init_transactions`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer

# A dead process's open transaction blocks read_committed readers (and restores) of the partitions it
# wrote to until the broker aborts it: at most this long after its last write, plus the broker's check
# interval (transaction.abort.timed.out.transaction.cleanup.interval.ms, 10 s by default). A restarted
# slot does not wait for it: init_transactions fences and aborts it at once. Commits take milliseconds,
# so 10 s leaves a wide margin. (docs/reliability.md)
TRANSACTION_TIMEOUT_MS = 10_000
# librdkafka's own log lines, through Python's logging (served when the client is polled)
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


@dataclass(frozen=True)
class SlotConfig:
    bootstrap_servers: str
    group_id: str
    instance_id: str  # stable per process slot: hostname + data folder, or STREAM_APP_INSTANCE_ID
    session_timeout_ms: int = 10_000
    transaction_timeout_ms: int = TRANSACTION_TIMEOUT_MS
    security: dict[str, str] = field(default_factory=dict)  # librdkafka security.* / sasl.* / ssl.* properties
    extra_consumer: dict[str, Any] = field(default_factory=dict)
    extra_producer: dict[str, Any] = field(default_factory=dict)

    @property
    def transactional_id(self) -> str:
        return f"{self.group_id}-{self.instance_id}"

    def _common(self, client: str) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, "client.id": f"{self.group_id}-{self.instance_id}-{client}",
                "logger": LIBRDKAFKA_LOG, **self.security}

    def consumer_config(self) -> dict[str, Any]:
        return {
            **self._common("consumer"),
            "group.id": self.group_id,
            "group.instance.id": self.instance_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.session_timeout_ms // 4),
            "enable.auto.commit": False,  # offsets go into the producer's transactions
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **self.extra_consumer,
        }

    def producer_config(self) -> dict[str, Any]:
        return {
            **self._common("producer"),
            "transactional.id": self.transactional_id,
            "transaction.timeout.ms": self.transaction_timeout_ms,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # keys land where the Java client (and kafka-python, and the Faust worker) put them, so a
            # compacted topic keeps one record per key across the upgrade
            "partitioner": "murmur2_random",
            **self.extra_producer,
        }

    def reader_config(self, purpose: str, fetch_wait_ms: int = 500, offset_reset: str = "earliest") -> dict[str, Any]:
        """A plain reader without a group (changelog restore, the RFM exchange): read_committed, and
        an end-of-partition event so that "read to the end" needs no sleeping. A restore wants its
        end at once (`fetch_wait_ms` 10: the broker's long poll would add 500 ms to every restore);
        a follower that polls for ever keeps the default."""
        return {
            "fetch.wait.max.ms": fetch_wait_ms,
            **self._common(purpose),
            "group.id": f"{self.group_id}-{purpose}-unused",  # never joins: partitions are assigned
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": offset_reset,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
        }

    def admin_config(self) -> dict[str, Any]:
        # no logger: confluent-kafka serves an admin client's log only from its poll(), which nothing calls
        return {key: value for key, value in self._common("admin").items() if key != "logger"}

    def consumer(self, **callbacks: Any) -> Consumer:
        return Consumer({**self.consumer_config(), **callbacks})

    def producer(self, **callbacks: Any) -> Producer:
        return Producer({**self.producer_config(), **callbacks})

    def reader(self, purpose: str, fetch_wait_ms: int = 500, offset_reset: str = "earliest") -> Consumer:
        return Consumer(self.reader_config(purpose, fetch_wait_ms, offset_reset))
