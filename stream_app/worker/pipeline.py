"""Per batch: hand records to each partition's engine, produce its outputs and state, then persist locally.

Exactly once (docs/reliability.md): Faust runs with processing_guarantee="exactly_once", which gives
every input partition a transactional producer (fenced by its transactional id) and commits the input
offsets inside that transaction at every commit interval. This module sends a batch's transitions,
membership snapshots, dead letters *and* its changelog records through the transactional producer of
the partition the batch came from, so outputs, state and offsets become visible together or not at
all. Readers use read_committed. The local RocksDB copy may run ahead of the last commit; after an
unclean stop it is discarded and restored from the (read_committed) changelog, see `worker.app`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any, Iterator, Sequence

from ..engine import BatchResult, PartitionEngine, RawRecord
from ..segments.config import CatalogConfig
from ..segments.rfm_population import reference_for
from ..settings import Settings
from ..timeutil import format_timestamp
from . import metrics
from .faust_fixes import CommitStalled, CommitWatchdog, commit_watchdog, describe_offsets, send_in_one_transaction, skipped_offsets

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class PartitionStoreView:
    """The profile table's RocksDB partition, seen through the engine's small store interface."""

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition
        self.db = table.data._db_for_partition(partition)

    def get(self, key: str) -> bytes | None:
        return self.db.get(key.encode("utf-8", "surrogatepass"))

    def items(self) -> Iterator[tuple[str, bytes]]:
        for key, value in self.table.data._visible_items(self.db):
            if key.startswith(b"__faust"):
                continue
            yield key.decode("utf-8", "surrogatepass"), value

    def changelog_topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def write_local(self, writes: dict[str, bytes | None], changelog_offset: int | None = None) -> None:
        """Apply one batch's profile writes to the local RocksDB partition (once they are in the
        partition's transaction), and record the changelog offset Kafka acknowledged, when known."""
        db = self.db
        for key, value in writes.items():
            raw_key = key.encode("utf-8", "surrogatepass")
            if value is None:
                if db.get(raw_key) is not None:
                    del db[raw_key]
            else:
                db[raw_key] = value
        if changelog_offset is not None:
            from faust.types import TP

            self.table.data.set_persisted_offset(TP(self.changelog_topic(), self.partition), changelog_offset)


class SegmentationPipeline:
    def __init__(self, app: Any, settings: Settings, table: Any, cfg: CatalogConfig) -> None:
        self.app = app
        self.settings = settings
        self.table = table
        self.cfg = cfg
        self.engines: dict[int, tuple[PartitionEngine, PartitionStoreView]] = {}
        self.population: dict[int, Counter] = {}
        self.last_offset: dict[int, int] = {}
        self.reevaluate: set[int] = set()
        self.loaded_at = now_ms()
        self.rfm_population: Any = None
        self.rfm_refresh: set[int] = set()  # partitions to re-score against rfm_population at their next tick
        self.rfm_refreshed_at = 0
        self._in_flight: list[tuple[PartitionStoreView, list[Any], int]] = []
        self._next_offset: dict[Any, int] = {}  # per source partition: the offset after the last record processed

    def set_config(self, cfg: CatalogConfig) -> None:
        """New definitions: each partition decides every user again at its next tick, in its transaction."""
        self.cfg = replace(cfg, rfm_population=self.rfm_population)
        self.loaded_at = now_ms()
        self.reevaluate = set(self.engines)

    def rfm_refresh_due(self, wall_ms: int) -> bool:
        if not self.cfg.rfm_enabled or not self.engines:
            return False
        return wall_ms - self.rfm_refreshed_at >= self.cfg.rfm_refresh_ms

    def rfm_summaries(self, known_clock: int = 0) -> dict[int, Any]:
        """Summaries of the owned partitions, all measured from one reference: the newest partition
        clock known (``known_clock`` covers other workers' partitions), rounded down to the hour."""
        self.rfm_refreshed_at = now_ms()
        newest = max([known_clock, *(engine.clock for engine, _view in self.engines.values())])
        reference = reference_for(newest)
        return {partition: engine.rfm_summary(reference) for partition, (engine, _view) in self.engines.items()}

    def set_population(self, population: Any) -> None:
        self.rfm_population = population
        self.cfg = replace(self.cfg, rfm_population=population)
        self.rfm_refresh = set(self.engines)
        metrics.RFM_POPULATION.set(population.size)

    def forget_partitions(self) -> None:
        """After a rebalance every engine is rebuilt from the table on first use."""
        self.engines.clear()
        self.population.clear()
        self._next_offset = {}  # the partitions start again from their committed offsets
        self._publish_population()

    def _engine(self, partition: int) -> tuple[PartitionEngine, PartitionStoreView]:
        found = self.engines.get(partition)
        if found is None:
            view = PartitionStoreView(self.table, partition)
            engine = PartitionEngine(partition, view, self.cfg, max_event_bytes=self.settings.max_event_bytes)
            started = time.monotonic()
            self.population[partition] = engine.rebuild_schedule()
            self._publish_population()
            log.info("partition %d: schedule rebuilt for %d profiles in %.2f s", partition, len(engine.schedule), time.monotonic() - started)
            if engine.saved_definitions is not None and engine.saved_definitions != self.cfg.version:
                # the definitions changed while this partition was not being processed (worker down,
                # or a crash before a re-decision committed): decide everyone again
                log.info("partition %d: stored memberships were decided under other definitions; deciding again", partition)
                self.reevaluate.add(partition)
            found = self.engines[partition] = (engine, view)
        return found

    def _publish_population(self) -> None:
        total: Counter = Counter()
        for counter in self.population.values():
            total.update(counter)
        for (segment, member), count in total.items():
            metrics.POPULATION.labels(segment, member).set(count)

    async def process(self, events: Sequence[Any]) -> None:
        """Process one batch. Faust acknowledges a batch's records when the agent is done with it, also
        when processing failed: then the worker stops and commits nothing more (status 70, restarted
        by its supervisor), which also covers records Faust dropped before they got here."""
        before, after = self._next_offset, {}
        skipped = skipped_offsets(getattr(self.app, "_consumer", None), before, (event.message for event in events), after)
        if skipped:
            raise await self._fail(f"records were skipped, never processed: {describe_offsets(skipped)}")
        try:
            await self._process(events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(f"processing a batch failed ({exc!r}); its records are acknowledged but not all processed")
            raise
        # only now: a batch that fails half-way counts as skipped at the next one; and not after a
        # rebalance during the batch, when every partition starts again from its committed offset
        if self._next_offset is before:
            self._next_offset = after

    async def _process(self, events: Sequence[Any]) -> None:
        wall = now_ms()
        records: dict[int, list[RawRecord]] = defaultdict(list)
        ticked: set[int] = set()
        ticks_topic = self.settings.ticks_topic
        for event in events:
            message = event.message
            if message.topic == ticks_topic:
                ticked.add(message.partition)
            else:
                records[message.partition].append(RawRecord(message.value or b"", message.topic, message.partition, message.offset))
        for partition in sorted(set(records) | ticked):
            engine, view = self._engine(partition)
            source = self.settings.input_topic if partition in records else ticks_topic
            # changed definitions and a new RFM population take effect before the batch's events
            if partition in self.reevaluate:
                self.reevaluate.discard(partition)
                await self._commit_result(partition, source, view, engine.reevaluate_all(self.cfg, now_ms(), self.loaded_at))
            if partition in self.rfm_refresh and self.rfm_population is not None:
                self.rfm_refresh.discard(partition)
                await self._commit_result(partition, source, view, engine.refresh_population(self.rfm_population, now_ms()))
            if partition in records:
                batch = records[partition]
                metrics.BATCH_SIZE.observe(len(batch))
                await self._commit_result(partition, self.settings.input_topic, view, engine.handle(batch, wall))
                self.last_offset[partition] = batch[-1].offset
            if partition in ticked:
                metrics.CLOCK_TICKS.inc()
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("tick p%d clock=%d due=%s", partition, engine.clock, engine.next_due())
                await self._commit_result(partition, ticks_topic, view, engine.tick(now_ms(), self._caught_up(partition)))
            metrics.PARTITION_CLOCK.labels(str(partition)).set(engine.clock / 1000)
        await self._confirm()
        self._update_lag(set(records) | ticked)

    async def _fail(self, problem: str) -> CommitStalled:
        """Crash the worker (status 70, restarted by its supervisor) and commit nothing more."""
        # the producer's watchdog (run_worker installs it) also refuses every later commit; an app
        # without one (the unit tests) is only crashed
        watchdog = commit_watchdog(getattr(self.app, "producer", None)) or CommitWatchdog()
        return await watchdog.fail(self.app, problem)

    async def _commit_result(self, partition: int, source_topic: str, view: PartitionStoreView, result: BatchResult) -> None:
        """Hand a result's records to the partition's transaction and apply its profile writes locally
        (the next step on this partition reads them). Kafka's acknowledgements are awaited once per
        batch, for all partitions together, in `_confirm`."""
        futures, outputs = await self._produce(partition, source_topic, view, result)
        view.write_local(result.writes)
        self._in_flight.append((view, futures, outputs))
        self._observe(partition, result)

    async def _confirm(self) -> None:
        """Wait until Kafka has every record of this batch; then record each changelog's offset."""
        pending, self._in_flight = self._in_flight, []
        acknowledged = await asyncio.gather(*(asyncio.gather(*futures) for _view, futures, _outputs in pending))
        for (view, _futures, outputs), metadata in zip(pending, acknowledged):
            offset = max((m.offset for m in metadata[outputs:]), default=None)
            if offset is not None:
                view.write_local({}, offset)

    def _transactional_id(self, topic: str, partition: int) -> str:
        group = self.app.assignor.group_for_topic(topic)
        return f"{self.app.conf.id}-{group}-{partition}"

    async def _produce(self, partition: int, source_topic: str, view: PartitionStoreView, result: BatchResult) -> tuple[list[Any], int]:
        """Send a batch's outputs and its changelog records in the source partition's transaction.
        Returns the delivery futures and how many of them are outputs (the rest are changelog)."""
        producer = self.app.producer
        settings = self.settings
        tid = self._transactional_id(source_topic, partition)
        records: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        for record in result.transitions:
            records.append((settings.transitions_topic, record["user_id"].encode("utf-8", "surrogatepass"), _json(record), None))
        for user_id, snapshot in result.memberships.items():
            records.append((settings.memberships_topic, user_id.encode("utf-8", "surrogatepass"), None if snapshot is None else _json(snapshot), None))
        for record, invalid in result.dead_letters:
            letter = {
                "reason": invalid.reason.value,
                "detail": invalid.detail,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "original": base64.b64encode(record.value).decode(),
                "received_at": format_timestamp(now_ms()),
            }
            records.append((settings.dlq_topic, None, _json(letter), None))
        outputs = len(records)
        changelog = view.changelog_topic()
        for key, value in result.writes.items():
            records.append((changelog, key.encode("utf-8", "surrogatepass"), value, partition))
        futures = await send_in_one_transaction(producer, tid, records)
        return futures, outputs

    def _observe(self, partition: int, result: BatchResult) -> None:
        counts = result.counts
        for key, value in counts.items():
            if key.startswith("type:"):
                metrics.EVENTS_CONSUMED.labels(key[5:]).inc(value)
        if counts.get("duplicate"):
            metrics.DUPLICATES.inc(counts["duplicate"])
        if counts.get("late"):
            metrics.LATE_EVENTS.inc(counts["late"])
            log.info("partition %d: %d events older than the partition clock (%s) were applied late",
                     partition, counts["late"], format_timestamp(result.clock))
        if counts.get("dropped_dormant"):
            metrics.DROPPED_DORMANT.inc(counts["dropped_dormant"])
        for _record, invalid in result.dead_letters:
            metrics.DEAD_LETTERS.labels(invalid.reason.value).inc()
        population = self.population.setdefault(partition, Counter())
        for record in result.transitions:
            metrics.observe_transition(record)
            if record["from"] is not None:
                population[(record["segment"], record["from"])] -= 1
            if record["to"] is not None:
                population[(record["segment"], record["to"])] += 1
        emitted = now_ms()
        for at in result.transition_times:
            metrics.EMIT_LATENCY.observe(max(0.0, (emitted - at) / 1000))

    def _caught_up(self, partition: int) -> bool:
        """True when every input record of the partition that Kafka has is processed (lag 0)."""
        lag = self._lag(partition)
        # <= 1: a transactional producer upstream leaves a commit marker after its last record, which
        # the high-water mark counts but no consumer ever receives
        return lag is not None and lag <= 1

    def _lag(self, partition: int) -> int | None:
        consumer = getattr(self.app, "consumer", None)
        if consumer is None:
            return None
        from faust.types import TP

        tp = TP(self.settings.input_topic, partition)
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # unknown until the first fetch response
            return None
        if highwater is None:
            return None
        committed = getattr(consumer, "_committed_offset", {}).get(tp) or 0
        position = max(self.last_offset.get(partition, -1) + 1, committed)
        return max(0, highwater - position)

    def _update_lag(self, partitions: set[int]) -> None:
        for partition in partitions:
            lag = self._lag(partition)
            if lag is not None:
                metrics.CONSUMER_LAG.labels(str(partition)).set(lag)
