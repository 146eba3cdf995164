"""A zombie worker (issue #15): one of two workers is frozen with SIGSTOP past its session timeout while
input flows, its partitions move to the other, and then it is thawed with SIGCONT. Whatever it had in
flight must be fenced: nothing it sends may reach a read_committed reader. The whole output is compared
by content with the replay of the same input (tests/output_check.py), so a duplicate, a lost
transition or one decided on stale state fails the test."""

from __future__ import annotations

import os
import signal
import time

import pytest

from stream_app.demo.generator import as_wire, generate
from stream_app.timeutil import DAY_MS

from .output_check import compare_with_replay, everything_committed
from .helpers import Names, WorkerProcess, encode, wait_for
from .fault_harness import Pacer, Supervised, consumed, ticking

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
SESSION_TIMEOUT_S = 6  # tests/helpers.py: STREAM_APP_SESSION_TIMEOUT_S


def _assigned(worker: WorkerProcess) -> float:
    try:
        return worker.metric_value("stream_app_assigned_input_partitions")
    except OSError:
        return -1.0


def test_a_frozen_worker_is_fenced_when_it_thaws_and_the_output_equals_the_replay(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=4)
    names.create_topics()
    now = int(time.time() * 1000)
    events = [as_wire(e) for e in generate(seed=51, users=1500, start_ms=now - 4 * DAY_MS, span_ms=3 * DAY_MS)]
    zombie = Supervised(names, tmp_path / "zombie")
    survivor = Supervised(names, tmp_path / "survivor")
    pacer = Pacer(kafka_bootstrap, names.input, [(e["userId"].encode(), encode(e)) for e in events], rate=400)
    try:
        wait_for(lambda: ticking(zombie.poll().worker) and ticking(survivor.poll().worker), 90, "both workers running")
        wait_for(lambda: _assigned(zombie.worker) > 0 and _assigned(survivor.worker) > 0, 90, "both workers to own partitions")
        pacer.start()
        wait_for(lambda: consumed(zombie.poll().worker) > 300, 60, "the zombie-to-be to process input")
        frozen_pid = zombie.worker.proc.pid
        os.kill(frozen_pid, signal.SIGSTOP)  # mid-stream: a transaction of its is most likely open
        try:
            # its session expires, its partitions move to the survivor, which goes on processing them
            wait_for(lambda: _assigned(survivor.poll().worker) == names.partitions, SESSION_TIMEOUT_S + 60,
                     "the survivor to take every partition")
            before = consumed(survivor.worker)
            wait_for(lambda: consumed(survivor.poll().worker) > before + 300, 60, "the survivor to process the moved partitions")
        finally:
            os.kill(frozen_pid, signal.SIGCONT)
        pacer.join(180)
        assert pacer.error is None and pacer.sent == len(events)
        # the thawed worker rejoins (or exits and is restarted); all input is processed by someone
        wait_for(lambda: everything_committed(names, zombie, survivor), 180,
                 "all input committed and the backfill drained")
        zombie_log = zombie.worker.log()
        zombie.stop()
        survivor.stop()
        # the thawed worker learned it was a zombie: its partitions were lost (its transaction, if one was
        # open, failed to commit its offsets and was aborted), or it was fenced and restarted
        assert "lost input partitions" in zombie_log or zombie.restarts, zombie_log[-3000:]
        compared = compare_with_replay(names, events, encode)
        assert compared["compared"] > 1000
        aborted = "aborting the open transaction" in zombie_log
        print(f"zombie: open transaction aborted on thaw: {aborted}; restarts: {zombie.restarts}; survivor restarts: {survivor.restarts}")
    finally:
        for worker in (zombie, survivor):
            try:
                worker.stop()
            except AssertionError:
                pass
