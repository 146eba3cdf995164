"""Targeted faults (issue #15): the worker kills itself (SIGKILL) at a chosen point, a supervisor starts
it again, and the whole output is compared by content with the replay of the same input
(tests/output_check.py: every transition decided by T field by field, memberships, dead letters,
committed offsets). The points are the driver's fault-hook names (tests/crash_worker.py):

- `before_commit`: inside the send -> commit window: this batch's transitions, memberships and
  changelog records are sent in the open transaction, which is not committed;
- `committed_not_written`: between the transaction's commit and the local RocksDB WriteBatch: the
  changelog is ahead of the local state, which the restart must take from the changelog's tail;
- `restore_chunk`: during a restore from the changelog (the local state was lost), after a chunk was
  written locally and before the restore finished;
- `revoke_commit`: at the commit a rebalance asks for, when a second worker joins and partitions move
  (the partitions being handed over can be left to nobody; the workers notice and heal it).
"""

from __future__ import annotations

import shutil

import pytest

from .fault_harness import Pacer, Scenario, Supervised, consumed, ticking
from .helpers import Names, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _crashed_at(worker: Supervised, point: str, nth: int) -> None:
    assert worker.restarts and worker.restarts[0].startswith("exit -9"), worker.restarts
    assert f"crash_worker: SIGKILL at {point} #{nth}" in worker.dead_logs[0], worker.dead_logs[0][-2000:]
    assert len(worker.restarts) == 1, f"one crash, then no other restart: {worker.restarts}"


@pytest.mark.parametrize("point, nth", [("before_commit", 3), ("committed_not_written", 3)])
def test_a_crash_inside_the_commit_sequence_changes_nothing_in_the_output(kafka_bootstrap, tmp_path, point, nth):
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    scenario = Scenario(seed=61, users=600)
    worker = Supervised(names, tmp_path / "w", crash_at=(point, nth))
    try:
        wait_for(lambda: ticking(worker.poll().worker), 90, "the worker to run")
        scenario.produce(kafka_bootstrap, names.input)
        wait_for(lambda: worker.poll().restarts, 90, f"the worker to crash at {point} #{nth}")
        compared = scenario.finish_and_compare(names, worker)
        _crashed_at(worker, point, nth)
        print(f"{point}: {compared['compared']} transitions compared")
    finally:
        worker.stop()


def test_a_crash_during_a_restore_changes_nothing_in_the_output(kafka_bootstrap, tmp_path):
    """A worker decides a history and stops; its disk is lost; the next start is killed while it
    restores from the changelog; the one after it finishes the restore and decides live events of the
    same users (which depend on the restored state: carts, intent, orders). Live, not more history: a
    history sent after the first one had drained would be decided in its own time, not as the replay
    decides it (docs/segments.md, choice 4a)."""
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    scenario = Scenario(seed=62, users=600)
    data_dir = tmp_path / "w"
    scenario.decide_history(names, data_dir)
    shutil.rmtree(data_dir)  # the disk is lost: the next start restores every partition from the changelog
    worker = Supervised(names, data_dir, crash_at=("restore_chunk", 1))
    try:
        wait_for(lambda: worker.poll().restarts, 90, "the worker to crash during its restore")
        wait_for(lambda: ticking(worker.poll().worker), 90, "the restarted worker to run")
        scenario.send_live_events(names)
        compared = scenario.finish_and_compare(names, worker)
        _crashed_at(worker, "restore_chunk", 1)
        assert any(r["cause"].get("message_id", "").startswith("live-") for r in compared["transitions"])
        print(f"restore_chunk: {compared['compared']} transitions compared")
    finally:
        worker.stop()


def test_a_crash_at_the_commit_of_a_rebalance_changes_nothing_in_the_output(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=4)
    names.create_topics()
    scenario = Scenario(seed=63, users=1000)
    first = Supervised(names, tmp_path / "a", crash_at=("revoke_commit", 1))
    pacer = Pacer(kafka_bootstrap, names.input, scenario.messages(), rate=400)
    second = None
    try:
        wait_for(lambda: ticking(first.poll().worker), 90, "the first worker to run")
        pacer.start()
        wait_for(lambda: consumed(first.poll().worker) > 500, 60, "the first worker to process input")
        second = Supervised(names, tmp_path / "b")  # joins: partitions move, the first commits at revocation
        wait_for(lambda: first.poll().restarts and second.poll(), 90, "the first worker to crash at the rebalance's commit")
        pacer.join(120)
        assert pacer.error is None and pacer.sent == len(scenario.messages())
        _crashed_at(first, "revoke_commit", 1)
        # the partitions the first was handing over may belong to nobody until a worker notices and the
        # group rebalances (driver/group_watch.py; docs/reliability.md): within about 40 s
        compared = scenario.finish_and_compare(names, first, second, timeout=150)
        assert second.restarts == [], second.restarts
        healed = [w for w, logs in (("first", first.worker.log()), ("second", second.worker.log()))
                  if "belong to no member of the group: leaving it and joining again" in logs]
        print(f"revoke_commit: {compared['compared']} transitions compared; healed by {healed or 'nobody (no partition was left unowned)'}")
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
