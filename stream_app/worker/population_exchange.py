"""Share RFM population summaries between workers through a compacted topic.

Every refresh interval each worker publishes one summary per input partition it owns (key = the
partition number) to `<app>.rfm-population`, and every worker reads that whole topic from the start
with a plain consumer (no group), keeping the latest summary per partition. The merged population is
the latest summaries of all partitions, so each worker scores its users against everyone's customers.
A partition that moves to another worker keeps its last summary until the new owner publishes one.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

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
        self.ready = False  # true once everything published before this process started has been read
        self.reader: Consumer | None = None

    def follow(self, reader: Consumer) -> None:
        """Read every summary ever published (read_committed: they are sent in transactions), then keep
        following; `poll` takes what has arrived, without waiting."""
        self.reader = reader
        reader.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])

    def poll(self) -> None:
        if self.reader is None:
            return
        for message in self.reader.consume(1000, 0):
            error = message.error()
            if error is None:
                self._receive(message.key(), message.value())
            elif error.code() == KafkaError._PARTITION_EOF:
                if not self.ready:
                    self.ready = True
                    log.info("RFM population: %d partition summaries read", len(self.latest))
            else:
                log.warning("RFM population topic: %s", error)

    def publish(self, out: Any, summaries: dict[int, PartitionSummary]) -> None:
        """Send this process's partition summaries in the open transaction."""
        for partition, summary in summaries.items():
            self.latest[partition] = summary
            out.send(self.topic, str(partition).encode(), summary.to_bytes(), 0)

    def newest_clock(self) -> int:
        return max((summary.clock for summary in self.latest.values()), default=0)

    def merged(self) -> RfmPopulation:
        return RfmPopulation(self.latest)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
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
