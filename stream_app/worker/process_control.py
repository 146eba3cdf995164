"""How the worker process is stopped, and how it ends itself when its main loop is stuck.

Python runs a signal handler in the main thread only, between two bytecodes: while the main thread waits
inside librdkafka (a commit, an abort, a flush), a SIGTERM would wait with it. But the C-level handler
writes each signal's number to the wakeup file descriptor at once (`signal.set_wakeup_fd`), whichever
thread the signal lands on; a thread of its own reads it, sets the stop event and starts the grace
period, whatever the main thread is doing. (Blocking the signals and `sigwait`ing instead does not
work: threads started before, such as OpenBLAS's at import, would take the signal with its default
action, and children would inherit the blocked mask.)

The same reasoning gives the watchdog: when the main loop has not come back to poll for as long as the
liveness probe allows (`/healthz` fails), or a librdkafka call has long overrun its own timeout
(driver/call_deadline.py), the process prints every thread's stack and exits with the
restart status. A supervisor without probes (systemd, `--restart`, the test harness) then restarts the
slot as Kubernetes would. Nothing committed is lost: the next start fences this slot's open
transaction and resumes from the committed offsets and the changelog (docs/reliability.md).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import select
import signal
import sys
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
EXIT_RESTART = 70  # EX_SOFTWARE: a supervisor should start the process again


def configure_logging(level: str) -> None:
    """The worker's and the supervisor's log lines: time, pid, level, message."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")


def _exit_now(status: int) -> None:
    logging.shutdown()
    os._exit(status)


def stop_on_signals(stop: threading.Event, grace_s: float) -> None:
    """SIGTERM, SIGINT or SIGHUP set `stop`; a second one, or `grace_s` without the process ending, exits
    with status 1. Call it from the main thread."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: None)  # Python's own handler has nothing left to do

    def receive() -> None:
        deadline = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([read_end], [], [], timeout)
            if not readable:
                log.error("the worker did not stop within %.0f s; exiting now. Nothing committed is lost: the next "
                          "start restores from the changelog", grace_s)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                _exit_now(1)
            for signum in os.read(read_end, 64):
                if signum not in STOP_SIGNALS:
                    continue
                name = signal.Signals(signum).name
                if deadline is not None:
                    log.info("%s again: exiting now", name)
                    _exit_now(1)
                log.info("%s: stopping (committing the open transaction)", name)
                stop.set()
                deadline = time.monotonic() + grace_s

    threading.Thread(target=receive, name="stop-signals", daemon=True).start()
    # `kill -USR1 <pid>` prints every thread's stack to stderr at once, even while the main thread waits
    # inside librdkafka; a fatal signal (SIGABRT from a failed assertion in librdkafka, SIGSEGV) prints them
    # too before the process dies, so that its log says which call it died in
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    faulthandler.enable(file=sys.stderr, all_threads=True)


def exit_when_stuck(stuck: Callable[[], str | None], status: int, check_every_s: float = 1.0) -> None:
    """Exit with `status` once `stuck()` has named a reason at two checks in a row."""

    def watch() -> None:
        failures = 0
        while True:
            time.sleep(check_every_s)
            reason = stuck()
            failures = 0 if reason is None else failures + 1
            if failures >= 2:
                log.error("%s; its stack follows. Exiting with status %d so that the slot restarts: nothing committed "
                          "is lost", reason, status)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                _exit_now(status)

    threading.Thread(target=watch, name="stuck-loop-watchdog", daemon=True).start()


def stop_when_orphaned(stop: threading.Event, supervisor_pid: int, check_every_s: float = 1.0) -> None:
    """Set `stop` once the supervisor that started this process is gone (`stream-app worker --processes N`
    killed with SIGKILL cannot stop its children itself)."""

    def watch() -> None:
        while not stop.is_set():
            if os.getppid() != supervisor_pid:
                log.warning("the supervisor (pid %d) is gone: stopping", supervisor_pid)
                stop.set()
                return
            time.sleep(check_every_s)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
