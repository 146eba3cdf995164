"""Exactly once into the topic: batches in Kafka transactions, each carrying its own checkpoint.

Each transaction holds one batch of events and one record on the progress topic (`<app id>-import-progress`,
compacted, one partition, key = the import's id) saying where the merge of the sorted runs stands after
that batch. Both become visible together or not at all. So on a restart:

1. `init_transactions` with the import's stable transactional.id (`<app id>-import-<id>`) fences a
   predecessor that is still running and aborts its open transaction: its half-sent batch is never seen
   by a read_committed reader (the worker).
2. The progress topic is read with read_committed up to its end, waiting until no open transaction is
   left before that end: the import's last committed record is where it stopped.
3. The merge starts again from those run offsets; the first batch is the first one not committed.

The local checkpoint file is written (atomically) after each commit. It can be behind the progress topic
(a kill between the commit and the write), never ahead; when it is ahead (the progress record was
deleted), the import stops rather than risk sending twice. The events are sent keyed by user with the
murmur2 partitioner (as `stream-app produce`), in the merged (timestamp, messageId) order, idempotently,
so each partition receives them in that order.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ..settings import Settings
from .external_sort import merge_runs
from .prepare import KEY, VALUE, by_time
from .progress import ProgressBar
from .work_files import read_json, write_json_atomically

log = logging.getLogger(__name__)
TIMEOUT_S = 60.0
ABORTED_BATCH_RETRIES = 5
# a test may stop the import at these points (tests/import_with_pause.py); the command never sets one
Pause = Callable[[str, int], None]


class ImportFailed(Exception):
    """The import cannot go on; what was committed stays committed, and a rerun resumes after it."""


@dataclass(frozen=True)
class TopicTarget:
    settings: Settings
    topic: str
    identity: str
    batch_size: int
    checkpoint: Path  # the local checkpoint file
    progress: bool | None

    @property
    def progress_topic(self) -> str:
        return progress_topic(self.settings)

    @property
    def transactional_id(self) -> str:
        return f"{self.settings.app_id}-import-{self.identity[:20]}"


@dataclass(frozen=True)
class SendResult:
    sent_before: int  # committed by earlier runs of this import
    sent_now: int
    batches: int


def progress_topic(settings: Settings) -> str:
    return f"{settings.app_id}-import-progress"


def ensure_progress_topic(settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "client.id": f"{settings.app_id}-import-admin",
                         **settings.kafka_security.librdkafka_config()})
    name = progress_topic(settings)
    if name in admin.list_topics(timeout=TIMEOUT_S).topics:
        return
    spec = NewTopic(name, 1, settings.replication_factor, config={"cleanup.policy": "compact"})
    for future in admin.create_topics([spec], operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def _client_config(settings: Settings, role: str) -> dict[str, Any]:
    return {"bootstrap.servers": settings.bootstrap_servers, "client.id": f"{settings.app_id}-import-{role}",
            **settings.kafka_security.librdkafka_config(), "logger": logging.getLogger("stream_app.importer.kafka")}


def read_committed_progress(settings: Settings, identity: str) -> dict[str, Any] | None:
    """The import's last committed progress record. Read once every transaction with records before the
    progress topic's current end is decided (its last stable offset has reached that end): a
    read_committed reader stops at the first open transaction, and would miss a later committed record."""
    topic = progress_topic(settings)
    partition = TopicPartition(topic, 0)
    common = {**_client_config(settings, "progress"), "group.id": f"{settings.app_id}-import-unused", "enable.auto.commit": False}
    probe = Consumer({**common, "isolation.level": "read_uncommitted"})
    try:
        _low, end = probe.get_watermark_offsets(partition, timeout=TIMEOUT_S, cached=False)
    finally:
        probe.close()
    consumer = Consumer({**common, "isolation.level": "read_committed", "enable.partition.eof": True})
    deadline = time.monotonic() + 2 * TIMEOUT_S  # an open transaction ends within its timeout (60 s)
    try:
        while consumer.get_watermark_offsets(partition, timeout=TIMEOUT_S, cached=False)[1] < end:
            if time.monotonic() > deadline:
                raise ImportFailed(f"the progress topic {topic} keeps an open transaction before offset {end}; "
                                   "another import may be stuck: try again in a minute")
            time.sleep(0.2)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        latest: dict[str, Any] | None = None
        while True:
            message = consumer.poll(1.0)
            if message is None:
                if time.monotonic() > deadline:
                    raise ImportFailed(f"no end of the progress topic {topic} within {2 * TIMEOUT_S:.0f} s")
                continue
            error = message.error()
            if error is None:
                if message.key() == identity.encode():
                    latest = json.loads(message.value()) if message.value() is not None else None
            elif error.code() == KafkaError._PARTITION_EOF:
                return latest
    finally:
        consumer.close()


class TopicSender:
    """`open` (fence a predecessor, read where the import stands), then `send` the rest."""

    def __init__(self, target: TopicTarget, pause: Pause | None = None) -> None:
        self.target = target
        self.pause = pause or (lambda _stage, _batch: None)
        self.producer = Producer({
            **_client_config(target.settings, "producer"),
            "transactional.id": target.transactional_id, "enable.idempotence": True, "acks": "all",
            "linger.ms": 20, "transaction.timeout.ms": int(TIMEOUT_S * 1000),
            "partitioner": "murmur2_random",  # the placement of `stream-app produce` and the Java client
        })

    def open(self) -> dict[str, Any]:
        """Register the transactional id (aborting a dead predecessor's open transaction), then return the
        import's last committed progress ({} when nothing was committed yet)."""
        try:
            self.producer.init_transactions(TIMEOUT_S)
        except KafkaException as exc:
            raise ImportFailed(f"could not register the import's transactional id with Kafka at "
                               f"{self.target.settings.bootstrap_servers}: {exc.args[0].str()}") from None
        committed = read_committed_progress(self.target.settings, self.target.identity) or {}
        self._check_local_checkpoint(committed)
        if committed.get("done"):
            self._write_checkpoint(committed)
        return committed

    def send(self, runs: list[Path], fingerprint: str, total_events: int, committed: dict[str, Any]) -> SendResult:
        batch, sent_before = committed.get("batch", 0), committed.get("sent", 0)
        if committed.get("done"):
            return SendResult(sent_before, 0, 0)
        if committed and committed.get("runs") != fingerprint:
            raise ImportFailed("the committed progress refers to sorted runs other than these (prepared again with another "
                               "--run-size?); run the import with the options it was started with")
        offsets: list[int] = list(committed.get("offsets") or [0] * len(runs))
        bar = ProgressBar("send", "event", None, total_events, self.target.progress)
        bar.update(sent_before, 0)
        sent = sent_before
        batches = 0
        merged = merge_runs(runs, by_time, offsets)
        try:
            while True:
                chunk: list[tuple[bytes, bytes]] = []
                for record, run, after in merged:
                    chunk.append((record[KEY].encode("utf-8"), record[VALUE]))
                    offsets[run] = after
                    if len(chunk) >= self.target.batch_size:
                        break
                done = not chunk  # the merge is used up: one last transaction says so
                batch += 1
                sent += len(chunk)
                progress = {"import": self.target.identity, "batch": batch, "offsets": list(offsets), "sent": sent,
                            "done": done, "topic": self.target.topic, "runs": fingerprint}
                self._commit(chunk, progress)
                self._write_checkpoint(progress)
                self.pause("checkpointed", batch)
                bar.update(len(chunk), 0)
                batches += 1
                if done:
                    break
        finally:
            bar.close()
        return SendResult(sent_before, sent - sent_before, batches)

    # -- one transaction --------------------------------------------------------------------------------
    def _commit(self, chunk: list[tuple[bytes, bytes]], progress: dict[str, Any]) -> None:
        """The batch and its progress record in one transaction; an aborted attempt is made again whole."""
        for attempt in range(ABORTED_BATCH_RETRIES):
            try:
                self.producer.begin_transaction()
                for key, value in chunk:
                    self._produce(self.target.topic, key, value)
                self._produce(self.target.progress_topic, self.target.identity.encode(),
                              json.dumps(progress, sort_keys=True).encode())
                self.pause("produced", progress["batch"])
                self._commit_transaction()
                self.pause("committed", progress["batch"])
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is None or error.fatal() or not error.txn_requires_abort():
                    raise ImportFailed(f"Kafka refused the import's transaction: {error.str() if error else exc} "
                                       "(another run of the same import took over?); run it again to resume") from None
                log.warning("batch %d: transaction aborted (%s); sending it again (%d)", progress["batch"], error.str(), attempt + 1)
                self.producer.abort_transaction(TIMEOUT_S)
        raise ImportFailed(f"batch {progress['batch']} was aborted {ABORTED_BATCH_RETRIES} times; run the import again to resume")

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key)
                return
            except BufferError:  # librdkafka's queue is full: let it deliver
                self.producer.poll(0.05)

    def _commit_transaction(self) -> None:
        """After a retriable error the commit may still be completing: calling again learns its outcome."""
        for _attempt in range(10):
            try:
                self.producer.commit_transaction(TIMEOUT_S)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable() and not error.txn_requires_abort() and not error.fatal():
                    continue
                raise
        raise ImportFailed("a transaction's commit did not complete after 10 attempts; run the import again to resume")

    # -- the local checkpoint ---------------------------------------------------------------------------
    def _check_local_checkpoint(self, committed: dict[str, Any]) -> None:
        local = read_json(self.target.checkpoint)
        if local is not None and local.get("import") == self.target.identity and local.get("batch", 0) > committed.get("batch", 0):
            raise ImportFailed(
                f"the checkpoint file says {local['batch']} batches were committed, but the progress topic "
                f"{self.target.progress_topic} holds {committed.get('batch', 0)}: its records were lost, so the import "
                "cannot tell what was sent; it stops rather than send anything twice")

    def _write_checkpoint(self, progress: dict[str, Any]) -> None:
        write_json_atomically(self.target.checkpoint, progress)


def cluster_id(settings: Settings) -> str:
    """The Kafka cluster's id: part of an import's identity (however its bootstrap servers are spelled)."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, **settings.kafka_security.librdkafka_config()})
    try:
        return str(admin.list_topics(timeout=TIMEOUT_S).cluster_id)
    except KafkaException as exc:
        raise ImportFailed(f"no answer from Kafka at {settings.bootstrap_servers}: {exc.args[0].str()}") from None


def check_topic_exists(settings: Settings, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, **settings.kafka_security.librdkafka_config()})
    try:
        metadata = admin.list_topics(topic=topic, timeout=TIMEOUT_S).topics.get(topic)
    except KafkaException as exc:
        raise ImportFailed(f"no answer from Kafka at {settings.bootstrap_servers}: {exc.args[0].str()}") from None
    if metadata is None or metadata.error is not None:
        raise ImportFailed(f"topic {topic} does not exist on {settings.bootstrap_servers}; create it, or leave out the "
                           "topic name to send to the input topic (STREAM_APP_INPUT_TOPIC)")

