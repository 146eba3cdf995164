"""The segmentation processor: the application's side of the shell, run by the driver (`driver/loop.py`).

Per owned partition it keeps a `PartitionEngine` (the pure core) over the partition's store. It turns
each `BatchResult` into records of the open transaction (transitions, membership snapshots, dead
letters) and stages its profile writes in the store; the driver commits them (`driver/transaction.py`).
On the wall clock (`punctuate`) it moves idle partitions' clocks and fires timers, applies changed
definitions and RFM populations, and publishes this process's RFM summaries, all inside the same
transaction as the partition's offsets. Metrics that count work are observed only once it is committed,
so an aborted and repeated batch is counted once.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Callable, Sequence

from ..driver import metrics as driver_metrics
from ..driver.loop import Outputs
from ..driver.store import PartitionStore
from ..engine import BatchResult, PartitionEngine, RawRecord
from ..engine.partition import WORKER_MIN_TIMERS_PER_CALL, WORKER_TIMERS_PER_TRANSACTION
from ..segments.config import CatalogConfig
from ..segments.usage import metric_label
from ..segments.rfm_population import reference_for
from ..settings import Settings
from ..timeutil import format_timestamp
from . import metrics
from .population_exchange import PopulationExchange

log = logging.getLogger(__name__)


# one encoder for every record: `json.dumps` with options builds a new encoder per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _json(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def _key(user_id: str) -> bytes:
    return user_id.encode("utf-8", "surrogatepass")


class SegmentationProcessor:
    def __init__(self, settings: Settings, cfg: CatalogConfig, exchange: PopulationExchange | None = None,
                 lag: Callable[[int], int | None] | None = None) -> None:
        self.settings = settings
        self.cfg = cfg
        self.exchange = exchange
        self.lag = lag or (lambda partition: None)
        self.stores: dict[int, PartitionStore] = {}
        self.engines: dict[int, PartitionEngine] = {}
        self.population: dict[int, Counter] = {}
        self._published_population: set[tuple[str, str]] = set()
        self.reevaluate: set[int] = set()
        self.loaded_at = int(time.time() * 1000)
        self.rfm_population: Any = None
        self.rfm_refresh: set[int] = set()  # partitions to re-score against rfm_population at their next step
        self.rfm_refreshed_at = 0
        self.last_step_wall: dict[int, int] = {}
        # results produced in the open transaction, observed in the metrics once it commits
        self._uncommitted: list[tuple[int, BatchResult, int, int]] = []
        self._uncommitted_batches: list[int] = []  # sizes of the input batches in the open transaction
        self.housekeeping: Callable[[], None] = lambda: None  # reloads, heap trims (worker/app.py)

    # -- the driver's calls ---------------------------------------------------------------------------
    def assigned(self, stores: dict[int, PartitionStore]) -> None:
        self.stores.update(stores)
        self._share_timer_budget()
        profiles = sum(len(self._engine(partition).schedule) for partition in stores)
        driver_metrics.RESTORED_PROFILES.set(profiles)

    def revoked(self, partitions: Sequence[int]) -> None:
        for partition in partitions:
            self.stores.pop(partition, None)
            self.engines.pop(partition, None)
            self.population.pop(partition, None)
            self.reevaluate.discard(partition)
            self.rfm_refresh.discard(partition)
        self._share_timer_budget()
        self._publish_population()

    def rolled_back(self) -> None:
        """The transaction was aborted: every engine returns to its last commit (clocks, schedules, RFM
        index, definitions; the hot profiles the aborted batches changed in place are dropped), in the
        time of the changes since, and everything not yet observed is forgotten. The population gauges
        count committed transitions only: they stay."""
        self._uncommitted.clear()
        self._uncommitted_batches.clear()
        self.last_step_wall.clear()
        # the aborted summaries never reached the topic: publish again (the exchange still holds this
        # process's aborted summaries meanwhile, so a refresh queued below may first use a population the
        # other processes never saw; the republish at the next punctuation sets it right)
        self.rfm_refreshed_at = 0
        for partition, engine in self.engines.items():
            engine.rollback()
            # decided again under the current definitions, as before the abort (a pass still running at the
            # last commit goes on by itself)
            stored_under_other = not engine.deciding and engine.saved_definitions != self.cfg.version
            if engine.cfg.version != self.cfg.version or stored_under_other:
                self.reevaluate.add(partition)
            if self.rfm_population is not None and engine.cfg.rfm_population is not self.rfm_population:
                self.rfm_refresh.add(partition)  # the aborted refresh, again

    def process(self, partition: int, messages: Sequence[Any], wall_ms: int, out: Outputs) -> None:
        engine = self._engine(partition)
        self._pending_decisions(partition, engine, wall_ms, out, go_on=False)
        records = [RawRecord(m.value() or b"", m.topic(), partition, m.offset()) for m in messages]
        self._uncommitted_batches.append(len(records))
        self._emit(partition, engine.handle(records, wall_ms), wall_ms, out)

    def punctuate(self, wall_ms: int, out: Outputs) -> None:
        """Wall-clock progress on every owned partition, in the open transaction."""
        self.housekeeping()
        if self.exchange is not None:
            self.exchange.poll()
            if self.exchange.ready and self.rfm_refresh_due(wall_ms):
                self.exchange.publish(out, self.rfm_summaries(self.exchange.newest_clock()))
                self.set_population(self.exchange.merged())
        for partition in sorted(self.stores):
            engine = self._engine(partition)
            self._pending_decisions(partition, engine, wall_ms, out, go_on=True)
            lag = self.lag(partition)
            caught_up = lag is not None and lag <= 1  # 1: a transactional producer's commit marker
            self._emit(partition, engine.tick(wall_ms, caught_up), wall_ms, out)
        metrics.CLOCK_TICKS.inc()

    def committed(self, wall_ms: int) -> None:
        done, self._uncommitted = self._uncommitted, []
        for partition, result, step_wall, previous_step_wall in done:
            self._observe(partition, result, wall_ms, step_wall, previous_step_wall)
        for size in self._uncommitted_batches:
            metrics.BATCH_SIZE.observe(size)
        self._uncommitted_batches = []
        for partition, engine in self.engines.items():
            engine.checkpoint()
            metrics.PARTITION_CLOCK.labels(str(partition)).set(engine.clock / 1000)
            metrics.BACKFILL_CLOCK.labels(str(partition)).set((engine.backfill_clock or 0) / 1000)

    # -- configuration and population -----------------------------------------------------------------
    def set_config(self, cfg: CatalogConfig) -> None:
        """New definitions: each partition decides every user again at its next step, in the transaction."""
        self.cfg = replace(cfg, rfm_population=self.rfm_population)
        self.loaded_at = int(time.time() * 1000)
        self.reevaluate = set(self.stores)

    def rfm_refresh_due(self, wall_ms: int) -> bool:
        if not self.cfg.rfm_enabled or not self.stores:
            return False
        return wall_ms - self.rfm_refreshed_at >= self.cfg.rfm_refresh_ms

    def rfm_summaries(self, known_clock: int = 0) -> dict[int, Any]:
        """Summaries of the owned partitions, all measured from one reference: the newest partition
        clock known (``known_clock`` covers other processes' partitions), rounded down to the hour."""
        self.rfm_refreshed_at = int(time.time() * 1000)
        engines = {partition: self._engine(partition) for partition in self.stores}
        newest = max([known_clock, *(engine.clock for engine in engines.values())])
        reference = reference_for(newest)
        return {partition: engine.rfm_summary(reference) for partition, engine in engines.items()}

    def set_population(self, population: Any) -> None:
        self.rfm_population = population
        self.cfg = replace(self.cfg, rfm_population=population)
        self.rfm_refresh = set(self.stores)
        metrics.RFM_POPULATION.set(population.size)

    # -- internals ------------------------------------------------------------------------------------
    def _timers_per_call(self) -> int:
        """Each owned partition's share of the users whose timers one transaction may fire: a step calls
        each engine about twice (its batch and the punctuation's tick); a running pass of new definitions
        decides half a share more at the punctuation (docs/architecture.md)."""
        return max(WORKER_MIN_TIMERS_PER_CALL, WORKER_TIMERS_PER_TRANSACTION // (2 * max(1, len(self.stores))))

    def _share_timer_budget(self) -> None:
        """The owned partitions changed: each engine's share of the budget with them."""
        share = self._timers_per_call()
        for engine in self.engines.values():
            engine.timers_per_step = share

    def _engine(self, partition: int) -> PartitionEngine:
        engine = self.engines.get(partition)
        if engine is None:
            engine = PartitionEngine(partition, self.stores[partition], self.cfg, max_event_bytes=self.settings.max_event_bytes,
                                     hot_profiles=self.settings.hot_profiles, undo=True,
                                     timers_per_step=self._timers_per_call())
            started = time.monotonic()
            population: Counter = Counter()
            store = self.stores[partition]
            vouched = store.entries_vouched
            for (segment, member), count in engine.rebuild_schedule().items():
                population[(metric_label(segment, self.cfg), metric_label(member, self.cfg))] += count
            self.population[partition] = population
            self._publish_population()
            computed = engine.computed_entries
            log.info("partition %d: schedule rebuilt for %d profiles in %.2f s (%d of them without a current schedule "
                     "entry)", partition, engine.rebuilt_profiles, time.monotonic() - started, len(computed))
            if computed or not vouched:
                store.keep_schedule_entries(computed, complete=not vouched)
            engine.computed_entries = {}
            if engine.saved_definitions != self.cfg.version:
                # the definitions changed while this partition was not processed here: decide everyone again
                log.info("partition %d: stored memberships were decided under other definitions; deciding again", partition)
                self.reevaluate.add(partition)
            self.engines[partition] = engine
        return engine

    def _pending_decisions(self, partition: int, engine: PartitionEngine, wall_ms: int, out: Outputs, go_on: bool) -> None:
        """Changed definitions and a new RFM population take effect before the partition's next events.
        New definitions decide a bounded number of users per call: the punctuation (``go_on``) goes on
        with a running pass (`PartitionEngine.decide_pending`), a batch meets its users one by one, and
        newer definitions and a population wait for the pass to end. Both wait too while users are left
        due by the bound on timers per call (engine/partition.py), so that every timer due before the
        change is decided under what it replaces; an engine whose stored users are not all decided under
        its own definitions (made after a restart, or a pass left half-way) has nothing to wait for."""
        if engine.deciding:
            if go_on:
                self._emit(partition, engine.decide_pending(wall_ms), wall_ms, out)
                self._log_pass_end(partition, engine)
            if engine.deciding:
                return
        if partition in self.reevaluate:
            if engine.left_due and engine.saved_definitions == engine.cfg.version:
                return
            self.reevaluate.discard(partition)
            self._emit(partition, engine.reevaluate_all(self.cfg, wall_ms, self.loaded_at), wall_ms, out)
            if engine.deciding:
                log.info("partition %d: deciding %d stored users again under definitions %s, a share at each "
                         "punctuation", partition, len(engine.definitions_pass.users), self.cfg.version)
                return
            self._log_pass_end(partition, engine)  # all of them in this one call
        if engine.left_due:
            return
        if partition in self.rfm_refresh and self.rfm_population is not None:
            self.rfm_refresh.discard(partition)
            self._emit(partition, engine.refresh_population(self.rfm_population, wall_ms), wall_ms, out)

    @staticmethod
    def _log_pass_end(partition: int, engine: PartitionEngine) -> None:
        """The line operators wait for before going back to an older release (docs/upgrading.md)."""
        if not engine.deciding:
            log.info("partition %d: every stored user is decided under definitions %s", partition, engine.saved_definitions)

    def _emit(self, partition: int, result: BatchResult, wall_ms: int, out: Outputs) -> None:
        settings = self.settings
        for record in result.transitions:
            out.send(settings.transitions_topic, _key(record["user_id"]), _json(record))
        for user_id, snapshot in result.memberships.items():
            out.send(settings.memberships_topic, _key(user_id), None if snapshot is None else _json(snapshot))
        for record, invalid in result.dead_letters:
            letter = {
                "reason": invalid.reason.value,
                "detail": invalid.detail,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "original": base64.b64encode(record.value).decode(),
                "received_at": format_timestamp(wall_ms),
            }
            out.send(settings.dlq_topic, None, _json(letter))
        self.stores[partition].stage(result.writes, result.entries)
        result.writes = {}
        result.entries = {}
        result.memberships = {}
        previous = self.last_step_wall.get(partition, wall_ms)
        self.last_step_wall[partition] = wall_ms
        if result.transitions or result.dead_letters or result.counts:
            self._uncommitted.append((partition, result, wall_ms, previous))

    def _observe(self, partition: int, result: BatchResult, committed_wall: int, step_wall: int, previous_step_wall: int) -> None:
        counts = result.counts
        for key, value in counts.items():
            if key.startswith("type:"):
                metrics.EVENTS_CONSUMED.labels(key[5:]).inc(value)
        if counts.get("duplicate"):
            metrics.DUPLICATES.inc(counts["duplicate"])
        if counts.get("late"):
            metrics.LATE_EVENTS.inc(counts["late"])
            log.info("partition %d: %d events older than their user's decided-until time were applied late "
                     "(produce each user's events in timestamp order)", partition, counts["late"])
        if counts.get("backfill"):
            metrics.BACKFILL_EVENTS.inc(counts["backfill"])
        if counts.get("dropped_dormant"):
            metrics.DROPPED_DORMANT.inc(counts["dropped_dormant"])
        for _record, invalid in result.dead_letters:
            metrics.DEAD_LETTERS.labels(invalid.reason.value).inc()
        population = self.population.setdefault(partition, Counter())
        allowance = self.cfg.lateness_ms
        for key, value in counts.items():
            if key.startswith("evicted:"):
                metrics.STATE_EVICTIONS.labels(key[8:]).inc(value)
        moves: Counter = Counter()
        changed: Counter = Counter()
        cfg = self.cfg
        for record, at in zip(result.transitions, result.transition_times):
            segment = metric_label(record["segment"], cfg)
            before, after = metric_label(record["from"], cfg), metric_label(record["to"], cfg)
            moves[(segment, metrics.direction(before, after))] += 1
            if before is not None:
                changed[(segment, before)] -= 1
            if after is not None:
                changed[(segment, after)] += 1
            if record["historical"]:
                continue  # the latency histograms measure live decisions, not history
            metrics.EMIT_LATENCY.observe(max(0.0, (committed_wall - at) / 1000))
            if record["cause"]["type"] == "timer":
                # the clock passed the due time when the wall clock reached due + allowance (an idle
                # partition), but not before this partition's previous step (else that step fired it)
                passed = min(step_wall, max(at + allowance, previous_step_wall))
                metrics.TIMER_LATENESS.observe(max(0.0, (committed_wall - passed) / 1000))
        if moves:
            metrics.observe_transitions(moves, changed)
            population.update(changed)

    def _publish_population(self) -> None:
        total: Counter = Counter()
        for counter in self.population.values():
            total.update(counter)
        for key in self._published_population - set(total):
            metrics.POPULATION.labels(*key).set(0)
        for (segment, member), count in total.items():
            metrics.POPULATION.labels(segment, member).set(count)
        self._published_population = set(total)
