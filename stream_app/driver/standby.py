"""Standby copies: local stores kept close to the changelog for the partitions this process does not own
(`STREAM_APP_STANDBY=on`, issue #14).

librdkafka's assignors cannot be told to move a partition to the member that holds a warm copy of it
(docs/reliability.md, "Where a partition lands"), so a process with standbys follows *every* input
partition it does not own. When one of them is assigned to it, the restore finds a store whose changelog
position is close to the end and reads only the tail, instead of the whole changelog.

The copies are written exactly as a restore writes: raw changelog records, read_committed, in one
`WriteBatch` with the position after them (`PartitionStore.write_restored`), never decoded. So a copy
is always a prefix of the committed changelog, and the restore on assignment stays the authority: it
checks the position against the changelog (a recreated topic wipes the copy) and reads what is left.
While a copy is followed, a position that no longer fits (the topic recreated meanwhile) makes the
reader report an offset reset (`auto.offset.reset=error`): the copy is wiped and read from the start.

Everything runs on the driver's thread, between two polls, so a copy is never written while the same
partition's owner store is open: on assignment the driver takes the open store from here (`take`) and
the reader stops following it; on revocation the driver closes its own store first and then starts
following the partition again. The work per loop turn is bounded: at most one copy opened (opening
checks every block), and what the reader has buffered applied for at most `budget_s`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from . import metrics
from .restore import changelog_record, fitted_position
from .store import PartitionStore

log = logging.getLogger(__name__)
POSITION_PATIENCE_S = 5.0  # asking a changelog partition's offsets when a copy starts (on the driver's thread)
BUDGET_S = 0.05  # per loop turn, applying records: the copies must not starve the partitions this process owns
CHUNK = 2_000
LAG_EVERY_S = 5.0
WARN_EVERY_S = 60.0


class StandbyCopies:
    def __init__(self, reader: Consumer, changelog_topic: str, open_store: Callable[[int], PartitionStore],
                 budget_s: float = BUDGET_S) -> None:
        self.reader = reader  # read_committed, auto.offset.reset=error (SlotConfig.reader)
        self.changelog_topic = changelog_topic
        self.open_store = open_store
        self.budget_s = budget_s
        self.stores: dict[int, PartitionStore] = {}
        self.positions: dict[int, int] = {}  # the next changelog offset each copy has not applied
        self._lag_at = 0.0
        self._warned: dict[tuple[int, int], float] = {}

    def follow(self, partitions: Iterable[int]) -> bool:
        """Start keeping a copy of these partitions (those already followed are left as they are), at most
        one new copy per call. Returns True when some are still to start (call again at the next turn)."""
        new = sorted(set(partitions) - set(self.stores))
        if not new:
            return False
        partition = new[0]
        store = self.open_store(partition)
        try:
            low, _high, start = fitted_position(self.reader, store, POSITION_PATIENCE_S, time.monotonic() + POSITION_PATIENCE_S)
        except KafkaException as exc:  # the cluster does not answer: tried again at the next refresh
            store.close()
            self._warn(partition, -1, "its changelog's offsets are not known (%s); trying again later", exc)
            return False
        self.stores[partition] = store
        self.positions[partition] = start if start is not None else low
        self.reader.incremental_assign([TopicPartition(self.changelog_topic, partition,
                                                       start if start is not None else OFFSET_BEGINNING)])
        metrics.STANDBY_PARTITIONS.set(len(self.stores))
        log.info("standby copies: following changelog partition %d from offset %s (%s in all)", partition,
                 start if start is not None else "the start", sorted(self.stores))
        return len(new) > 1

    def take(self, partition: int) -> PartitionStore | None:
        """The copy of a partition now assigned to this process, open, for its restore to finish; it is
        followed no more. None when there is no copy."""
        store = self.stores.pop(partition, None)
        self.positions.pop(partition, None)
        if store is not None:
            self.reader.incremental_unassign([TopicPartition(self.changelog_topic, partition)])
            metrics.STANDBY_PARTITIONS.set(len(self.stores))
        return store

    def poll(self) -> int:
        """Apply what the reader has buffered, for at most `budget_s`; returns the records applied."""
        if not self.stores:
            return 0
        deadline = time.monotonic() + self.budget_s
        applied = 0
        while True:
            messages = self.reader.consume(CHUNK, 0)
            applied += self._apply(messages)
            if len(messages) < CHUNK or time.monotonic() >= deadline:
                break
        if applied:
            metrics.STANDBY_RECORDS.inc(applied)
        if time.monotonic() - self._lag_at >= LAG_EVERY_S:
            self._lag_at = time.monotonic()
            metrics.STANDBY_LAG.set(self.lag())
        return applied

    def lag(self) -> int:
        """Changelog records the copies have not applied, as of the reader's last fetch of each partition."""
        behind = 0
        for partition, position in self.positions.items():
            try:
                _low, high = self.reader.get_watermark_offsets(TopicPartition(self.changelog_topic, partition), cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                behind += max(0, high - position)
        return behind

    def _apply(self, messages: list) -> int:  # type: ignore[type-arg]
        chunks: dict[int, list[tuple[bytes, bytes | None, bytes | None]]] = {}
        positions: dict[int, int] = {}
        for message in messages:
            partition = message.partition()
            if partition not in self.stores:  # fetched just before it was taken
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    # past the last record: its transaction's commit marker
                    positions[partition] = max(positions.get(partition, 0), message.offset())
                elif error.code() == KafkaError._AUTO_OFFSET_RESET:
                    chunks.pop(partition, None)
                    positions.pop(partition, None)
                    self._start_over(partition, error)
                elif error.fatal():
                    raise KafkaException(error)
                else:
                    self._warn(partition, error.code(), "%s (the reader retries)", error)
                continue
            chunks.setdefault(partition, []).append(changelog_record(message))
            positions[partition] = message.offset() + 1
        applied = 0
        for partition, next_offset in positions.items():
            if partition not in self.stores:
                continue
            records = chunks.get(partition, [])
            if records or next_offset > self.positions.get(partition, -1):
                self.stores[partition].write_restored(records, next_offset)
                self.positions[partition] = next_offset
            applied += len(records)
        return applied

    def _start_over(self, partition: int, error: KafkaError) -> None:
        """The copy's position does not fit the changelog any more (recreated, or its start moved past
        it): wipe the copy and read the partition from the start."""
        log.warning("standby copy of partition %d: its position no longer fits the changelog (%s); it is wiped "
                    "and read again from the start", partition, error.str())
        tp = TopicPartition(self.changelog_topic, partition)
        self.reader.incremental_unassign([tp])
        self.stores[partition].wipe()
        self.positions[partition] = 0
        self.reader.incremental_assign([TopicPartition(self.changelog_topic, partition, OFFSET_BEGINNING)])

    def _warn(self, partition: int, code: int, message: str, *args: object) -> None:
        """A warning about a copy, at most once a minute per partition and error."""
        now = time.monotonic()
        if now - self._warned.get((partition, code), -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[(partition, code)] = now
            log.warning("standby copy of partition %d: " + message, partition, *args)

    def close(self) -> None:
        """Close every copy and the reader (at the process's end)."""
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        self.positions.clear()
        metrics.STANDBY_PARTITIONS.set(0)
        metrics.STANDBY_LAG.set(0)
        self.reader.close()
