"""`stream-app worker`: wire the driver, the segmentation processor and the HTTP endpoints, and run.

    clickstream.events ──▶ driver (driver/loop.py) ──▶ SegmentationProcessor (worker/segmentation.py)
                                │                          └─▶ PartitionEngine per partition (pure core)
                                ├─▶ segments.transitions, segments.memberships, clickstream.dlq,
                                │   <app>-profiles-changelog, <app>.rfm-population: one transaction
                                └─▶ local RocksDB per partition, written after each commit
    <app>.rfm-population ──▶ PopulationExchange (every process reads every partition's summary)
    /metrics, /healthz, /readyz ──▶ driver/web.py

Exit status: 0 after a stop signal, 70 when the process cannot go on (fenced by a newer process with the
same slot, a failed batch, ...): its supervisor starts it again and it resumes from the changelog.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ..driver.clients import SlotConfig
from ..driver.loop import DriverConfig, StreamDriver
from ..driver.store import LocalStateCorrupt, LocalStateInUse, LocalStateUnwritable
from ..driver.transaction import SlotFenced
from ..driver.web import health_app, serve
from ..settings import Settings
from . import metrics
from .allocator import fix_mmap_threshold, trim_free_memory
from .definitions import DefinitionsWatcher
from .memory_report import MemoryReport
from .population_exchange import PopulationExchange
from .process_control import EXIT_RESTART, configure_logging, exit_when_stuck, stop_on_signals, stop_when_orphaned
from .segmentation import SegmentationProcessor

log = logging.getLogger(__name__)
MIB = 1 << 20


class Housekeeping:
    """Process-level chores on the wall clock, run at the driver's punctuations (main thread)."""

    def __init__(self, settings: Settings, watcher: DefinitionsWatcher, processor: SegmentationProcessor, driver: StreamDriver) -> None:
        self.settings, self.watcher, self.processor, self.driver = settings, watcher, processor, driver
        self.report = MemoryReport() if settings.memory_report_s > 0 else None
        now = time.monotonic()
        self.next = {"reload": now, "trim": now + settings.malloc_trim_s, "report": now + settings.memory_report_s}

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self.next["reload"]:
            self.next["reload"] = now + self.settings.reload_interval_ms / 1000
            changed = self.watcher.poll()
            if changed is not None:
                self.processor.set_config(changed)
        if self.settings.malloc_trim_s > 0 and now >= self.next["trim"]:
            self.next["trim"] = now + self.settings.malloc_trim_s
            trim_free_memory()
        report_process_state(self.driver)
        if self.report is not None and now >= self.next["report"]:
            self.next["report"] = now + self.settings.memory_report_s
            self.report.log(self.driver.budget.usage())


def report_process_state(driver: StreamDriver) -> None:
    """The gauges read from the driver rather than counted: at each scrape of this process, and at each
    punctuation for `--processes N`, whose supervisor reads them from the shared files."""
    metrics.PROCESS_READY.set(1 if driver.ready() else 0)
    metrics.ROCKSDB_CACHE.set(driver.budget.usage()["cache"])


def build_worker(settings: Settings, fault_hook: Any = None) -> tuple[StreamDriver, SegmentationProcessor, PopulationExchange]:
    watcher = DefinitionsWatcher(settings)
    slot = SlotConfig(
        bootstrap_servers=settings.bootstrap_servers, group_id=settings.app_id, instance_id=settings.slot_id,
        session_timeout_ms=settings.session_timeout_s * 1000, security=settings.kafka_security.librdkafka_config(),
    )
    exchange = PopulationExchange(settings)
    processor = SegmentationProcessor(settings, watcher.config, exchange)
    driver = StreamDriver(DriverConfig(
        slot=slot, input_topic=settings.input_topic, changelog_topic=settings.changelog_topic,
        state_dir=settings.data_dir / "state", rocksdb_budget_bytes=settings.rocksdb_memory_mb * MIB,
        batch_max=settings.batch_max, commit_interval_ms=settings.commit_interval_ms,
        punctuate_interval_ms=settings.clock_interval_ms, standby=settings.standby,
    ), processor, fault_hook=fault_hook)
    processor.lag = driver.lag
    processor.housekeeping = Housekeeping(settings, watcher, processor, driver)
    metrics.ROCKSDB_BUDGET.set(driver.budget.budget_bytes)
    return driver, processor, exchange


# settings of the Faust-based worker that mean nothing any more (docs/upgrading.md)
RETIRED_SETTINGS = {
    "STREAM_APP_TICK_INTERVAL_MS": "timers run inside the process; STREAM_APP_CLOCK_INTERVAL_MS sets how often",
    "STREAM_APP_BATCH_WITHIN_MS": "the worker takes what the consumer has buffered without waiting; STREAM_APP_BATCH_MAX caps a batch",
}


def _warn_about_retired_settings(environ: dict[str, str]) -> list[str]:
    warnings = [f"{name} is set but no longer used: {why} (docs/upgrading.md)" for name, why in RETIRED_SETTINGS.items() if name in environ]
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def _warn_about_faust_state(settings: Settings) -> None:
    old = settings.data_dir / "v1" / "tables"
    if old.exists():
        log.warning("%s holds the Faust-based worker's local state, which this worker does not read (it restores "
                    "from the changelog); delete it to free the disk (docs/upgrading.md)", old)


def disk_refused_message(settings: Settings, exc: LocalStateUnwritable) -> str:
    """What an operator reads when the disk under STREAM_APP_DATA_DIR refuses a write (docs/reliability.md,
    "Disk full"): what is wrong, how to fix it, and that nothing is lost."""
    where = f"STREAM_APP_DATA_DIR={settings.data_dir.resolve()}"
    if exc.full:
        problem = f"the disk holding the local state ({where}) is full"
        fix = "Free space on that disk or give the volume more, then start the worker again"
    else:
        problem = f"the local state ({where}) cannot be written: the disk is read-only or the worker's user may not write there"
        fix = "Mount it read-write or give the worker's user write access to the folder, then start the worker again"
    return (f"{problem}: RocksDB could not write partition {exc.partition}'s store at {exc.path} ({exc.detail}). {fix}. "
            "Nothing committed is lost and the local state is kept as it is: the next start reads what it misses "
            "from the changelog")


def run_worker(settings: Settings, fault_hook: Any = None) -> None:
    """`fault_hook`: tests only (tests/crash_worker.py); the command line never passes one."""
    from ..kafka_security import KafkaAccessError, check_access
    from .topics import ensure_topics

    configure_logging(settings.log_level)
    stop = threading.Event()
    stop_on_signals(stop, settings.stop_grace_s)
    supervisor = os.environ.get("STREAM_APP_SUPERVISOR_PID")  # set by `--processes N` (worker/supervisor.py)
    if supervisor:
        stop_when_orphaned(stop, int(supervisor))
    fix_mmap_threshold()  # before RocksDB and Kafka allocate: large blocks stay out of the heap (worker/allocator.py)
    try:
        check_access(settings.kafka_security, settings.bootstrap_servers)
    except KafkaAccessError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    ensure_topics(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _warn_about_faust_state(settings)
    _warn_about_retired_settings(dict(os.environ))
    driver, processor, exchange = build_worker(settings, fault_hook)
    exit_when_stuck(driver.stuck, EXIT_RESTART)

    server = serve(settings.web_host, settings.web_port, health_app(driver.alive, driver.ready, lambda: report_process_state(driver)))
    exchange.follow(driver.config.slot.reader("rfm-population"))
    try:
        driver.run(stop)
    except SlotFenced as exc:
        log.error("this process slot (%s) can no longer produce: %s; exiting with status %d", settings.slot_id, exc, EXIT_RESTART)
        raise SystemExit(EXIT_RESTART) from None
    except LocalStateUnwritable as exc:
        log.error("%s; exiting with status %d", disk_refused_message(settings, exc), EXIT_RESTART)
        raise SystemExit(EXIT_RESTART) from None
    except (LocalStateCorrupt, LocalStateInUse) as exc:
        log.error("%s; exiting with status %d", exc, EXIT_RESTART)
        raise SystemExit(EXIT_RESTART) from None
    except Exception:
        log.exception("the worker stopped on an error; exiting with status %d. Nothing uncommitted was kept: the next "
                      "start resumes from the committed offsets and the changelog", EXIT_RESTART)
        raise SystemExit(EXIT_RESTART) from None
    finally:
        exchange.close()
        server.shutdown()
    log.info("stopped")
