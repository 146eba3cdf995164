"""`stream-app worker --processes N` on the real broker (issue #14): N engine processes share the input
partitions as one consumer group, a crashed one is started again, one port serves every process's
metrics, SIGTERM stops them all, and the output equals the replay's by content (tests/output_check.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from .fault_harness import MALFORMED, Scenario
from .helpers import Names, WorkerProcess, wait_for
from .output_check import compare_with_replay, everything_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def supervisor(names: Names, data_dir: Path, processes: int) -> WorkerProcess:
    return WorkerProcess(names, data_dir, ("-m", "stream_app", "worker", "--processes", str(processes))).start()


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that ended since the listing
            continue
    return found


def group_describer(pid: int) -> bool:
    """An engine process's one child: its group check's client (stream_app/driver/group_describer.py)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"stream_app.driver.group_describer"]
    except FileNotFoundError:
        return False


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def metric(worker: WorkerProcess, name: str) -> float:
    try:
        return worker.metric_value(name)
    except OSError:
        return -1.0


def test_two_processes_share_the_partitions_survive_a_crash_and_equal_the_replay(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=4)
    names.create_topics()
    scenario = Scenario(seed=41, users=800)
    scenario.produce(kafka_bootstrap, names.input)
    pod = supervisor(names, tmp_path / "w", 2)
    try:
        # one port, every process: two ready processes that own the four partitions between them
        wait_for(lambda: metric(pod, "stream_app_process_ready") == 2 and metric(pod, "stream_app_assigned_input_partitions") == 4,
                 90, "two ready engine processes owning the 4 partitions")
        first, second = children(pod.proc.pid)
        assert (tmp_path / "w" / "process-0").is_dir() and (tmp_path / "w" / "process-1").is_dir()
        os.kill(first, signal.SIGKILL)  # a crash: the supervisor starts the process again
        wait_for(lambda: metric(pod, "stream_app_engine_process_restarts_total") == 1, 30, "the crashed process started again")
        wait_for(lambda: everything_committed(names), 240, "every input offset committed and the backfill drained")
        assert metric(pod, "stream_app_events_consumed_total") >= len(scenario.events)  # summed over the processes
        assert metric(pod, "stream_app_engine_processes") == 2
        assert metric(pod, "process_resident_memory_bytes") > 0
        now = children(pod.proc.pid)
        assert second in now and first not in now and len(now) == 2
        # SIGTERM to the supervisor alone: it stops its processes, which commit and exit
        os.kill(pod.proc.pid, signal.SIGTERM)
        assert pod.proc.wait(60) == 0, pod.log()[-4000:]
        assert not any(running(pid) for pid in now)
    finally:
        pod.stop()
    log = pod.log()
    assert "engine process 0 (pid" in log and "exited with status -9" in log
    compared = compare_with_replay(names, scenario.lines, encode=lambda raw: raw)
    assert compared["compared"] > len(scenario.events) / 10
    assert compared["dead_letters"] == len(MALFORMED)


def test_a_status_a_restart_cannot_mend_stops_every_process(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    pod = WorkerProcess(names, tmp_path / "w", ("-m", "stream_app", "worker", "--processes", "2"))
    pod.start_env = {"STREAM_APP_PARTITIONS": "5"}  # the topic has 3: every process exits with status 1
    pod.start()
    try:
        assert pod.proc.wait(60) == 1, pod.log()[-4000:]
    finally:
        pod.stop()
    log = pod.log()
    assert "STREAM_APP_PARTITIONS=5" in log and "which a restart would not mend" in log
    assert "starting it again" not in log


def test_processes_stop_themselves_when_their_supervisor_is_killed(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=2)
    names.create_topics()
    pod = WorkerProcess(names, tmp_path / "w")  # STREAM_APP_PROCESSES instead of --processes
    pod.start_env = {"STREAM_APP_PROCESSES": "2"}
    pod.start()
    kids: list[int] = []
    try:
        wait_for(lambda: metric(pod, "stream_app_process_ready") == 2, 90, "two ready engine processes")
        kids = children(pod.proc.pid)
        assert len(kids) == 2
        # engine processes, not supervisors: each has at most its group check's child (from its first check on)
        wait_for(lambda: all(len(children(kid)) == 1 for kid in kids), 30, "each engine process's group check")
        grandchildren = [pid for kid in kids for pid in children(kid)]
        assert all(group_describer(pid) for pid in grandchildren), grandchildren
        kids += grandchildren
        os.kill(pod.proc.pid, signal.SIGKILL)
        pod.proc.wait(10)
        wait_for(lambda: not any(running(pid) for pid in kids), 40, "the orphaned engine processes and their children to stop")
    finally:
        pod.stop()
        for kid in kids:  # whatever still runs must not outlive the test
            if running(kid):
                os.kill(kid, signal.SIGKILL)
    assert pod.log().count("the supervisor (pid") == 2
