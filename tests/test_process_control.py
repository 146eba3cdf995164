"""The worker process stops on SIGTERM and ends itself when stuck, even while its main thread waits inside
a C call (as it does inside librdkafka), where a Python signal handler would never run."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

STUCK_MAIN_THREAD = """
import logging, os, sys, threading
import numpy  # noqa: F401 - as in the worker: OpenBLAS starts threads at import, before the signals are set up
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from stream_app.worker.process_control import exit_when_stuck, stop_on_signals
stop = threading.Event()
stop_on_signals(stop, grace_s={grace})
{setup}
print("ready", flush=True)
read_end, _write_end = os.pipe()
{main}
"""


def _start(grace: float = 2.0, setup: str = "", main: str = "os.read(read_end, 1)") -> subprocess.Popen:
    script = STUCK_MAIN_THREAD.format(grace=grace, setup=textwrap.dedent(setup), main=main)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_sigterm_stops_a_process_whose_main_thread_waits_in_a_c_call():
    proc = _start(grace=2.0)  # the main thread blocks in read(2) for ever
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(15)
    output = proc.stdout.read()
    assert status == 1, output  # the grace period ran out: the process ended itself
    assert 1.5 < time.monotonic() - started < 10
    assert "SIGTERM: stopping" in output
    assert "did not stop within 2 s" in output
    assert "os.read(read_end, 1)" in output or "<string>" in output, output  # the stuck thread's stack is printed


def test_sigterm_sets_the_stop_event_at_once():
    proc = _start(grace=30.0, main="stop.wait()\nprint('stopped cleanly', flush=True)")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(15)
    output = proc.stdout.read()
    assert status == 0, output
    assert time.monotonic() - started < 5
    assert "stopped cleanly" in output


def test_a_second_signal_exits_at_once():
    proc = _start(grace=60.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    status = proc.wait(15)
    output = proc.stdout.read()
    assert status == 1, output
    assert time.monotonic() - started < 5
    assert "SIGINT again: exiting now" in output


def test_a_stuck_main_loop_ends_the_process_with_the_restart_status():
    proc = _start(grace=60.0, setup="""
        import time
        since = time.monotonic()
        exit_when_stuck(lambda: None if time.monotonic() - since < 1.0 else "the loop is stuck in a test", 70, check_every_s=0.2)
    """)
    status = proc.wait(15)
    output = proc.stdout.read()
    assert status == 70, output
    assert "the loop is stuck in a test; its stack follows. Exiting with status 70" in output
    assert "Thread" in output  # every thread's stack


def test_a_live_main_loop_is_left_alone():
    proc = _start(grace=60.0, setup="exit_when_stuck(lambda: None, 70, check_every_s=0.1)")
    time.sleep(1.5)
    assert proc.poll() is None
    proc.kill()
    proc.wait(5)
