"""Guards around faust-streaming's exactly-once mode (faust-streaming 0.15).

1. At shutdown Faust commits every transactional producer's offsets with `start_new_transaction=False`,
   and a commit for a producer whose transaction was already ended raises
   `IllegalOperation: Not in the middle of a transaction` inside the consumer's stop, which then hangs.
   `robust_commit_transactions` replaces the driver's `commit_transactions` with the same steps
   (send offsets, commit, begin the next transaction), beginning a transaction first where none is open.
2. If a stop still does not finish, a watchdog ends the process after a grace period without writing
   the clean-stop marker, so the next start restores state from the changelog (nothing is lost: every
   uncommitted transaction is aborted and its input is processed again).
3. `seek_before_resuming_streams`: after table recovery, Faust resumed fetching the input partitions
   before it cleared the stream buffers; records fetched in between were thrown away unprocessed and
   never fetched again, and the partition could not commit any more (below).
4. `CommitWatchdog`: a partition that can no longer commit (offsets never processed, or a transaction
   holding records uncommitted) crashes the worker (status 70) instead of leaving it stalled; so do
   records skipped or a batch failed in the pipeline (`skipped_offsets`). From then on nothing is
   committed: the restart reads the uncommitted input again, in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any, Mapping

log = logging.getLogger(__name__)

# Kafka aborts a transaction that stays open longer than the producer's transaction timeout (aiokafka:
# 60 s); a partition transaction holding sent records uncommitted this long will never commit
STALLED_TRANSACTION_S = 45.0
# how long offsets may stay missing below acknowledged ones (see `lost_offsets`) before the watchdog
# gives up on them (the commit itself refuses at once)
STUCK_OFFSETS_S = 15.0


class CommitStalled(RuntimeError):
    """A partition can no longer commit correctly; the worker must restart."""


def lost_offsets(consumer: Any, committing: Mapping[Any, int] | None = None) -> dict[Any, tuple[int, int]]:
    """Input records Faust will never process: tp -> (first, last) offset.

    Faust acknowledges a partition's records in order and commits it only up to the first offset it has
    not seen acknowledged (`Consumer._new_offset`). Offsets missing below acknowledged ones, not in
    flight and not known to be absent from the log (transaction markers, aborted or compacted records:
    `Consumer._gap`), were dropped unprocessed (see `seek_before_resuming_streams`); Faust will not
    commit past them, nor fetch them again. `committing`: offsets about to be committed, which replace
    the committed ones. Partitions never committed are left out (Faust commits over their gaps)."""
    committing = committing or {}
    lost = {}
    for tp, acked in list(getattr(consumer, "_acked", {}).items()):
        committed = committing.get(tp, consumer._committed_offset.get(tp))
        if not acked or not committed:
            continue
        head = min(acked)
        absent = consumer._gap.get(tp)
        if absent:
            head = min([head, *(interval.begin for interval in absent.overlap(0, max(acked)))])
        if head - committed <= 1:
            continue
        if any(m.tp == tp and m.offset < head for m in list(consumer._unacked_messages)):
            continue  # still being processed
        lost[tp] = (committed, head - 1)
    return lost


def absent_from_log(consumer: Any, tp: Any, start: int, end: int) -> bool:
    """True when Faust knows that offsets [start, end) hold no records for it (transaction markers,
    aborted or compacted records: `Consumer._gap`, filled while fetching)."""
    intervals = getattr(consumer, "_gap", {}).get(tp)
    if not intervals:
        return False
    covered = start
    for interval in sorted(intervals.overlap(start, end)):
        if interval.begin > covered:
            return False
        covered = max(covered, interval.end)
    return covered >= end


def skipped_offsets(consumer: Any, next_offsets: Mapping[Any, int], messages: Any,
                    offsets_after: dict[Any, int] | None = None) -> dict[Any, tuple[int, int]]:
    """Records a batch skips, before any of its outputs are sent: tp -> (first, last) offset.

    `next_offsets`: per partition, the offset after the last record processed (else the committed
    offset counts). A partition's records must follow on from there, allowing one offset (Faust itself
    steps over a single missing offset at the head: a transaction marker) and offsets absent from the
    log. Records dropped unprocessed (see `seek_before_resuming_streams`, or a batch acknowledged by
    Faust although its processing failed) show here, before the outputs of the records after them are
    sent: committed (with the clock ticks' offsets, or at a rebalance), those would come before the
    dropped records, which a restart then processes out of order. `offsets_after`, when given, receives
    the `next_offsets` that hold once the batch is processed."""
    skipped: dict[Any, tuple[int, int]] = {}
    expected = dict(next_offsets)
    for message in messages:
        tp = message.tp
        start = expected.get(tp)
        if start is None and consumer is not None:
            start = consumer._committed_offset.get(tp)
        if start is not None and message.offset > start + 1 and tp not in skipped \
                and not absent_from_log(consumer, tp, start, message.offset):
            skipped[tp] = (start, message.offset - 1)
        expected[tp] = message.offset + 1 if start is None else max(start, message.offset + 1)
    if offsets_after is not None:
        offsets_after.update(expected)
    return skipped


def describe_offsets(lost: Mapping[Any, tuple[int, int]]) -> str:
    return "; ".join(f"{tp.topic}[{tp.partition}] offsets {first}..{last} were never processed (later ones were)"
                     for tp, (first, last) in sorted(lost.items()))


class CommitWatchdog:
    """Crashes the worker (status 70, for its supervisor) when a partition can no longer commit.

    Two ways faust-streaming 0.15 stalls without an error:
    - lost offsets (`lost_offsets`): the partition's input is never committed again nor processed,
      while the worker runs on;
    - stuck transactions: a partition transaction holds sent records (outputs, changelog) but is not
      committed, because its offsets cannot advance or its commit hangs: the records are invisible to
      read_committed readers, and the broker aborts the transaction after the transaction timeout.
    After the restart the new transactional producers abort the open transactions and the uncommitted
    input is read again, in order (and deduplicated), so nothing is lost or repeated."""

    def __init__(self, limit_s: float = STALLED_TRANSACTION_S, stuck_offsets_s: float = STUCK_OFFSETS_S) -> None:
        self.limit_s = limit_s
        self.stuck_offsets_s = stuck_offsets_s
        self._waiting_since: dict[str, float] = {}
        self._lost_since: dict[Any, tuple[tuple[int, int], float]] = {}
        # set at the first stall: from then on nothing is committed any more. Faust forgets what it
        # could not commit (`Consumer._new_offset` drops the acknowledged offsets it hands out), and the
        # commit at shutdown or at a rebalance would otherwise commit over the lost records
        self.failure: CommitStalled | None = None

    def sent(self, transactional_id: str) -> None:
        self._waiting_since.setdefault(transactional_id, time.monotonic())

    def committed(self, transactional_id: str) -> None:
        self._waiting_since.pop(transactional_id, None)

    def stalled_transactions(self, now: float | None = None) -> dict[str, float]:
        """Transactional ids whose sent records have waited longer than the limit, with the wait (s)."""
        now = time.monotonic() if now is None else now
        return {tid: now - since for tid, since in self._waiting_since.items() if now - since > self.limit_s}

    def stuck_offsets(self, consumer: Any, now: float | None = None) -> dict[Any, tuple[int, int]]:
        """`lost_offsets` that have stayed the same for longer than `stuck_offsets_s`."""
        now = time.monotonic() if now is None else now
        lost = lost_offsets(consumer)
        self._lost_since = {tp: (gap, self._lost_since[tp][1] if self._lost_since.get(tp, (None,))[0] == gap else now)
                            for tp, gap in lost.items()}
        return {tp: gap for tp, (gap, since) in self._lost_since.items() if now - since > self.stuck_offsets_s}

    def problem(self, app: Any) -> str | None:
        """Why the worker cannot go on, or None."""
        problems = []
        consumer = getattr(app, "_consumer", None)
        if consumer is not None:
            stuck = self.stuck_offsets(consumer)
            if stuck:
                problems.append(describe_offsets(stuck))
        for tid, waited in sorted(self.stalled_transactions().items()):
            problems.append(f"transaction {tid} has held sent records uncommitted for {waited:.0f} s")
        return "; ".join(problems) or None

    async def fail(self, app: Any, problem: str) -> CommitStalled:
        """Refuse every later commit and crash the app (exit status 70)."""
        if self.failure is None:
            self.failure = CommitStalled(problem)
            log.error("%s; stopping the worker so that its supervisor starts it again (open transactions are "
                      "aborted, uncommitted input is processed again)", problem)
        await app.crash(self.failure)
        return self.failure

    async def check_before_commit(self, app: Any, committing: Mapping[Any, int] | None = None) -> None:
        """Raise (after crashing the app) instead of letting a commit go through after lost records."""
        if self.failure is None:
            consumer = getattr(app, "_consumer", None)
            lost = lost_offsets(consumer, committing) if consumer is not None else {}
            if not lost:
                return
            await self.fail(app, f"not committing: {describe_offsets(lost)}")
        raise self.failure  # type: ignore[misc]

    async def watch(self, app: Any, interval: float = 1.0) -> None:
        """Runs for the worker's lifetime; crashes the app (exit status 70) at the first stall."""
        while self.failure is None:
            await asyncio.sleep(interval)
            if getattr(app, "should_stop", False):
                continue
            try:
                problem = self.problem(app)
            except Exception:  # noqa: BLE001 - Faust's bookkeeping changed under us; look again next time
                log.debug("commit watchdog: check failed", exc_info=True)
                continue
            if problem is not None:
                await self.fail(app, problem)


def commit_watchdog(producer: Any) -> CommitWatchdog | None:
    """The watchdog `robust_commit_transactions` installed on this producer (None without it: then
    commits are not observed)."""
    return getattr(producer, "_stream_app_commit_watchdog", None)


def robust_commit_transactions(producer: Any) -> None:
    """Replace the driver's `commit_transactions` (see the module docstring) and install a
    `CommitWatchdog` on the producer, which this commit and `send_in_one_transaction` keep informed.

    It also refuses to commit while input records were lost (`lost_offsets`): a partition's transaction
    holds the outputs and state of every record processed since its last commit, including records
    after the lost ones (its clock ticks keep it committing even though its input offsets cannot
    advance). Committed, those would be final while the lost records come later, out of order, after a
    restart. Instead the worker crashes (status 70) and the transactions are aborted."""
    watchdog = producer._stream_app_commit_watchdog = CommitWatchdog()

    async def commit_transactions(tid_to_offset_map: Mapping[str, Mapping[Any, int]], group_id: str,
                                  start_new_transaction: bool = True) -> None:
        await watchdog.check_before_commit(
            producer.app, {tp: offset for offsets in tid_to_offset_map.values() for tp, offset in offsets.items()})
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
                watchdog.committed(transactional_id)
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
        futures = [await transactional.send(topic, value, key=key, partition=partition) for topic, key, value, partition in records]
        watchdog = commit_watchdog(producer)
        if watchdog is not None and futures:
            watchdog.sent(transactional_id)
        return futures


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
    raises: Faust then crashes the worker, and the next start restores the state from the changelog.
    Nothing is committed once input records were lost (`CommitWatchdog.check_before_commit`): read
    again after the rebalance, they would come after later records whose outputs this commit made final."""
    committed = 0
    watchdog = commit_watchdog(producer)
    if watchdog is not None:
        await watchdog.check_before_commit(producer.app)
    for transactional_id, transaction_producer in list(producer._transaction_producers.items()):
        lock = producer._trn_locks.get(transactional_id)
        manager = transaction_producer._txn_manager
        if lock is not None and manager is not None:
            async with lock:
                if manager.is_in_transaction():
                    await transaction_producer.commit_transaction()
                    committed += 1
        await producer.stop_transaction(transactional_id)
        if watchdog is not None:
            watchdog.committed(transactional_id)
    log.info("rebalance: committed %d open transactions and stopped the transactional producers", committed)
    return committed


def seek_before_resuming_streams() -> None:
    """Resume the input partitions after table recovery only once the stream buffers are cleared.

    faust-streaming 0.15 (`Recovery.on_recovery_completed`, unchanged on its master; faust-streaming
    issue #596) resumes the stream partitions, then seeks them to the committed offsets, then resumes
    flow control, which clears every stream buffer. Records fetched in between (the seek takes a
    round trip to the broker; the agent may already be processing) are thrown away unacknowledged,
    while the consumer's read position has moved past them, so they are never fetched again. Faust
    commits a partition only up to the first offset it has not seen acknowledged: after a gap of two or
    more records the partition never commits again (one lost record is committed over silently). Its
    transaction then holds every later output uncommitted: read_committed readers see nothing more
    from it, and the broker aborts it after the transaction timeout while the worker keeps running.
    Seen after a restart with input waiting (tests/test_kafka_faults.py, the broker restart: 357
    input records and 54 clock ticks lost from the buffers, commits stuck at the gap).

    Here the stream partitions stay paused until they are sought and the buffers cleared, and are
    resumed last: nothing is fetched into a buffer that is cleared afterwards."""
    from faust.tables.recovery import Recovery

    if getattr(Recovery.on_recovery_completed, "_stream_app_fixed", False):
        return

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callback_coros = [
            asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table]))
            for table in self.tables.values()
        ]
        if callback_coros:
            await asyncio.wait(callback_coros)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} param {generation_id}")
            return
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        self.completed.set()
        self.app.flow_control.resume()  # clears the stream buffers: nothing of the input is in them yet
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        consumer.resume_flow()
        await self.app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    on_recovery_completed._stream_app_fixed = True  # type: ignore[attr-defined]
    Recovery.on_recovery_completed = on_recovery_completed
