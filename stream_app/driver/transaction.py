"""The open transaction of a process slot, and the commit sequence, written once.

    1. produce the outputs (as they are computed), then one changelog record per profile staged since the
       last commit;
    2. send the input offsets with the consumer's group metadata (KIP-447, exactly-once v2);
    3. commit the transaction;
    4. only then write each partition's staged profiles to local RocksDB in one WriteBatch, with the
       changelog offset it reflects.

Local state therefore never holds an uncommitted write. A failure that librdkafka marks abortable aborts
the transaction (`TransactionAborted`: the caller rewinds its input and in-memory state); a fatal one,
such as a newer process with the same transactional.id, raises `SlotFenced` (the process exits with
status 70 and its supervisor starts it again).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from ..engine.schedule_entry import HEADER as ENTRY_HEADER
from . import metrics
from .call_deadline import CallDeadline
from .patience import Patience, kafka_error, unreachable
from .store import PartitionStore

log = logging.getLogger(__name__)

ABORT_FLUSH_S = 5.0  # at most this long for the open transaction's records before an abort (see `abort`)


class TransactionAborted(Exception):
    """The open transaction was aborted: nothing of it is visible; rewind to the committed offsets."""


class SlotFenced(Exception):
    """This process can no longer produce (fenced by its successor, or a fatal producer error)."""


class Transaction:
    def __init__(self, producer: Producer, timeout_s: float, patience: Patience | None = None) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.patience = patience or Patience()  # waits for an unreachable cluster instead of failing
        self.open = False
        self.opened_at = 0.0  # monotonic time of the open transaction's first record
        self.offsets: dict[tuple[str, int], int] = {}  # input (topic, partition) -> next offset to read
        self.records = 0
        self._changelog_ends: dict[int, int] = {}
        self.deadline = CallDeadline()  # the watchdog ends the process when one of these calls hangs
        bounded = self.deadline.bounded
        self._init_transactions = bounded("init_transactions", producer.init_transactions)
        self._flush = bounded("flush", producer.flush)
        self._send_offsets = bounded("send_offsets_to_transaction", producer.send_offsets_to_transaction)
        self._commit = bounded("commit_transaction", producer.commit_transaction)
        self._abort = bounded("abort_transaction", producer.abort_transaction)

    def init(self) -> None:
        """Register the transactional id: fences and aborts a predecessor's open transaction. Waits for
        an unreachable cluster."""
        self._call(self.patience.call, "registering the transactional id", self._init_transactions, self.timeout_s)

    # -- filling the transaction ----------------------------------------------------------------------
    def _begin(self) -> None:
        if not self.open:
            self._call(self.producer.begin_transaction)
            self.open = True
            self.opened_at = time.monotonic()

    def _abortable(self, exc: KafkaException, stores: Iterable[PartitionStore] = ()) -> Exception:
        """The exception to raise for a failure while filling or committing the transaction: a fatal one
        ends the slot (`SlotFenced`); any other aborts the transaction (librdkafka refuses new records
        once it needs aborting) and the caller rewinds (`TransactionAborted`)."""
        error = kafka_error(exc)
        if error is not None and error.fatal():
            return SlotFenced(str(error))
        self.abort(stores, str(error or exc))
        return TransactionAborted(str(error or exc))

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None, on_delivery: Any = None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        try:
            self._begin()
        except KafkaException as exc:
            raise self._abortable(exc) from exc
        kwargs: dict[str, Any] = {}
        if partition is not None:
            kwargs["partition"] = partition
        if on_delivery is not None:
            kwargs["on_delivery"] = on_delivery
        if headers is not None:
            kwargs["headers"] = headers
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                break
            except BufferError:  # librdkafka's queue is full: let it deliver, then try again
                self.producer.poll(0.05)
            except KafkaException as exc:
                raise self._abortable(exc) from exc
        self.records += 1

    def consumed(self, topic: str, partition: int, offset: int) -> None:
        try:
            self._begin()
        except KafkaException as exc:
            raise self._abortable(exc) from exc
        self.offsets[(topic, partition)] = offset + 1

    def forget_partitions(self, topic: str, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.offsets.pop((topic, partition), None)

    def age_s(self) -> float:
        return time.monotonic() - self.opened_at if self.open else 0.0

    # -- the commit sequence --------------------------------------------------------------------------
    def commit(self, stores: Iterable[PartitionStore], group_metadata: Any, committed_hook: Callable[[], None] | None = None) -> bool:
        """Commit everything produced, staged and consumed since the last commit (see the module doc).
        Returns False when there was nothing to commit. `committed_hook` (tests only) runs between the
        commit and the local writes."""
        stores = [store for store in stores if store.staged]
        if not self.open and not stores:
            return False
        started = time.monotonic()
        self._changelog_ends = {}
        try:
            for store in stores:  # 1. one changelog record per staged profile, its schedule entry in a header
                last = len(store.staged) - 1
                for n, (key, value, entry) in enumerate(store.changelog_records()):
                    self.send(store.changelog_topic, key, value, store.partition, self._changelog_end if n == last else None,
                              None if entry is None else [(ENTRY_HEADER, entry)])
            remaining = self._flush(self.timeout_s)
            if remaining:
                raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"{remaining} records not delivered in time", txn_requires_abort=True))
            if self.offsets:  # 2. the input offsets, in the transaction
                offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self.offsets.items()]
                self._call(self._send_offsets, offsets, group_metadata, self.timeout_s)
            self._commit_transaction()  # 3.
        except TransactionAborted:
            raise
        except KafkaException as exc:
            raise self._abortable(exc, stores) from exc
        if committed_hook is not None:
            committed_hook()
        for store in stores:  # 4. local state, only now
            store.apply_staged(self._changelog_ends.get(store.partition))
        self._reset()
        metrics.COMMITS.labels("committed").inc()
        metrics.COMMIT_SECONDS.observe(time.monotonic() - started)
        return True

    def _changelog_end(self, error: KafkaError | None, message: Any) -> None:
        if error is None:
            self._changelog_ends[message.partition()] = message.offset() + 1

    def _commit_transaction(self) -> None:
        """librdkafka: after a retriable error (a timeout, the coordinator moving) the commit may still be
        completing, and calling it again is the way to learn the outcome; aborting then is not allowed.
        So it is called again for as long as the cluster does not answer (`Patience`). Each call blocks
        for at most the transaction timeout, so the loop keeps proving it turns (the watchdog)."""
        self.patience.call("committing the transaction", self._commit, self.timeout_s,
                           retry_if=lambda error: unreachable(error) and not error.txn_requires_abort())

    def abort(self, stores: Iterable[PartitionStore], why: str) -> None:
        """Abort the open transaction (if any) and drop every staged write."""
        for store in stores:
            store.discard_staged()
        if self.open:
            log.warning("aborting the open transaction: %s", why)
            if self.records:
                # librdkafka #4849: an abort sent while the registration of the transaction's first
                # partitions is still being retried (the coordinator answers CONCURRENT_TRANSACTIONS while
                # the previous commit completes) reaches a coordinator that has no such transaction, which
                # answers INVALID_TXN_STATE, fatal for the producer. A delivered record proves its partition
                # registered, so the records are delivered first (or given up on after a bounded wait):
                # they stay invisible, the transaction is aborted.
                self._flush(min(self.timeout_s, ABORT_FLUSH_S))
            try:
                # a timeout on each call: an abort that needs a new producer epoch waits for the
                # coordinator, and librdkafka's default (-1) then blocked for minutes in an outage
                self._call(self.patience.call, "aborting the transaction", self._abort, self.timeout_s)
            except KafkaException as exc:
                raise SlotFenced(f"the open transaction could not be aborted: {kafka_error(exc) or exc}") from exc
            metrics.COMMITS.labels("aborted").inc()
        self._reset()

    def _reset(self) -> None:
        self.open = False
        self.offsets = {}
        self.records = 0

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is not None and error.fatal():
                raise SlotFenced(str(error)) from exc
            raise
