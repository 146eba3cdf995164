"""Bring partition stores up to date with their changelog partitions.

Each store remembers the next changelog offset it has not applied (`PartitionStore`); a restore reads
from there to the end of the partition with a read_committed reader and writes the raw records in one
`WriteBatch` per chunk, with the position after them, and each profile's schedule entry from the
record's header (engine/schedule_entry.py) beside it. Nothing is decoded. A store whose position does
not fit the changelog (the topic was recreated, or the log starts later) is wiped and read from the
start. "The end" is librdkafka's end-of-partition event, so an open transaction of a dead process
delays a restore until the broker aborts it (docs/reliability.md); nothing here sleeps.

A chunk refused by a full or read-only disk stops the restore with the store's `LocalStateUnwritable`:
the chunks already written stay, with their position, and the next start goes on from there. Nothing
is wiped for it; a store is wiped only when its position does not fit the changelog (a corrupt copy was
already moved aside when the store was opened, store.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from . import metrics
from ..engine.schedule_entry import HEADER as ENTRY_HEADER
from .patience import kafka_error, unreachable
from .store import PartitionStore

log = logging.getLogger(__name__)
CHUNK = 20_000
# while a broker dies, the changelog partition's leader moves: the reader's metadata lacks it for a moment
LEADER_MOVING = frozenset({KafkaError._UNKNOWN_PARTITION,
                           KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION})
LEADER_PATIENCE_S = 60.0


def restore(reader: Consumer, stores: Sequence[PartitionStore], timeout_s: float = 10.0,
            after_chunk: Callable[[], None] | None = None) -> int:
    """Restore every store; returns the number of changelog records read. `after_chunk` (tests only)
    runs after each chunk written locally."""
    assignments: list[TopicPartition] = []
    by_partition = {}
    remaining = 0
    deadline = time.monotonic() + LEADER_PATIENCE_S  # one patience for every partition of this restore
    for store in stores:
        tp = TopicPartition(store.changelog_topic, store.partition)
        low, high, start = fitted_position(reader, store, timeout_s, deadline)
        if (start if start is not None else low) >= high:  # nothing to read (an empty changelog partition)
            continue
        remaining += high - (start if start is not None else low)
        assignments.append(TopicPartition(tp.topic, tp.partition, start if start is not None else OFFSET_BEGINNING))
        by_partition[store.partition] = store
    if not assignments:
        if stores:  # said all the same: an operator (and a test) reads what a restore had to do
            log.info("partitions %s: nothing to restore from the changelog, the local copies are current",
                     sorted(store.partition for store in stores))
        return 0
    metrics.RESTORE_REMAINING.set(remaining)
    started = time.monotonic()
    reader.assign(assignments)
    read = 0
    pending = set(by_partition)
    reported = started
    try:
        while pending:
            chunks: dict[int, list[tuple[bytes, bytes | None, bytes | None]]] = {}
            positions: dict[int, int] = {}
            for message in reader.consume(CHUNK, timeout=0.05):
                error = message.error()
                partition = message.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        positions[partition] = message.offset()
                        pending.discard(partition)
                        continue
                    if error.fatal() or not error.retriable():
                        raise KafkaException(error)
                    log.warning("restoring partition %s: %s (retrying)", partition, error)
                    continue
                chunks.setdefault(partition, []).append(changelog_record(message))
                positions[partition] = message.offset() + 1
            for partition, next_offset in positions.items():
                by_partition[partition].write_restored(chunks.get(partition, []), next_offset)
            batch = sum(len(c) for c in chunks.values())
            if batch and after_chunk is not None:
                after_chunk()
            read += batch
            metrics.RESTORED_RECORDS.inc(batch)
            metrics.RESTORE_REMAINING.set(max(0, remaining - read))
            if time.monotonic() - reported > 5:
                reported = time.monotonic()
                log.info("restoring %d partitions: %d of about %d changelog records read", len(by_partition), read, remaining)
    finally:
        reader.unassign()
        metrics.RESTORE_REMAINING.set(0)
    log.info("restored partitions %s from the changelog: %d records in %.2f s", sorted(by_partition), read, time.monotonic() - started)
    return read


def changelog_record(message: Any) -> tuple[bytes, bytes | None, bytes | None]:
    """(key, profile or None for a tombstone, the profile's schedule entry from the record's header or
    None: written without one). A tombstone's header is not read (the header costs 1 to 2 us of CPU a
    record: benchmarks/restore_read.py)."""
    value = message.value()
    if value is not None:
        headers = message.headers()
        if headers:
            for name, entry in headers:
                if name == ENTRY_HEADER:
                    return message.key(), value, entry
    return message.key(), value, None


def fitted_position(reader: Consumer, store: PartitionStore, timeout_s: float, deadline: float) -> tuple[int, int, int | None]:
    """The changelog partition's low and high offsets, and the store's position in it: None (read from
    the start) when it has none, or when it does not fit the changelog (the topic was recreated, or the
    log starts later), and then the store is wiped."""
    tp = TopicPartition(store.changelog_topic, store.partition)
    low, high = _watermarks(reader, tp, timeout_s, deadline)
    start = store.next_changelog_offset()
    if start is not None and not (low <= start <= high):
        log.warning("partition %d: the local state's changelog position %d is outside the changelog (%d..%d); "
                    "it is discarded and restored from the start", store.partition, start, low, high)
        store.wipe()
        start = None
    return low, high, start


def _watermarks(reader: Consumer, tp: TopicPartition, timeout_s: float, deadline: float, pause_s: float = 1.0) -> tuple[int, int]:
    """The changelog partition's low and high offsets, asked again until the monotonic `deadline` while its
    leader moves or the cluster does not answer (a restore right after a broker's loss); then the error
    stands. Each attempt waits at most `timeout_s`, and never past the deadline by much."""
    reported = 0.0
    while True:
        try:
            return reader.get_watermark_offsets(tp, timeout=max(0.1, min(timeout_s, deadline - time.monotonic())))
        except KafkaException as exc:
            error = kafka_error(exc)
            if (error is None or error.fatal() or time.monotonic() >= deadline
                    or not (error.code() in LEADER_MOVING or unreachable(error))):
                raise
            if time.monotonic() - reported >= 10:
                reported = time.monotonic()
                log.warning("restoring partition %d: the changelog's offsets are not known yet (%s); asking again "
                            "for up to %.0f s more", tp.partition, error.str(), deadline - reported)
            time.sleep(pause_s)
            # the reader's metadata may still name a dead leader (its own refresh is every 5 minutes),
            # and the offsets request waits for that broker: ask for the topic's metadata first
            try:
                reader.list_topics(tp.topic, timeout=max(0.1, min(timeout_s, deadline - time.monotonic())))
            except KafkaException:
                pass
