"""RFM across workers: two workers, each owning one of the two input partitions, score their customers
against the merged population of both (published on `<app>.rfm-population`), not their own half."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from kafka import KafkaProducer

from stream_app.timeutil import DAY_MS

from . import oracle
from .helpers import Names, WorkerProcess, encode, read_all, track, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _customers(now: int) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Partition 0: ten small, recent customers (1 order of 10). Partition 1: ten big, older ones (5
    orders of 100). Alone, each half is uniform and every customer would score 1/1/1 (`lost`);
    together the small ones are `about_to_sleep` (R 3, FM 1) and the big ones `at_risk` (R 1, FM 3)."""
    histories: dict[str, list[dict]] = {}
    partition_of: dict[str, int] = {}
    for i in range(10):
        user = f"small-{i}"
        histories[user] = [track(user, "Order Completed", now - 2 * DAY_MS, f"{user}-0", revenue=10)]
        partition_of[user] = 0
        user = f"big-{i}"
        histories[user] = [track(user, "Order Completed", now - (40 + n) * DAY_MS, f"{user}-{n}", revenue=100) for n in range(5)]
        partition_of[user] = 1
    return histories, partition_of


def test_two_workers_score_against_the_merged_population(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=2)
    names.create_topics()
    definitions = tmp_path / "segments.yaml"
    definitions.write_text("rfm:\n  refresh_interval: 2s\n")
    workers = []
    for n in range(2):
        worker = WorkerProcess(names, tmp_path / f"w{n}")
        worker.start_env = {"STREAM_APP_SEGMENTS_FILE": str(definitions)}
        workers.append(worker.start())
    try:
        # both workers in the group, one input partition each
        def split() -> bool:
            try:
                return [w.metric_value("stream_app_assigned_input_partitions") for w in workers] == [1, 1]
            except OSError:
                return False

        wait_for(split, 120, "each worker to own one input partition")
        now = int(time.time() * 1000)
        histories, partition_of = _customers(now)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        for user, events in histories.items():
            for event in events:
                producer.send(names.input, key=user.encode(), value=encode(event), partition=partition_of[user])
        producer.flush()
        producer.close()

        expected = oracle.rfm_names(histories, now)
        assert Counter(expected.values()) == {"about_to_sleep": 10, "at_risk": 10}

        seen: list[dict] = [{}]

        def final_names() -> dict[str, str] | None:
            latest: dict[str, str | None] = {}
            seen[0] = latest
            for row in read_all(kafka_bootstrap, names.memberships, idle_ms=1000):
                if row is not None:
                    latest[row["user_id"]] = row["segments"].get("rfm")
            return latest if latest == expected else None

        try:
            wait_for(final_names, 120, "RFM names from the merged population")
        except AssertionError:
            raise AssertionError(f"expected {expected}, the memberships topic has {seen[0]}") from None
        assert split(), "the partitions stayed split between the two workers"
        for worker in workers:
            worker.assert_alive()
            assert worker.metric_value("stream_app_rfm_scored_customers") == 20
        transitions = read_all(kafka_bootstrap, names.transitions, idle_ms=1000)
        occurrences = Counter(r["transition_id"] for r in transitions)
        assert max(occurrences.values()) == 1
        refreshes = [r for r in transitions if r["segment"] == "rfm" and r["cause"]["type"] == "refresh"]
        assert refreshes and all(r["traits"]["scored_population"] >= 1 for r in refreshes)
        last = {}
        for r in transitions:
            if r["segment"] == "rfm":
                last[r["user_id"]] = r
        assert {u: r["to"] for u, r in last.items()} == expected
        assert all(r["traits"]["scored_population"] == 20 for r in last.values())
    finally:
        for worker in workers:
            worker.stop()
