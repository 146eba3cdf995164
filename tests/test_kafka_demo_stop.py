"""`stream-app demo` stopped by a signal other than Ctrl-C (`timeout`, `kill`, a closed terminal), by Ctrl-C
pressed again while it stops, by two at once (`timeout -s INT` signals the process, then its process
group), or by Ctrl-C while its own broker starts, stops everything it started, instead of leaving a
worker or a broker running with their ports and data folders."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from stream_app.broker.local_kafka import LocalKafka

from .helpers import REPO, Names, free_port, free_port_pair, wait_for

pytestmark = [pytest.mark.kafka]


# `stream-app demo` with Ctrl-C's signal as at an interactive terminal: a shell starts background
# commands (CI's) with SIGINT ignored, an ignored signal stays ignored in every child, and the demo leaves
# an ignored SIGINT ignored
DEMO = [sys.executable, "-c", "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('stream_app', run_name='__main__')", "demo"]


@contextmanager
def running_demo(env: dict[str, str], output: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The demo, its output in `output`; a demo still running at the end gets SIGTERM (it then stops
    its worker and broker), SIGKILL only if that does not end it."""
    with open(output, "wb") as out:
        demo = subprocess.Popen(DEMO, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield demo
    finally:
        if demo.poll() is None:
            demo.terminate()
            try:
                demo.wait(60)
            except subprocess.TimeoutExpired:
                demo.kill()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signals,while_stopping", [([signal.SIGTERM], False), ([signal.SIGHUP], False),
                                                    ([signal.SIGINT, signal.SIGINT], True),
                                                    ([signal.SIGINT, signal.SIGINT], False)],
                         ids=["SIGTERM", "SIGHUP", "Ctrl-C again while stopping", "two SIGINTs at once"])
def test_a_terminated_demo_stops_its_worker(kafka_bootstrap, tmp_path, signals, while_stopping):
    names = Names(kafka_bootstrap)
    env = names.env(tmp_path / "unused", free_port())
    env["STREAM_APP_DEMO_DIR"] = str(tmp_path / "demo")
    output = tmp_path / "demo.out"
    worker_pid = None
    with running_demo(env, output) as demo:
        try:
            wait_for(lambda: "worker started" in output.read_text(errors="replace"), 150, "the demo's worker to start")
            worker_log = tmp_path / "demo" / "worker.log"
            pid = wait_for(lambda: worker_log.exists() and re.search(r"\] \[(\d+)\] \[", worker_log.read_text(errors="replace")),
                           60, "the worker's first log line")
            worker_pid = int(pid.group(1))
            assert alive(worker_pid)
            demo.send_signal(signals[0])
            for again in signals[1:]:
                if while_stopping:
                    wait_for(lambda: "demo: stopping" in output.read_text(errors="replace"), 30, "the demo to begin stopping")
                demo.send_signal(again)
            assert demo.wait(60) == 0, output.read_text(errors="replace")[-2000:]
            said = output.read_text(errors="replace")
            assert "demo: stopped" in said
            if while_stopping:  # the second signal came during the clean-up, and only said so
                assert "demo: already stopping" in said, said[-2000:]
            wait_for(lambda: not alive(worker_pid), 10, f"the worker (pid {worker_pid}) to be gone")
        finally:
            if worker_pid is not None and alive(worker_pid):  # the failure this test looks for: leave nothing behind
                os.kill(worker_pid, signal.SIGKILL)


def test_ctrl_c_while_the_demos_own_broker_starts_stops_the_broker(tmp_path):
    port = free_port_pair()
    env = dict(os.environ, STREAM_APP_DEMO_DIR=str(tmp_path / "demo"), STREAM_APP_KAFKA_PORT=str(port),
               STREAM_APP_WEB_PORT=str(free_port()))
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    broker = LocalKafka(tmp_path / "demo" / "kafka", port=port, controller_port=port + 1)  # the demo's, to look at
    output = tmp_path / "demo.out"
    broker_pid = None
    with running_demo(env, output) as demo:
        try:
            broker_pid = wait_for(broker.running_pid, 120, "the demo's broker process")
            assert "worker started" not in output.read_text(errors="replace")  # Ctrl-C comes before the worker starts
            demo.send_signal(signal.SIGINT)
            assert demo.wait(60) == 0, output.read_text(errors="replace")[-2000:]
            assert "demo: stopped" in output.read_text(errors="replace")
            wait_for(lambda: not alive(broker_pid), 10, f"the demo's broker (pid {broker_pid}) to be gone")
        finally:
            if broker_pid is not None and alive(broker_pid):
                os.killpg(broker_pid, signal.SIGKILL)
