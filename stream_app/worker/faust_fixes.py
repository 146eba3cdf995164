"""Two guards around faust-streaming's exactly-once shutdown (faust-streaming 0.15).

1. At shutdown Faust commits every transactional producer's offsets with `start_new_transaction=False`,
   and a commit for a producer whose transaction was already ended raises
   `IllegalOperation: Not in the middle of a transaction` inside the consumer's stop, which then hangs.
   `robust_commit_transactions` replaces the driver's `commit_transactions` with the same steps
   (send offsets, commit, begin the next transaction), beginning a transaction first where none is open.
2. If a stop still does not finish, a watchdog ends the process after a grace period without writing
   the clean-stop marker, so the next start restores state from the changelog (nothing is lost: every
   uncommitted transaction is aborted and its input is processed again).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping

log = logging.getLogger(__name__)


def robust_commit_transactions(producer: Any) -> None:
    async def commit_transactions(tid_to_offset_map: Mapping[str, Mapping[Any, int]], group_id: str,
                                  start_new_transaction: bool = True) -> None:
        for transactional_id, offsets in tid_to_offset_map.items():
            lock = producer._trn_locks.get(transactional_id)
            transaction_producer = producer._transaction_producers.get(transactional_id)
            if lock is None or transaction_producer is None:
                log.warning("commit for unknown transactional id %s skipped", transactional_id)
                continue
            async with lock:
                manager = transaction_producer._txn_manager
                if manager is not None and not manager.is_in_transaction():
                    await transaction_producer.begin_transaction()
                await transaction_producer.send_offsets_to_transaction(offsets, group_id)
                await transaction_producer.commit_transaction()
                if start_new_transaction:
                    await transaction_producer.begin_transaction()

    producer.commit_transactions = commit_transactions


def start_stop_watchdog(grace_seconds: float) -> None:
    """Exit the process if a stop has not finished after ``grace_seconds``."""

    def expire() -> None:
        log.error("the worker did not stop within %.0f s; exiting now. Local state will be restored from the "
                  "changelog at the next start; nothing committed is lost", grace_seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(grace_seconds, expire)
    timer.daemon = True
    timer.start()


async def send_in_one_transaction(producer: Any, transactional_id: str,
                                  records: list[tuple[str, bytes | None, bytes | None, int | None]]) -> list[Any]:
    """Send records through a partition's transactional producer so that they all land in the same
    transaction: Faust's periodic commit takes the same lock, so it cannot commit between them.

    (Sending them one by one through `producer.send(..., transactional_id=...)` releases the lock between
    records; a commit in between would put a batch's transitions in one transaction and its changelog
    in the next, and a crash between the two commits would emit those transitions again.)
    Returns the delivery futures."""
    lock = producer._trn_locks.get(transactional_id)
    transactional = producer._transaction_producers.get(transactional_id)
    if lock is None or transactional is None:
        raise RuntimeError(f"no transactional producer for {transactional_id}; is the partition still assigned?")
    async with lock:
        return [await transactional.send(topic, value, key=key, partition=partition) for topic, key, value, partition in records]


def highwaters_from_the_broker() -> None:
    """Ask the broker for the changelog high-water marks that decide table recovery.

    Under exactly-once, faust-streaming 0.15 takes them from aiokafka's cached last stable offset, which
    is unknown (None, read as -1) until the consumer has fetched from that partition. Right after a
    rebalance or a broker restart, recovery then believes a changelog partition is empty: it restores
    nothing, or, when the local store already has an offset, it raises `ConsistencyError` ("persisted
    offset ... is higher than the last offset in that topic (highwater) (388 > -1)") and the worker
    stops (seen when a second worker takes partitions back, tests/test_kafka_faults.py). ListOffsets
    with the consumer's read_committed isolation returns the same last stable offset, from the broker."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    async def _highwaters(self: Any, partitions: Any) -> Mapping[Any, int]:
        return await self._ensure_consumer().end_offsets(list(partitions))

    AIOKafkaConsumerThread._highwaters = _highwaters


async def commit_open_transactions(producer: Any) -> int:
    """Commit every open transaction of this worker, then stop its transactional producers; called when
    partitions are revoked (every rebalance revokes all of them), after Faust has waited for the
    streams to finish their events and flushed the producer.

    Two faust-streaming 0.15 behaviours made rebalances unsafe (tests/test_kafka_faults.py):
    1. The transactions stay open across the rebalance while the local RocksDB copy already holds their
       profile writes. Where the partition stays, recovery compares the local offset with the broker's
       last stable offset, which excludes the open transaction, and stops the worker with
       `ConsistencyError ... (1670 > 1669)`. Where the partition moves, the new owner fences the open
       transaction (aborted), and if the partition later comes back, the local copy still holds the
       aborted writes: their input is read again, found in the profiles by `messageId`, and their
       transitions are never emitted.
    2. The producers of partitions that moved away are kept, fenced by the new owner; when such a
       partition comes back, Faust reuses the fenced producer and the agent crashes (`ProducerFenced`).
    Committed, the outputs, the changelog and the local copy agree (the input offsets of that last
    stretch stay uncommitted, as Faust no longer tracks revoked partitions, so it is read again and
    deduplicated); stopped, every producer is created afresh for the new assignment. A commit that fails
    raises: Faust then crashes the worker, and the next start restores the state from the changelog."""
    committed = 0
    for transactional_id, transaction_producer in list(producer._transaction_producers.items()):
        lock = producer._trn_locks.get(transactional_id)
        manager = transaction_producer._txn_manager
        if lock is not None and manager is not None:
            async with lock:
                if manager.is_in_transaction():
                    await transaction_producer.commit_transaction()
                    committed += 1
        await producer.stop_transaction(transactional_id)
    log.info("rebalance: committed %d open transactions and stopped the transactional producers", committed)
    return committed
