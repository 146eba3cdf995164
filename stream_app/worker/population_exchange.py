"""Share RFM population summaries between workers through a compacted topic.

Every refresh interval each worker publishes one summary per input partition it owns (key = the
partition number) to `<app>.rfm-population`, and every worker reads that whole topic from the start
with a plain consumer (no group), keeping the latest summary per partition. The merged population is
the latest summaries of all partitions, so each worker scores its users against everyone's customers.
A partition that moves to another worker keeps its last summary until the new owner publishes one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from ..segments.rfm_population import PartitionSummary, RfmPopulation
from ..settings import Settings

log = logging.getLogger(__name__)


def population_topic(settings: Settings) -> str:
    return f"{settings.app_id}.rfm-population"


class PopulationExchange:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = population_topic(settings)
        self.latest: dict[int, PartitionSummary] = {}
        self.received = 0
        self.ready = False  # true once everything published before this worker started has been read

    async def publish(self, producer: Any, summaries: dict[int, PartitionSummary]) -> None:
        for partition, summary in summaries.items():
            self.latest[partition] = summary
            await producer.send(self.topic, str(partition).encode(), summary.to_bytes(), 0, None, None)

    def newest_clock(self) -> int:
        return max((summary.clock for summary in self.latest.values()), default=0)

    def merged(self) -> RfmPopulation:
        return RfmPopulation(self.latest)

    async def follow(self) -> None:
        """Read every summary ever published, then keep following; runs for the worker's lifetime."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False, group_id=None,
            client_id=f"{self.settings.app_id}-rfm-population", **self.settings.kafka_security.aiokafka_kwargs(),
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        self._receive(record.key, record.value)
                if not self.ready and await consumer.position(tp) >= end:
                    self.ready = True
                    log.info("RFM population: %d partition summaries read", len(self.latest))
        except asyncio.CancelledError:
            raise
        finally:
            await consumer.stop()

    def _receive(self, key: bytes | None, value: bytes | None) -> None:
        try:
            partition = int((key or b"").decode())
            if value is None:
                self.latest.pop(partition, None)
                return
            summary = PartitionSummary.from_bytes(value)
        except (ValueError, TypeError) as exc:
            log.warning("ignoring an unreadable RFM population summary: %s", exc)
            return
        current = self.latest.get(partition)
        if current is None or summary.clock >= current.clock:
            self.latest[partition] = summary
        self.received += 1
