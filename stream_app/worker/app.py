"""The Faust wiring: declare the app, its topics, the profile table and the agents once.

Topology (docs/architecture.md):
    clickstream.events ─┐
                        ├─> agent `segment_events` (batches) ─> PartitionEngine (pure core)
    <app>.clock-ticks ──┘        │                                   │
                                 ├─> profiles table (rocksdb:// + changelog)
                                 └─> segments.transitions, segments.memberships, clickstream.dlq
    timer `clock_ticks` ─> <app>.clock-ticks (one tick per partition; drives idle clocks and timers)
    timer `refresh_rfm_population` ─> <app>.rfm-population (each partition's RFM summary) ─> every worker
                                 (task `follow_rfm_population` merges them; re-scoring happens at the next tick)
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import ProducerFenced
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..settings import Settings
from . import metrics
from .allocator import fix_mmap_threshold, trim_free_memory
from .definitions import DefinitionsWatcher
from .faust_fixes import (commit_open_transactions, commit_watchdog, highwaters_from_the_broker, robust_commit_transactions,
                          seek_before_resuming_streams, start_stop_watchdog)
from .memory_report import MemoryReport
from .pipeline import SegmentationPipeline, now_ms
from .population_exchange import PopulationExchange
from .rocksdb_budget import use_shared_budget

log = logging.getLogger(__name__)
CLEAN_STOP_MARKER = "CLEAN_STOP"


def build_app(settings: Settings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=settings.broker_urls,
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee="exactly_once",
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1, settings.session_timeout_s // 4),
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        stream_buffer_maxsize=max(4096, settings.batch_max * 2),
        producer_acks=-1,
        # TLS / SASL (KAFKA_SECURITY_PROTOCOL ...): Faust uses them for the consumer, every producer
        # (transactional ones too) and topic creation
        broker_credentials=settings.kafka_security.faust_credentials(),
    )
    source = app.topic(settings.input_topic, settings.ticks_topic, key_serializer="raw", value_serializer="raw")
    profiles = app.Table("profiles", partitions=settings.partitions, key_type=bytes, value_type=bytes, default=None)
    rocksdb_budget = use_shared_budget(profiles, settings.rocksdb_memory_mb)
    metrics.ROCKSDB_BUDGET.set(rocksdb_budget.budget_bytes)
    watcher = DefinitionsWatcher(settings)
    pipeline = SegmentationPipeline(app, settings, profiles, watcher.config)

    @app.agent(source, name="segment_events")
    async def segment_events(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
            try:
                await pipeline.process(events)
            except ProducerFenced as exc:
                # Faust would restart the agent with the same fenced producer, for ever (seen after a broker
                # restart, tests/test_kafka_faults.py): stop the worker instead (status 70, restarted by its
                # supervisor, state restored from the changelog)
                await app.crash(exc)
                raise

    @app.timer(interval=settings.tick_interval_ms / 1000, name="clock_ticks")
    async def clock_ticks() -> None:
        # Plain (non-transactional) sends: a tick must become readable even when its partition is idle,
        # and consuming it is what lets the partition's transaction commit its timer transitions.
        producer = app.producer
        for tp in app.consumer.assignment():
            if tp.topic == settings.input_topic:
                await producer.send(settings.ticks_topic, None, b"", tp.partition, None, None)

    exchange = PopulationExchange(settings)

    @app.task
    async def follow_rfm_population() -> None:
        await exchange.follow()

    @app.timer(interval=1.0, name="refresh_rfm_population")
    async def refresh_rfm_population() -> None:
        # every rfm.refresh_interval: publish this worker's partition summaries, merge everyone's, and
        # let each owned partition re-score its users at its next tick (in its own transaction)
        if exchange.ready and pipeline.rfm_refresh_due(now_ms()):
            await exchange.publish(app.producer, pipeline.rfm_summaries(exchange.newest_clock()))
            pipeline.set_population(exchange.merged())

    @app.timer(interval=settings.reload_interval_ms / 1000, name="reload_definitions")
    async def reload_definitions() -> None:
        changed = watcher.poll()
        if changed is not None:
            pipeline.set_config(changed)

    @app.task
    async def watch_commits() -> None:
        # a partition that can no longer commit crashes the worker (status 70, restarted by its
        # supervisor) instead of leaving it running with input unprocessed or outputs invisible
        watchdog = commit_watchdog(app.producer)  # installed by robust_commit_transactions (run_worker)
        if watchdog is not None:
            await watchdog.watch(app)

    if settings.malloc_trim_s > 0:

        @app.timer(interval=settings.malloc_trim_s, name="trim_free_memory")
        async def trim_free_memory_timer() -> None:
            trim_free_memory()

    if settings.memory_report_s > 0:
        report = MemoryReport()

        @app.timer(interval=settings.memory_report_s, name="memory_report")
        async def memory_report() -> None:
            report.log(rocksdb_budget.usage())

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        await commit_open_transactions(app.producer)
        pipeline.forget_partitions()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
        pipeline.forget_partitions()
        metrics.ASSIGNED_PARTITIONS.set(sum(1 for tp in assigned if tp.topic == settings.input_topic))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        metrics.ROCKSDB_CACHE.set(rocksdb_budget.usage()["cache"])
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app


class _Worker(faust.Worker):
    """faust.Worker with a bounded stop: a watchdog starts with the first stop signal."""

    stop_grace_s = 20

    def _schedule_shutdown(self, signal: Any) -> None:
        start_stop_watchdog(self.stop_grace_s)
        super()._schedule_shutdown(signal)


def _discard_state_after_unclean_stop(settings: Settings, tables: Path) -> None:
    """The local RocksDB copy can hold writes of a transaction that never committed. After an unclean
    stop it is discarded, and Faust restores the tables from the read_committed changelog."""
    marker = settings.data_dir / CLEAN_STOP_MARKER
    # only RocksDB partitions (`<table>-<partition>.db`) count as state: the store creates an empty
    # `<table>-backups` folder as soon as it is built, before anything is stored
    has_state = tables.exists() and any(p.suffix == ".db" for p in tables.iterdir())
    if has_state and not marker.exists():
        log.warning("the last stop was not clean: discarding local state in %s; it is restored from the changelog", tables)
        shutil.rmtree(tables)
    marker.unlink(missing_ok=True)


def run_worker(settings: Settings) -> None:
    from .topics import ensure_topics

    from ..kafka_security import KafkaAccessError, check_access

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(levelname)s] %(message)s")
    fix_mmap_threshold()  # before RocksDB and Kafka allocate: large blocks stay out of the heap (worker/allocator.py)
    try:
        check_access(settings.kafka_security, settings.bootstrap_servers)
    except KafkaAccessError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    ensure_topics(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings)
    robust_commit_transactions(app.producer)
    highwaters_from_the_broker()
    seek_before_resuming_streams()
    _discard_state_after_unclean_stop(settings, Path(app.conf.tabledir))
    worker = _Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.stop_grace_s = settings.stop_grace_s
    try:
        worker.execute_from_commandline()
    finally:
        if not app.crashed:
            (settings.data_dir / CLEAN_STOP_MARKER).write_text("clean\n")
        else:  # Faust can exit 0 after a crash; a supervisor must see a failure and start the worker again
            log.error("the worker crashed (%r); exiting with status 70; the next start restores the state from the changelog",
                      getattr(app, "_crash_reason", None))
            raise SystemExit(70)
