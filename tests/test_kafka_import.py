"""`stream-app import --to-topic` on the real broker (issue #17).

- Into a running, idle worker, an imported export gives the transitions of `stream-app import --output`
  followed by `stream-app replay`, compared by content as the backfill tests compare (output_check.py).
- Killed with SIGKILL mid-way (inside an open transaction, or between a commit and its checkpoint file)
  and run again, the import leaves the topic exactly as an uninterrupted import leaves another topic:
  the same records in the same order in each partition, none twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from stream_app.timeutil import parse_timestamp

from .output_check import _comparable, compare_with_replay, read_partitioned
from .helpers import REPO, Names, population_independent, wait_for
from .import_files import FIXTURES
from .test_kafka_backfill import PARTITIONS, _drained, _idle_worker

pytestmark = [pytest.mark.kafka]
sys.path.insert(0, str(REPO / "benchmarks"))
from ga4_synthetic import CUSTOM_EVENTS_MAPPING, write_export  # noqa: E402

sys.path.remove(str(REPO / "benchmarks"))


def _command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "stream_app", "import", "--no-progress", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


# -- the same transitions as import --output + replay --------------------------------------------------------
@pytest.mark.parametrize("fmt, fixture", [("ga4", "ga4_events.jsonl"), ("mixpanel", "mixpanel_export.jsonl")])
def test_import_into_an_idle_worker_gives_the_transitions_of_output_then_replay(kafka_bootstrap, tmp_path, fmt, fixture):
    names, worker = _idle_worker(kafka_bootstrap, tmp_path / "w")
    try:
        env = names.env(tmp_path / "unused", 0)
        events_file = tmp_path / "events.jsonl"
        _command(env, "--format", fmt, "--input", str(FIXTURES / fixture), "--output", str(events_file), "--work-dir", str(tmp_path / "i"))
        events = events_file.read_bytes().splitlines()
        proc = _command(env, "--format", fmt, "--input", str(FIXTURES / fixture), "--to-topic", "--batch-size", "4",
                        "--work-dir", str(tmp_path / "i"))
        assert f"sent {len(events)} events" in proc.stderr
        wait_for(lambda: worker.metric_value("stream_app_events_consumed_total") >= len(events), 120, "every event consumed")
        wait_for(lambda: _drained(worker), 120, "the backfill drained")
        worker.assert_alive()
        assert worker.metric_value("stream_app_backfill_events_total") == len(events)
        assert worker.metric_value("stream_app_late_events_total") == 0  # each partition in timestamp order
        assert worker.metric_value("stream_app_dead_letters_total") == 0
        assert worker.stop() == 0
        compared = compare_with_replay(names, events, encode=lambda raw: raw)
        assert compared["compared"] >= 5, compared["compared"]
        # and `stream-app replay --until T` as a user runs it, on the file import --output wrote
        replayed = tmp_path / "transitions.jsonl"
        proc = subprocess.run([sys.executable, "-m", "stream_app", "replay", "--input", str(events_file), "--output", str(replayed),
                               "--until", str(compared["until"])], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr

        def decided_by_t(rows: list[dict]) -> list[str]:
            return sorted(_comparable(r) for r in population_independent(rows)
                          if parse_timestamp(r["at"]) <= compared["until"] and r["cause"]["type"] != "refresh")

        from_replay = decided_by_t([json.loads(line) for line in replayed.read_text().splitlines()])
        assert from_replay and from_replay == decided_by_t(compared["transitions"])
    finally:
        worker.stop()


# -- exactly once after kill -9 -----------------------------------------------------------------------------
def _synthetic_export(tmp_path: Path) -> tuple[Path, Path]:
    source, mapping = tmp_path / "ga4.jsonl", tmp_path / "custom.yaml"
    rows = write_export(source, seed=23, users=60, start_ms=int(time.time() * 1000) - 12 * 86_400_000, days=10)
    assert rows > 400
    mapping.write_text(CUSTOM_EVENTS_MAPPING)
    return source, mapping


def _create_topic(bootstrap: str, name: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(30)


def _by_partition(bootstrap: str, topic: str) -> dict[int, list[tuple[bytes, bytes]]]:
    partitions: dict[int, list[tuple[bytes, bytes]]] = {}
    for partition, key, value in read_partitioned(bootstrap, topic):
        partitions.setdefault(partition, []).append((key, value))
    return partitions


BATCH = 40


@pytest.mark.parametrize("stage", ["produced", "committed"])
def test_an_import_killed_mid_way_resumes_and_sends_nothing_twice(kafka_bootstrap, tmp_path, stage):
    names = Names(kafka_bootstrap, partitions=PARTITIONS)
    names.create_topics()
    reference = f"ref-{uuid.uuid4().hex[:8]}"
    _create_topic(kafka_bootstrap, reference)
    source, mapping = _synthetic_export(tmp_path)
    env = names.env(tmp_path / "unused", 0)
    common = ["--format", "ga4", "--input", str(source), "--mapping", str(mapping), "--batch-size", str(BATCH), "--run-size", "150"]

    uninterrupted = _command(env, *common, "--to-topic", reference, "--work-dir", str(tmp_path / "ref"))
    expected = _by_partition(kafka_bootstrap, reference)
    total = sum(map(len, expected.values()))
    assert f"sent {total} events" in uninterrupted.stderr and total > 4 * BATCH

    work, marker = tmp_path / "work", tmp_path / "paused"
    interrupted = subprocess.Popen(
        [sys.executable, "-m", "tests.import_with_pause", f"{stage}:3", str(marker), "--", "import", "--no-progress", *common,
         "--to-topic", "--work-dir", str(work)], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        wait_for(lambda: marker.exists() or interrupted.poll() is not None, 120, f"the import paused at {stage} of batch 3")
        assert interrupted.poll() is None, interrupted.stdout.read().decode() if interrupted.stdout else ""
        os.killpg(interrupted.pid, signal.SIGKILL)
        interrupted.wait(10)
    finally:
        if interrupted.poll() is None:
            os.killpg(interrupted.pid, signal.SIGKILL)
    checkpoint = json.loads(next(work.glob("*-checkpoint-*.json")).read_text())
    assert checkpoint["batch"] == 2 and not checkpoint["done"]  # written after batch 2's commit only
    committed_before = sum(map(len, _by_partition(kafka_bootstrap, names.input).values()))
    # a read_committed reader sees the committed batches only: not the open transaction of batch 3
    assert committed_before == (2 if stage == "produced" else 3) * BATCH

    resumed = _command(env, *common, "--to-topic", "--work-dir", str(work))
    assert f"resumed: {committed_before} events had been sent before the interruption, none again" in resumed.stderr
    assert f"sent {total} events" in resumed.stderr

    got = _by_partition(kafka_bootstrap, names.input)
    assert got == expected  # the same records, in the same order in each partition
    ids = Counter(json.loads(value)["messageId"] for records in got.values() for _key, value in records)
    assert len(ids) == total and max(ids.values()) == 1  # none twice
    for records in got.values():  # each partition in timestamp order
        times = [parse_timestamp(json.loads(value)["timestamp"]) for _key, value in records]
        assert times == sorted(times)

    again = _command(env, *common, "--to-topic", "--work-dir", str(work))
    assert "already done" in again.stderr
    assert _by_partition(kafka_bootstrap, names.input) == expected

    # a local checkpoint ahead of what Kafka committed (its progress records lost): stop, never guess
    path = next(work.glob("*-checkpoint-*.json"))
    ahead = json.loads(path.read_text())
    path.write_text(json.dumps({**ahead, "batch": ahead["batch"] + 5}))
    refused = subprocess.run([sys.executable, "-m", "stream_app", "import", "--no-progress", *common, "--to-topic", "--work-dir",
                              str(work)], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "it stops rather than send anything twice" in refused.stderr, refused.stderr
    assert _by_partition(kafka_bootstrap, names.input) == expected
