"""Prometheus metrics. Labels never carry user ids: only event types, reasons, segments, partitions.

A gauge's `multiprocess_mode` says how `stream-app worker --processes N` adds up its processes' values
(worker/supervisor.py); with one process it has no effect."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter("stream_app_events_consumed_total", "Valid input events consumed, by Segment type", ["type"])
DEAD_LETTERS = Counter("stream_app_dead_letters_total", "Input messages sent to the dead-letter topic, by reason", ["reason"])
DUPLICATES = Counter("stream_app_duplicate_events_total", "Events dropped because their messageId was seen within the dedup window")
LATE_EVENTS = Counter("stream_app_late_events_total",
                      "Events older than their user's decided-until time (applied, transitions not taken back)")
BACKFILL_EVENTS = Counter("stream_app_backfill_events_total", "Events older than the backfill age when read (decided on the backfill clock)")
TRANSITIONS = Counter("stream_app_transitions_total", "Segment transitions emitted", ["segment", "direction"])
EMIT_LATENCY = Histogram(
    "stream_app_event_time_to_emit_seconds",
    "Wall time at commit minus the transition's event time (transitions that are not historical)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)
POPULATION = Gauge("stream_app_segment_population", "Users currently in each segment member", ["segment", "member"], multiprocess_mode="livesum")
RFM_POPULATION = Gauge("stream_app_rfm_scored_customers", "Customers in the merged RFM population (all partitions, all workers)",
                       multiprocess_mode="livemax")
PARTITION_CLOCK = Gauge("stream_app_partition_clock_seconds", "Live event-time clock of each partition (epoch seconds)", ["partition"],
                        multiprocess_mode="livemax")
BACKFILL_CLOCK = Gauge("stream_app_partition_backfill_clock_seconds",
                       "Backfill clock of each partition (epoch seconds); 0 when no backfill runs", ["partition"],
                       multiprocess_mode="livemax")
BATCH_SIZE = Histogram("stream_app_batch_size", "Input records per processed batch", buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000))
ROCKSDB_CACHE = Gauge("stream_app_rocksdb_cache_bytes", "RocksDB's shared block cache in use, memtables included (driver/store.py)",
                      multiprocess_mode="livesum")
ROCKSDB_BUDGET = Gauge("stream_app_rocksdb_budget_bytes", "RocksDB's memory budget (STREAM_APP_ROCKSDB_MEMORY_MB)", multiprocess_mode="livesum")
PROCESS_READY = Gauge("stream_app_process_ready", "1 while this engine process is ready (as /readyz); summed over --processes",
                      multiprocess_mode="livesum")
DROPPED_DORMANT = Counter("stream_app_dormant_profiles_dropped_total", "Profiles dropped after 400 days without events")


STATE_EVICTIONS = Counter("stream_app_state_evictions_total",
                          "Entries dropped because a per-user structure reached its bound (docs/segments.md)", ["structure"])


def direction(before: str | None, after: str | None) -> str:
    return "enter" if before is None else "exit" if after is None else "move"


def observe_transitions(moves: dict[tuple[str, str], int], population: dict[tuple[str, str], int]) -> None:
    """A batch's transitions, counted per (segment, direction) and their net effect per (segment, member),
    labels already mapped (`usage.metric_label`): one labelled update per series, not per transition."""
    for (segment, way), count in moves.items():
        TRANSITIONS.labels(segment, way).inc(count)
    for (segment, member), change in population.items():
        POPULATION.labels(segment, member).inc(change)  # a net 0 still shows the series, as before


CLOCK_TICKS = Counter("stream_app_clock_ticks_total", "Wall-clock punctuations: idle partitions' clocks follow the wall clock, due timers fire")
TIMER_LATENESS = Histogram(
    "stream_app_timer_lateness_seconds",
    "From the partition clock passing a timer's due time to the commit of its transition",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
