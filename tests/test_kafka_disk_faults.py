"""Disk faults under the worker (issue #15), against the real broker; the output is compared by content
with the replay of the same input (tests/output_check.py). docs/reliability.md, "Disk full" and "A
corrupted local store".

- A full disk: tests/crash_worker.py's `--disk-full-while FLAG` makes every partition store's open and
  write raise RocksDB's disk-full error while FLAG exists. The worker stops with status 70 and a message
  that says what is wrong and what to do, also when started again on the still-full disk, and never
  deletes its local state. Once the disk has room, a start restores only the changelog tail (the
  commit whose local write failed) and the output equals the uninterrupted run's.
- A corrupted store: a stopped worker's partition stores are damaged on disk (a data block of a table
  file; CURRENT); the next start moves them aside with a warning naming the partition, restores them
  from the whole changelog, keeps the intact one, and decides live events of the same users correctly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_app.driver.store import MIB, PartitionStore, StoreBudget

from .fault_harness import Pacer, Scenario, Supervised, consumed, ticking
from .helpers import Names, WorkerProcess, wait_for
from .output_check import read_partitioned
from .test_driver_store_faults import corrupt_a_data_block, identity

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
RESTORED = re.compile(r"restored partitions \[([\d, ]*)\] from the changelog: (\d+) records")


def store_folders(names: Names, data_dir: Path) -> dict[int, Path]:
    return {p: data_dir / "state" / f"{names.input}-{p}" for p in range(names.partitions)}


def exit_status(worker: WorkerProcess, timeout: float, what: str) -> int:
    assert worker.proc is not None
    wait_for(lambda: worker.proc.poll() is not None, timeout, what)
    return worker.proc.returncode


def assert_reports_a_full_disk(log: str, data_dir: Path) -> None:
    """The one error line an operator needs: what is wrong, where, what to do; no stack trace."""
    errors = [e for e in re.findall(r"\[ERROR\] (.*)", log) if "exiting with status 70" in e]  # not librdkafka's noise
    assert len(errors) == 1, log[-3000:]
    assert re.fullmatch(
        rf"the disk holding the local state \(STREAM_APP_DATA_DIR={re.escape(str(data_dir.resolve()))}\) is full: "
        rf"RocksDB could not write partition \d's store at {re.escape(str(data_dir))}/state/\S+ "
        r"\(IO error: No space left on device: .*\)\. Free space on that disk or give the volume more, then start the "
        r"worker again\. Nothing committed is lost and the local state is kept as it is: the next start reads what it "
        r"misses from the changelog; exiting with status 70", errors[-1]), errors[-1]
    assert "Traceback" not in log and "the worker stopped on an error" not in log, log[-3000:]
    assert "is corrupt" not in log and "is outside the changelog" not in log, log[-3000:]


def test_a_full_disk_stops_the_worker_with_a_clear_message_and_never_wipes_its_state(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    scenario = Scenario(seed=67, users=600)
    data_dir, full = tmp_path / "w", tmp_path / "the-disk-is-full"
    on_a_full_disk = ("-m", "tests.crash_worker", "--disk-full-while", str(full))
    first = WorkerProcess(names, data_dir, on_a_full_disk).start()
    pacer = Pacer(kafka_bootstrap, names.input, scenario.messages(), rate=400)
    worker = None
    try:
        wait_for(lambda: ticking(first), 90, "the worker to run")
        pacer.start()
        wait_for(lambda: consumed(first) > 1000, 60, "the worker to process input")
        full.touch()  # the disk fills up: the next local write (after a commit) fails
        assert exit_status(first, 60, "the worker to stop on the full disk") == 70, first.log()[-3000:]
        assert_reports_a_full_disk(first.log(), data_dir)
        folders = store_folders(names, data_dir)
        created = {p: identity(folder) for p, folder in folders.items()}

        again = WorkerProcess(names, data_dir, on_a_full_disk).start()  # a supervisor's restart; still full
        assert exit_status(again, 90, "the restart to stop on the still-full disk") == 70, again.log()[-3000:]
        assert_reports_a_full_disk(again.log(), data_dir)
        assert not RESTORED.search(again.log()), "nothing is restored onto a full disk"
        assert {p: identity(folder) for p, folder in folders.items()} == created, "the local state was recreated"
        changelog = len(read_partitioned(kafka_bootstrap, names.settings().changelog_topic))

        full.unlink()  # space was freed
        worker = Supervised(names, data_dir)
        pacer.join(120)
        assert pacer.error is None and pacer.sent == len(scenario.messages())
        compared = scenario.finish_and_compare(names, worker)
        assert worker.restarts == [], worker.restarts
        restores = RESTORED.findall(worker.worker.log())
        assert len(restores) == 1, restores
        tail = int(restores[0][1])
        # the commit whose local write failed is read again, and only the tail: the local state was kept
        assert 1 <= tail < changelog, (tail, changelog)
        assert {p: identity(folder) for p, folder in folders.items()} == created, "the local state was recreated"
        assert not list((data_dir / "state").glob("*.corrupt"))
        print(f"disk full: restored a tail of {tail} of {changelog} changelog records; "
              f"{compared['compared']} transitions compared")
    finally:
        if pacer.is_alive():
            pacer.join(120)
        for process in (first, worker):
            if process is not None:
                process.stop()


def test_a_corrupted_local_store_is_moved_aside_and_rebuilt_from_the_changelog(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    scenario = Scenario(seed=68, users=600)
    data_dir = tmp_path / "w"
    scenario.decide_history(names, data_dir)
    folders = store_folders(names, data_dir)
    for partition, folder in folders.items():  # into table files, as a worker that has run for a while has them
        store = PartitionStore(folder, StoreBudget(8 * MIB), names.settings().changelog_topic, partition)
        store.db.flush()
        store.close()
    corrupt_a_data_block(folders[0])  # RocksDB opens it; the check of every block at open finds it
    (folders[1] / "CURRENT").write_bytes(b"\x00garbage\xff")  # RocksDB refuses to open it
    kept = identity(folders[2])
    per_partition = {p: 0 for p in folders}
    for partition, _key, _value in read_partitioned(kafka_bootstrap, names.settings().changelog_topic):
        per_partition[partition] += 1

    worker = Supervised(names, data_dir)
    try:
        wait_for(lambda: "assigned input partitions" in worker.poll().worker.log(), 90, "the worker to restore its partitions")
        log = worker.worker.log()
        for p in (0, 1):
            folder = folders[p]
            assert re.search(rf"\[WARNING\] partition {p}: the local copy of its state at {re.escape(str(folder))} is "
                             rf"corrupt \(Corruption: [^\n]*\)\. It was moved to {re.escape(str(folder))}\.corrupt and the "
                             rf"partition is being rebuilt from the changelog \({re.escape(names.settings().changelog_topic)}\)",
                             log), log[-4000:]
            assert Path(f"{folder}.corrupt").is_dir()
        assert "partition 2: the local copy" not in log and not Path(f"{folders[2]}.corrupt").exists()
        assert identity(folders[2]) == kept, "the intact store was kept"
        restores = RESTORED.findall(log)
        assert len(restores) == 1, restores
        assert int(restores[0][1]) == per_partition[0] + per_partition[1], (restores, per_partition)  # all of 0 and 1

        scenario.send_live_events(names)  # the same users: their decisions depend on the rebuilt state
        compared = scenario.finish_and_compare(names, worker)
        assert worker.restarts == [], worker.restarts
        assert any(r["cause"].get("message_id", "").startswith("live-") for r in compared["transitions"])
        print(f"corrupted store: {compared['compared']} transitions compared")
    finally:
        worker.stop()
