"""The consume-process-commit loop of one process slot, on confluent-kafka (librdkafka).

    poll one record (waiting at most until the next punctuation), then take what else is buffered
    (`Consumer.consume(batch_max - 1, 0)`) ──▶ processor.process(partition, records) per partition
    ──▶ processor.punctuate(wall) when due (wall-clock progress, timers, reloads)
    ──▶ commit (`driver/transaction.py`) as soon as nothing more was buffered, else once the open
        transaction's first record is `commit_interval_ms` old.

Rebalances (cooperative-sticky, static membership): newly assigned partitions are restored from their
changelog before the callback returns (so their input is fetched only afterwards); before partitions are
revoked, the open transaction is committed; lost partitions abort it. After an abort, every assigned
partition is sought back to its committed offset and the processor returns its in-memory state to the
last commit (`processor.rolled_back`); the stores hold only committed writes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from . import metrics
from .clients import SlotConfig
from .group_watch import UnownedPartitionsWatch
from .patience import Patience
from .restore import restore
from .standby import StandbyCopies
from .store import PartitionStore, StoreBudget
from .transaction import Transaction, TransactionAborted

log = logging.getLogger(__name__)


class Outputs(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None: ...


class Processor(Protocol):
    """What the driver runs: the application's side of the shell (`worker/segmentation.py`)."""

    def assigned(self, stores: dict[int, PartitionStore]) -> None: ...

    def revoked(self, partitions: Sequence[int]) -> None: ...

    def process(self, partition: int, messages: Sequence[Message], wall_ms: int, out: Outputs) -> None: ...

    def punctuate(self, wall_ms: int, out: Outputs) -> None: ...

    def committed(self, wall_ms: int) -> None: ...

    def rolled_back(self) -> None: ...


@dataclass(frozen=True)
class DriverConfig:
    slot: SlotConfig
    input_topic: str
    changelog_topic: str
    state_dir: Path
    rocksdb_budget_bytes: int
    batch_max: int = 2000
    commit_interval_ms: int = 100
    punctuate_interval_ms: int = 500
    standby: bool = False  # keep copies of the partitions this process does not own (driver/standby.py)


STANDBY_REFRESH_S = 30  # how often the partitions to keep copies of are listed again (the input may grow)
LIVENESS_LIMIT_S = 60  # /healthz fails, and the watchdog ends the process, when the loop has not turned for this long

# Test-only fault injection (tests/test_driver_abort.py, tests/crash_worker.py): called at named points:
# "processed_partition", "before_commit" (outputs sent, the transaction open), "committed_not_written"
# (the transaction committed, the local WriteBatch not yet written), "restore_chunk" (a restore under
# way), "revoke_commit" (just before the commit a revocation asks for), "local_open" and "local_write"
# (a partition store about to open its RocksDB folder or write a batch, inside the store's error
# handling: raising RocksDB's disk-full error there acts as a full disk). Raising TransactionAborted
# takes the abort path; a test may also kill the process. No setting reaches it: only code that builds
# a StreamDriver itself can pass one.
FaultHook = Callable[[str, "StreamDriver"], None]


class StreamDriver:
    def __init__(self, config: DriverConfig, processor: Processor, fault_hook: FaultHook | None = None) -> None:
        self.config = config
        self.processor = processor
        self.fault_hook = fault_hook
        self.budget = StoreBudget(config.rocksdb_budget_bytes)
        self.stores: dict[int, PartitionStore] = {}
        self.next_punctuation = 0.0
        self.last_poll = 0.0  # monotonic
        self.joined = False  # the first assignment is done
        self.restoring = False
        self.positions: dict[int, int] = {}  # per input partition: the offset after the last record processed
        self.start_offsets: dict[int, int] = {}  # per input partition: its committed offset when assigned
        self.consumer: Consumer | None = None
        self.transaction: Transaction | None = None
        self.failed = False
        self.rewinds = 0  # how many times the input was rewound to the committed offsets
        self.assigned_in_call: set[int] = set()  # partitions assigned during the current poll
        self.fatal_error: KafkaError | None = None
        self.patience = Patience()  # calls that wait for an unreachable cluster (driver/patience.py)
        self.group_watch: UnownedPartitionsWatch | None = None
        self.standby: StandbyCopies | None = None
        self.input_partitions: int | None = None  # the input topic's partition count, as last read
        self.partitions_counted = 0.0  # monotonic time it was read
        self.standby_listed = 0.0  # monotonic time the partitions to copy were last listed; 0: list them now

    # -- health ---------------------------------------------------------------------------------------
    def ready(self) -> bool:
        """Assigned partitions restored, the consumer polling, and Kafka answering."""
        return self.joined and not self.restoring and not self.patience.waiting and time.monotonic() - self.last_poll < 10

    def alive(self) -> bool:
        """The loop turns: it polls, restores, or waits for an unreachable cluster (on purpose: a restart
        would only wait again)."""
        return self.stuck() is None

    def stuck(self) -> str | None:
        """Why the loop no longer turns (None while it does): a librdkafka call far past its own timeout
        (driver/call_deadline.py), or no poll for longer than the liveness limit."""
        transaction = self.transaction
        overdue = transaction.deadline.overdue() if transaction is not None else None
        if overdue is not None:
            return overdue
        now = time.monotonic()
        waiting = self.patience.waiting and now - self.patience.last_beat < LIVENESS_LIMIT_S
        if self.last_poll == 0.0 or self.restoring or waiting or now - self.last_poll < LIVENESS_LIMIT_S:
            return None
        return f"the main loop has not polled Kafka for {now - self.last_poll:.0f} s, longer than the liveness limit ({LIVENESS_LIMIT_S} s)"

    # -- the loop -------------------------------------------------------------------------------------
    def _on_client_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (served by poll): fatal errors end the process; the rest are
        reported and retried by the client itself (a broker away, a connection refused)."""
        if error.fatal() or error.code() == KafkaError._FATAL:
            self.fatal_error = error
        else:
            log.warning("kafka: %s", error)

    def run(self, stop: threading.Event) -> None:
        slot = self.config.slot
        producer = slot.producer(error_cb=self._on_client_error)
        self.transaction = Transaction(producer, slot.transaction_timeout_ms / 1000, self.patience)
        self.transaction.init()  # fences this slot's predecessor and aborts its open transaction
        self.reader = slot.reader("restore", fetch_wait_ms=10)
        consumer = self.consumer = slot.consumer(error_cb=self._on_client_error)
        if self.config.standby:
            self.standby = StandbyCopies(slot.reader("standby", offset_reset="error"), self.config.changelog_topic, self._open_store)
        self._subscribe(consumer)
        log.info("slot %s: transactional id %s, group %s", slot.instance_id, slot.transactional_id, slot.group_id)
        try:
            self.group_watch = UnownedPartitionsWatch(slot.admin_config(), slot.group_id, self.config.input_topic).start()
            while not stop.is_set():
                self.step()
            self.commit()
        except BaseException:
            self.failed = True  # nothing more is committed: closing the consumer only drops the partitions
            raise
        finally:
            if self.group_watch is not None:
                self.group_watch.close()
            consumer.close()  # revokes (and commits) whatever is still assigned
            for store in self.stores.values():
                store.close()
            self.stores.clear()
            self.reader.close()
            if self.standby is not None:
                self.standby.close()
            producer.flush(5)
            self.transaction = None  # the producer is destroyed with its last reference (it has no close())
            del producer

    def _subscribe(self, consumer: Consumer) -> None:
        consumer.subscribe([self.config.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _heal_unowned_partitions(self, consumer: Consumer) -> None:
        """When partitions belong to no member of a stable group and this member is the one to act
        (driver/group_watch.py), leave the group and join again at once: the coordinator rebalances.
        Outside the rebalance callbacks, between two polls."""
        unowned = self.group_watch.take_heal(consumer.memberid() or "") if self.group_watch is not None else None
        if unowned:
            log.warning("input partitions %s belong to no member of the group: leaving it and joining again, so that "
                        "it rebalances (owning %s until then)", sorted(unowned), sorted(self.stores))
            metrics.GROUP_REJOINS.inc()
            consumer.unsubscribe()
            self._subscribe(consumer)

    def step(self) -> None:
        consumer, cfg = self.consumer, self.config
        assert consumer is not None and self.transaction is not None
        now = time.monotonic()
        self.last_poll = now
        wait = min(0.5, max(0.0, self.next_punctuation - now))
        if self.transaction.open:
            wait = min(wait, max(0.0, cfg.commit_interval_ms / 1000 - self.transaction.age_s()))
        rewinds = self.rewinds
        self.assigned_in_call = set()
        first = consumer.poll(wait)
        fetched = [first, *consumer.consume(cfg.batch_max - 1, 0)] if first is not None else []
        messages = self._records(fetched)
        if self.fatal_error is not None:  # e.g. fenced as a static member (librdkafka issue #3437)
            raise KafkaException(self.fatal_error)
        if self.rewinds != rewinds:  # a rebalance callback aborted and rewound meanwhile: these are stale
            messages = []
        elif self.assigned_in_call:
            messages = self._without_records_of_new_partitions(messages)
        self.last_poll = time.monotonic()
        wall = int(time.time() * 1000)
        try:
            if messages:
                self._process(messages, wall)
            if time.monotonic() >= self.next_punctuation:
                self.next_punctuation = time.monotonic() + cfg.punctuate_interval_ms / 1000
                self.processor.punctuate(wall, self.transaction)
        except TransactionAborted as exc:  # raised by a processor (or a test's fault hook) mid-batch
            self.abort(str(exc))
            return
        if self._has_uncommitted_work():
            drained = len(fetched) < cfg.batch_max
            if drained or self.transaction.age_s() * 1000 >= cfg.commit_interval_ms:
                self.commit()
        self.transaction.producer.poll(0)
        self._heal_unowned_partitions(consumer)
        if self.standby is not None:
            self._keep_standby_copies()

    def _keep_standby_copies(self) -> None:
        """Between two polls: follow the partitions nobody here owns (listed again after each rebalance and
        every STANDBY_REFRESH_S; one new copy per turn), then apply what the standby reader has buffered."""
        assert self.standby is not None
        now = time.monotonic()
        if self.joined and (self.standby_listed == 0.0 or now - self.standby_listed > STANDBY_REFRESH_S):
            self.standby_listed = now
            if self.consumer is not None and now - self.partitions_counted > STANDBY_REFRESH_S:
                self._count_input_partitions(self.consumer)  # the input may have grown
            if self.input_partitions is not None:
                more = self.standby.follow(p for p in range(self.input_partitions) if p not in self.stores)
                if more:
                    self.standby_listed = 0.0  # the next one at the next turn
        self.standby.poll()

    def _records(self, fetched: list[Message]) -> list[Message]:
        """The records among what the consumer returned; its error events are reported here, and a
        fatal one (e.g. fenced as a static member) ends the process."""
        records = []
        for message in fetched:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.fatal() or error.code() == KafkaError._FATAL:
                raise KafkaException(error)
            else:
                log.warning("consumer: %s", error)
        return records

    def _without_records_of_new_partitions(self, messages: list[Message]) -> list[Message]:
        """Partitions assigned during this poll (also revoked and assigned again within it) may have
        records in the batch from before the callback: drop all of theirs and read them again from the
        offset the partition was assigned at, where its restored state ends."""
        stale = {m.partition() for m in messages if m.partition() in self.assigned_in_call}
        for partition in stale:
            self._seek(TopicPartition(self.config.input_topic, partition, _start(self.start_offsets.get(partition, -1))))
        return [m for m in messages if m.partition() not in stale]

    def _process(self, messages: list[Message], wall: int) -> None:
        by_partition: dict[int, list[Message]] = {}
        for message in messages:
            by_partition.setdefault(message.partition(), []).append(message)
        topic = self.config.input_topic
        for partition, records in by_partition.items():
            if partition not in self.stores:  # fetched just before a revocation; not ours any more
                continue
            self.processor.process(partition, records, wall, self.transaction)
            self.transaction.consumed(topic, partition, records[-1].offset())
            self.positions[partition] = records[-1].offset() + 1
            if self.fault_hook is not None:
                self.fault_hook("processed_partition", self)

    def _hook_at(self, point: str) -> Callable[[], None] | None:
        fault_hook = self.fault_hook
        return None if fault_hook is None else (lambda: fault_hook(point, self))

    def commit(self) -> None:
        assert self.transaction is not None and self.consumer is not None
        try:
            if self.fault_hook is not None:
                self.fault_hook("before_commit", self)
            self._offsets_of_every_partition()
            done = self.transaction.commit(self.stores.values(), self.consumer.consumer_group_metadata(),
                                           self._hook_at("committed_not_written"))
        except TransactionAborted as exc:
            self.abort(str(exc))  # already aborted when the commit itself failed: then this only rewinds
            return
        if done:
            self.processor.committed(int(time.time() * 1000))
            self._update_lag()

    def _offsets_of_every_partition(self) -> None:
        """Every transaction carries an input offset of every owned partition that has a position, also
        one that only timers or a punctuation wrote to: the offsets are what the group coordinator checks
        against the member's generation (KIP-447), so a zombie's transaction cannot commit."""
        assert self.transaction is not None
        if not self._has_uncommitted_work():
            return
        topic = self.config.input_topic
        for partition in self.stores:
            if (topic, partition) in self.transaction.offsets:
                continue
            position = self._position(partition)
            if position >= 0:
                self.transaction.consumed(topic, partition, position - 1)

    def _has_uncommitted_work(self) -> bool:
        assert self.transaction is not None
        return self.transaction.open or any(store.staged for store in self.stores.values())

    def _position(self, partition: int) -> int:
        """The offset after the last record processed, else where the partition started (its committed
        offset when assigned or rewound); -1 when it has neither."""
        return self.positions.get(partition, self.start_offsets.get(partition, -1))

    def abort(self, why: str) -> None:
        """Abort the open transaction and rewind (also the path of librdkafka's abortable errors)."""
        assert self.transaction is not None
        self.transaction.abort(self.stores.values(), why)
        self._rewind()

    def _rewind(self) -> None:
        """After an abort: input from the committed offsets, in-memory state as at the last commit."""
        assert self.consumer is not None
        self.rewinds += 1
        self.processor.rolled_back()
        self.positions.clear()
        self.start_offsets.clear()
        assigned = [tp for tp in self.consumer.assignment() if tp.partition in self.stores]
        if not assigned:
            return
        for tp in self.patience.call("reading the committed offsets", self.consumer.committed, assigned, 30):
            self.start_offsets[tp.partition] = tp.offset
            self._seek(TopicPartition(tp.topic, tp.partition, _start(tp.offset)))
        log.info("rewound partitions %s to their committed offsets", sorted(tp.partition for tp in assigned))

    def _seek(self, tp: TopicPartition) -> None:
        assert self.consumer is not None
        for attempt in range(50):
            try:
                self.consumer.seek(tp)
                return
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._STATE:
                    raise
                time.sleep(0.1)  # the partition's fetcher is not started yet
        raise RuntimeError(f"could not seek partition {tp.partition} to {tp.offset}")

    def _update_lag(self) -> None:
        assert self.consumer is not None
        for partition in self.stores:
            lag = self.lag(partition)
            if lag is not None:
                metrics.CONSUMER_LAG.labels(str(partition)).set(lag)

    def lag(self, partition: int) -> int | None:
        """Input records of a partition that Kafka has and this process has not processed yet."""
        assert self.consumer is not None
        try:
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.config.input_topic, partition), cached=True)
        except KafkaException:
            return None
        if high is None or high < 0:
            return None
        position = self._position(partition)
        if position < 0:  # no committed offset: from the start of the log
            position = _low
        return max(0, high - position)

    # -- rebalance callbacks (called inside poll/consume, on this thread) ------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        topic = self.config.input_topic
        new = [tp.partition for tp in partitions if tp.topic == topic and tp.partition not in self.stores]
        if new:
            if not self.failed:
                self.commit()  # the open transaction must not wait for a restore (it could time out)
            self.restoring = True
            try:
                # first the committed offsets: librdkafka asks for stable ones under read_committed, so
                # this waits until a predecessor's pending transaction is decided; only then is the
                # changelog restored, so state and input start at the same transaction
                committed = consumer.committed([TopicPartition(topic, p) for p in new], timeout=60)
                self.start_offsets.update({tp.partition: tp.offset for tp in committed})
                stores = {p: self._standby_copy(p) or self._open_store(p) for p in new}
                restore(self.reader, list(stores.values()), after_chunk=self._hook_at("restore_chunk"))
                self.stores.update(stores)
                self.processor.assigned(stores)
            finally:
                self.restoring = False
            self.assigned_in_call.update(new)
        # input starts exactly at the offsets the restored state belongs to
        consumer.incremental_assign([TopicPartition(tp.topic, tp.partition, _start(self.start_offsets.get(tp.partition, -1)))
                                     for tp in partitions])
        self.joined = True
        self.standby_listed = 0.0
        metrics.ASSIGNED_PARTITIONS.set(len(self.stores))
        self._count_input_partitions(consumer)
        log.info("assigned input partitions %s; owning %s", sorted(new), sorted(self.stores))

    def _count_input_partitions(self, consumer: Consumer) -> None:
        """The input topic's partition count, for the alert on partitions nobody owns (best effort: a
        metadata request that fails leaves the last count)."""
        topic = self.config.input_topic
        try:
            metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
        except KafkaException as exc:
            log.warning("the input topic's partition count could not be read: %s", exc)
            return
        if metadata is not None and metadata.error is None:
            self.partitions_counted = time.monotonic()
            self.input_partitions = len(metadata.partitions)
            metrics.INPUT_PARTITIONS.set(self.input_partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = [tp.partition for tp in partitions if tp.partition in self.stores]
        if not gone:
            return
        if not self.failed:
            if self.fault_hook is not None:
                self.fault_hook("revoke_commit", self)
            self.commit()  # before the partitions move: everything processed so far
        self._drop(gone)
        log.info("revoked input partitions %s; owning %s", sorted(gone), sorted(self.stores))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = [tp.partition for tp in partitions if tp.partition in self.stores]
        assert self.transaction is not None
        # the group has moved on: this generation can no longer commit offsets
        self.transaction.abort(self.stores.values(), f"partitions {sorted(gone)} were lost")
        self._drop(gone)
        self._rewind()
        log.warning("lost input partitions %s; owning %s", sorted(gone), sorted(self.stores))

    def _drop(self, partitions: list[int]) -> None:
        assert self.transaction is not None
        self.processor.revoked(partitions)
        self.transaction.forget_partitions(self.config.input_topic, partitions)
        for partition in partitions:
            self.positions.pop(partition, None)
            self.start_offsets.pop(partition, None)
            self.stores.pop(partition).close()
            metrics.forget_partition(partition)
        metrics.ASSIGNED_PARTITIONS.set(len(self.stores))
        self.standby_listed = 0.0  # a standby copy of them from now on, if standbys are on

    def _standby_copy(self, partition: int) -> PartitionStore | None:
        """The standby copy of a partition just assigned (open, near the changelog's end), if any."""
        return self.standby.take(partition) if self.standby is not None else None

    def _open_store(self, partition: int) -> PartitionStore:
        path = self.config.state_dir / f"{self.config.input_topic}-{partition}"
        fault_hook = self.fault_hook
        store_hook = None if fault_hook is None else (lambda point: fault_hook(point, self))
        return PartitionStore(path, self.budget, self.config.changelog_topic, partition, fault_hook=store_hook)


def _start(committed: int) -> int:
    """Where a partition's input starts: its committed offset, else the beginning (no commit yet)."""
    return committed if committed >= 0 else OFFSET_BEGINNING
