"""`stream-app worker --processes N`: N engine processes in one consumer group, one per core.

    stream-app worker --processes N   (this module: starts, restarts and stops the children;
        │                              serves /metrics, /healthz, /readyz for all of them)
        ├─▶ child 0: stream-app worker, process slot <slot>-0, data in <data dir>/process-0
        ├─▶ child 1: stream-app worker, process slot <slot>-1, data in <data dir>/process-1
        └─▶ ...

Python runs one bytecode at a time per process, so one engine process uses about one core; N processes
in the same consumer group share the input partitions as N separate workers would (Kafka assigns them,
cooperative-sticky). Each child is a whole worker with a process slot of its own: a stable
`group.instance.id` and `transactional.id`, and its own RocksDB folder, so a restarted child fences its
predecessor and resumes exactly where it committed (docs/reliability.md).

- **Restarts.** A child that exits with the restart status (70) or is killed by a signal is started
  again after a backoff (1 s, doubling to 60 s; back to 1 s once it has run a minute), and so is one
  that stopped by itself with status 0. Any other status is a mistake a restart cannot mend (bad
  credentials, a partition count that does not match): every child is stopped and the supervisor exits
  with that status.
- **Stopping.** SIGTERM, SIGINT or SIGHUP go to every child, which commits and stops; a child still
  running after the grace period (`STREAM_APP_STOP_GRACE_S`) is killed. A child whose supervisor has
  gone stops itself (`process_control.stop_when_orphaned`).
- **Metrics.** The children write their metrics to files in a folder of this run on tmpfs
  (`/dev/shm/stream-app-metrics-*`, removed at exit; prometheus-client's multiprocess mode); the supervisor's `/metrics` adds them up: counters and
  histograms summed, gauges as each one's `multiprocess_mode` says. `process_*` metrics are the sum
  over the supervisor and its live children (memory and CPU of the whole pod).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess

from ..settings import Settings
from .process_control import EXIT_RESTART, configure_logging, stop_on_signals

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
STEADY_AFTER_S = 60.0  # a child that ran this long starts again after the first backoff
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SUPERVISOR_ENV = "STREAM_APP_SUPERVISOR_PID"


@dataclass
class Child:
    """One engine process and its slot."""

    index: int
    slot_id: str
    data_dir: Path
    process: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff_s: float = FIRST_BACKOFF_S
    start_after: float = 0.0  # monotonic time of the next start, while it waits for its backoff

    @property
    def running(self) -> bool:
        process = self.process  # read once: the supervisor's loop may clear it meanwhile (HTTP thread)
        return process is not None and process.poll() is None

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.poll() is None else None


def restartable(status: int) -> bool:
    """70 is the worker's "start me again"; a negative status is a signal (SIGKILL from the OOM killer)."""
    return status == EXIT_RESTART or status < 0


class Supervisor:
    def __init__(self, settings: Settings, processes: int, command: list[str] | None = None) -> None:
        if processes < 1:
            raise ValueError("--processes must be at least 1")
        self.settings = settings
        self.command = command or [sys.executable, "-m", "stream_app", "worker"]
        # the processes' metric files: a fresh folder per run, on tmpfs where there is one (a full data disk
        # must not break the metrics, and two supervisors must not share files); removed at exit
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="stream-app-metrics-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        self.children = [Child(i, f"{settings.slot_id}-{i}", settings.data_dir / f"process-{i}") for i in range(processes)]
        self.stop = threading.Event()
        self.status = 0
        self.readiness = CollectorRegistry()  # the processes' own metric files alone (`ready`)
        multiprocess.MultiProcessCollector(self.readiness, path=str(self.metrics_dir))

    # -- the children -----------------------------------------------------------------------------------
    def child_env(self, child: Child) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "STREAM_APP_PROCESSES": "1",  # a child is one engine process, never a supervisor itself
            "STREAM_APP_INSTANCE_ID": child.slot_id,
            "STREAM_APP_DATA_DIR": str(child.data_dir),
            "STREAM_APP_WEB_PORT": "0",  # the supervisor serves the pod's port; a child's own is ephemeral
            MULTIPROC_ENV: str(self.metrics_dir),
            SUPERVISOR_ENV: str(os.getpid()),
        })
        return env

    def start(self, child: Child) -> None:
        # a session of its own: a signal to the supervisor's process group (Ctrl-C, systemd, killpg) reaches
        # the supervisor alone, which forwards one SIGTERM (a second would mean "exit now" to the child)
        child.process = subprocess.Popen(self.command, env=self.child_env(child), start_new_session=True)
        child.started = time.monotonic()
        log.info("started engine process %d (slot %s, pid %d)", child.index, child.slot_id, child.process.pid)

    def check(self, child: Child) -> None:
        """Notice a child's exit and schedule its restart, or end everything on a status a restart cannot mend."""
        if child.process is None:
            if time.monotonic() >= child.start_after:
                self.start(child)
            return
        status = child.process.poll()
        if status is None:
            return
        pid = child.process.pid
        child.process = None
        multiprocess.mark_process_dead(pid, str(self.metrics_dir))
        if not restartable(status) and status != 0:
            log.error("engine process %d exited with status %d, which a restart would not mend (its log above says "
                      "why); stopping the others", child.index, status)
            self.status = status
            self.stop.set()
            return
        ran = time.monotonic() - child.started
        if ran >= STEADY_AFTER_S:
            child.backoff_s = FIRST_BACKOFF_S
        child.restarts += 1
        log.warning("engine process %d (pid %d) exited with status %d after %.0f s; starting it again in %.0f s",
                    child.index, pid, status, ran, child.backoff_s)
        child.start_after = time.monotonic() + child.backoff_s
        child.backoff_s = min(MAX_BACKOFF_S, child.backoff_s * 2)

    def stop_children(self) -> None:
        running = [c for c in self.children if c.running]
        for child in running:
            try:
                child.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:  # it ended meanwhile
                pass
        deadline = time.monotonic() + self.settings.stop_grace_s
        for child in running:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("engine process %d did not stop within %d s; killing it (nothing committed is lost)",
                          child.index, self.settings.stop_grace_s)
                child.process.kill()
                child.process.wait()

    # -- health -------------------------------------------------------------------------------------------
    def alive(self) -> bool:
        return not self.stop.is_set() or any(c.running for c in self.children)

    def ready(self) -> bool:
        """Every child running and ready (each reports it in `stream_app_process_ready`)."""
        if self.stop.is_set() or not all(c.running for c in self.children):
            return False
        ready = self.readiness.get_sample_value("stream_app_process_ready")
        return ready is not None and ready >= len(self.children)

    # -- the whole --------------------------------------------------------------------------------------
    def run(self) -> int:
        from ..driver.web import health_app, serve
        from .supervisor_metrics import pod_registry

        stop_on_signals(self.stop, self.settings.stop_grace_s + 10)
        server = serve(self.settings.web_host, self.settings.web_port,
                       health_app(self.alive, self.ready, registry=pod_registry(self)))
        log.info("supervising %d engine processes (STREAM_APP_STOP_GRACE_S=%d)", len(self.children), self.settings.stop_grace_s)
        try:
            while not self.stop.is_set():
                for child in self.children:
                    self.check(child)
                    if self.stop.is_set():
                        break
                self.stop.wait(0.2)
        finally:
            self.stop_children()
            server.shutdown()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        log.info("stopped %d engine processes", len(self.children))
        return self.status

    def child_pids(self) -> list[int]:
        return [pid for pid in (c.pid for c in self.children) if pid is not None]


def run_supervisor(settings: Settings, processes: int) -> int:
    configure_logging(settings.log_level)
    return Supervisor(settings, processes).run()
