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

Everything runs on the driver's thread, between two polls (`poll` takes what the reader has buffered,
at most `max_records`), so a copy is never written while the same partition's owner store is open: on
assignment the driver takes the open store from here (`take`) and the reader stops following it; on
revocation the driver closes its own store first and then starts following the partition again.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from . import metrics
from .restore import fitted_position
from .store import PartitionStore

log = logging.getLogger(__name__)
POSITION_PATIENCE_S = 5.0  # asking a changelog partition's offsets when a copy starts (on the driver's thread)
MAX_RECORDS_PER_POLL = 5_000  # per loop turn: the copies must not starve the partitions this process owns


class StandbyCopies:
    def __init__(self, reader: Consumer, changelog_topic: str, open_store: Callable[[int], PartitionStore],
                 max_records: int = MAX_RECORDS_PER_POLL) -> None:
        self.reader = reader
        self.changelog_topic = changelog_topic
        self.open_store = open_store
        self.max_records = max_records
        self.stores: dict[int, PartitionStore] = {}

    def follow(self, partitions: Iterable[int]) -> None:
        """Start keeping a copy of each partition (those already followed are left as they are)."""
        new = sorted(set(partitions) - set(self.stores))
        if not new:
            return
        assignments = []
        deadline = time.monotonic() + POSITION_PATIENCE_S
        for partition in new:
            store = self.open_store(partition)
            try:
                _low, _high, start = fitted_position(self.reader, store, POSITION_PATIENCE_S, deadline)
            except KafkaException as exc:  # the cluster does not answer: tried again at the next refresh
                store.close()
                log.warning("standby copy of partition %d: its changelog's offsets are not known (%s); trying again later",
                            partition, exc)
                continue
            self.stores[partition] = store
            assignments.append(TopicPartition(self.changelog_topic, partition, start if start is not None else OFFSET_BEGINNING))
        if not assignments:
            return
        self.reader.incremental_assign(assignments)
        metrics.STANDBY_PARTITIONS.set(len(self.stores))
        log.info("standby copies: following changelog partitions %s (%s in all)", sorted(tp.partition for tp in assignments),
                 sorted(self.stores))

    def take(self, partition: int) -> PartitionStore | None:
        """The copy of a partition now assigned to this process, open, for its restore to finish; it is
        followed no more. None when there is no copy."""
        store = self.stores.pop(partition, None)
        if store is not None:
            self.reader.incremental_unassign([TopicPartition(self.changelog_topic, partition)])
            metrics.STANDBY_PARTITIONS.set(len(self.stores))
        return store

    def poll(self) -> int:
        """Apply what the reader has buffered (at most `max_records`); returns the records applied."""
        if not self.stores:
            return 0
        chunks: dict[int, list[tuple[bytes, bytes | None]]] = {}
        positions: dict[int, int] = {}
        for message in self.reader.consume(self.max_records, 0):
            partition = message.partition()
            if partition not in self.stores:  # fetched just before it was taken
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    # past the last record: its transaction's commit marker
                    positions[partition] = max(positions.get(partition, 0), message.offset())
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("standby copy of partition %d: %s (the reader retries)", partition, error)
                continue
            chunks.setdefault(partition, []).append((message.key(), message.value()))
            positions[partition] = message.offset() + 1
        applied = 0
        for partition, next_offset in positions.items():
            records = chunks.get(partition, [])
            store = self.stores[partition]
            if records or next_offset != store.next_changelog_offset():
                store.write_restored(records, next_offset)
            applied += len(records)
        if applied:
            metrics.STANDBY_RECORDS.inc(applied)
        return applied

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        metrics.STANDBY_PARTITIONS.set(0)
