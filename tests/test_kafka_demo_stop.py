"""`stream-app demo` stopped by a signal other than Ctrl-C (`timeout`, `kill`, a closed terminal) stops
its worker too, instead of leaving it running with the metrics port and the data folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from .helpers import REPO, Names, free_port, wait_for

pytestmark = [pytest.mark.kafka]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminated_demo_stops_its_worker(kafka_bootstrap, tmp_path, signum):
    names = Names(kafka_bootstrap)
    env = names.env(tmp_path / "unused", free_port())
    env["STREAM_APP_DEMO_DIR"] = str(tmp_path / "demo")
    output = tmp_path / "demo.out"
    with open(output, "wb") as out:
        demo = subprocess.Popen([sys.executable, "-m", "stream_app", "demo"], env=env, cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)
    worker_pid = None
    try:
        wait_for(lambda: "worker started" in output.read_text(errors="replace"), 150, "the demo's worker to start")
        worker_log = tmp_path / "demo" / "worker.log"
        pid = wait_for(lambda: worker_log.exists() and re.search(r"\] \[(\d+)\] \[", worker_log.read_text(errors="replace")),
                       60, "the worker's first log line")
        worker_pid = int(pid.group(1))
        assert alive(worker_pid)
        demo.send_signal(signum)
        assert demo.wait(60) == 0, output.read_text(errors="replace")[-2000:]
        assert "demo: stopped" in output.read_text(errors="replace")
        wait_for(lambda: not alive(worker_pid), 10, f"the worker (pid {worker_pid}) to be gone")
    finally:
        if demo.poll() is None:
            demo.kill()
        if worker_pid is not None and alive(worker_pid):  # the failure this test looks for: leave nothing behind
            os.kill(worker_pid, signal.SIGKILL)
