"""Reading a stopped worker's whole output by content and comparing it with `stream-app replay` of the
same input: the backfill, import and fault tests (issue #15).

Nothing is read by sleeping: the tests wait until the group has committed every input offset
(`all_input_committed`) and the backfill has drained, stop the workers, then read every topic up to its
end. T is the lowest live partition clock the worker committed, read from the changelog. Compared:
- every transition with `at <= T`, by every field except `emitted_at` (raw occurrences: an id twice fails);
- the final memberships snapshot of every user whose last transition is at or before T;
- the dead letters (reason, detail and the original bytes), as a multiset;
- the committed input offsets: the end of every input partition.
RFM is left out: its scores depend on the population at each refresh, which the worker takes every
`rfm.refresh_interval` of wall time and a replay at every midnight of event time
(tests/test_kafka_rfm_population.py compares it).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import msgpack

from stream_app.engine.partition import CLOCK_KEY
from stream_app.replay import replay_records
from stream_app.replay.run import final_memberships
from stream_app.segments.definitions import load_definitions
from stream_app.timeutil import parse_timestamp

from .helpers import Names, population_independent, without_rfm


def read_partitioned(bootstrap: str, topic: str) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every committed record of every partition, read up to the partitions' ends (read_committed)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader-unused", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        open_partitions, rows = set(partitions), []
        while open_partitions:
            message = consumer.poll(10)
            assert message is not None, f"{topic}: no end of partition within 10 s"
            if message.error() is not None:
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                open_partitions.discard(message.partition())
                continue
            rows.append((message.partition(), message.key(), message.value()))
        return rows
    finally:
        consumer.close()


def committed_clocks(names: Names) -> dict[int, tuple[int, int | None]]:
    """Each partition's last committed (live clock, newest backfill event or None) from the changelog."""
    clocks: dict[int, tuple[int, int | None]] = {}
    for partition, key, value in read_partitioned(names.bootstrap, names.settings().changelog_topic):
        if key == CLOCK_KEY.encode() and value is not None:
            state = msgpack.unpackb(value)
            clocks[partition] = (state[1], state[4] if len(state) > 4 else None)
    return clocks


def _comparable(row: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in row.items() if k != "emitted_at"}, sort_keys=True)


def compare_with_replay(names: Names, events: list[Any], encode: Any) -> dict[str, Any]:
    """Assert that the stopped worker's output equals the replay's as of T; return what was compared.
    `encode` turns each of `events` into the bytes that were produced to the input topic."""
    clocks = committed_clocks(names)
    assert len(clocks) == names.partitions, clocks
    assert all(backfill is None for _, backfill in clocks.values()), f"a backfill has not drained: {clocks}"
    until = min(clock for clock, _ in clocks.values())
    cfg = load_definitions(None)  # the worker's: the shipped definitions (their version names the file's hash)
    lines = [encode(e) for e in events]
    expected, dead, store = replay_records(lines, cfg, until_ms=until)
    # the dead letters: what, why, and the original bytes, each as often as the replay has it
    got_dead = Counter((d["reason"], d["detail"], base64.b64decode(d["original"]))
                       for _, _, v in read_partitioned(names.bootstrap, names.settings().dlq_topic) if v is not None
                       for d in [json.loads(v)])
    numbered = [line.rstrip(b"\r\n") for line in lines if line.strip()]
    assert got_dead == Counter((d["reason"], d["detail"], numbered[d["line"] - 1]) for d in dead), "the dead letters differ"
    uncommitted = input_offsets_not_committed(names)
    assert not uncommitted, f"input partitions whose committed offset is not their end: {uncommitted}"

    got = [json.loads(v) for _, _, v in read_partitioned(names.bootstrap, names.transitions) if v is not None]
    repeated = [tid for tid, n in Counter(r["transition_id"] for r in got).items() if n > 1]
    assert not repeated, f"{len(repeated)} transition ids emitted more than once"

    def decided_by_t(rows: list[dict[str, Any]]) -> list[str]:
        return sorted(_comparable(r) for r in population_independent(rows)
                      if parse_timestamp(r["at"]) <= until and r["cause"]["type"] != "refresh")

    got_rows, expected_rows = decided_by_t(got), decided_by_t(expected)
    missing = set(expected_rows) - set(got_rows)
    extra = set(got_rows) - set(expected_rows)
    assert got_rows == expected_rows, (
        f"{len(missing)} transitions missing, {len(extra)} extra; e.g. missing {sorted(missing)[:2]}, extra {sorted(extra)[:2]}")

    after_t = {r["user_id"] for r in got if parse_timestamp(r["at"]) > until}
    latest: dict[str, dict[str, str] | None] = {}
    for _, key, value in read_partitioned(names.bootstrap, names.memberships):
        latest[key.decode()] = None if value is None else without_rfm(json.loads(value)["segments"])
    replayed = {row["user_id"]: without_rfm(row["segments"]) for row in final_memberships(store, cfg)}
    users = (set(latest) | set(replayed)) - after_t
    assert {u: latest.get(u) for u in users} == {u: replayed.get(u) for u in users}
    return {"until": until, "transitions": got, "compared": len(got_rows), "memberships": len(users), "dead_letters": sum(got_dead.values())}


def entered_from_null_twice(transitions: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(user, family) pairs that entered a family from null more than once."""
    entries = Counter((r["user_id"], r["segment"]) for r in transitions
                      if r["from"] is None and r["segment"] in ("lifecycle", "engagement", "rfm"))
    return [pair for pair, n in entries.items() if n > 1]


def input_offsets_not_committed(names: Names) -> dict[int, tuple[int, int]]:
    """Input partitions with records after the offset the group committed: {partition: (committed, end)}.
    (A transactional producer's commit marker takes the last offset of its input: a committed offset
    short of the end by markers alone has nothing left to read.)"""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": names.bootstrap, "group.id": names.app_id, "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        short = {}
        for tp in consumer.committed([TopicPartition(names.input, p) for p in range(names.partitions)], timeout=10):
            _low, high = consumer.get_watermark_offsets(TopicPartition(names.input, tp.partition), timeout=10)
            if tp.offset < high:
                short[tp.partition] = (tp.offset, high)
        if short:  # anything to read after the committed offsets?
            consumer.assign([TopicPartition(names.input, p, max(committed, 0)) for p, (committed, _) in short.items()])
            unread, open_partitions = set(), set(short)
            while open_partitions:
                message = consumer.poll(10)
                assert message is not None, "no end of partition within 10 s"
                if message.error() is None:
                    unread.add(message.partition())
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(message.partition())
            short = {p: ends for p, ends in short.items() if p in unread}
        return short
    finally:
        consumer.close()


def backfill_drained(names: Names) -> bool:
    """Every partition's committed clock says its backfill has drained."""
    clocks = committed_clocks(names)
    return len(clocks) == names.partitions and all(backfill is None for _, backfill in clocks.values())


def everything_committed(names: Names, *workers: Any) -> bool:
    """Every input offset committed and the backfill drained; `workers` (tests.test_kafka_faults.Supervised)
    are polled meanwhile, so that one that exited (status 70) is started again."""
    from confluent_kafka import KafkaException

    for worker in workers:
        worker.poll()
    try:
        return not input_offsets_not_committed(names) and backfill_drained(names)
    except KafkaException as exc:  # e.g. NOT_COORDINATOR while the group coordinator loads: not yet
        if exc.args and exc.args[0].fatal():
            raise
        return False
