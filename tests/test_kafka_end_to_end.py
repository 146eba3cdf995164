"""The worker against the real broker: transitions, dead letters, memberships and metrics, and the same
transitions as `stream-app replay` over the same (unsorted) events."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter

import pytest

from stream_app.demo.generator import MALFORMED_SAMPLES, as_wire, generate
from stream_app.replay import replay_records
from stream_app.replay.run import final_memberships
from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import HOUR_MS, MINUTE_MS

from .helpers import Names, interleave_users_within, WorkerProcess, encode, page, population_independent, produce, read_all, track, wait_for, without_rfm

pytestmark = [pytest.mark.kafka]


def _scenario(now: int) -> list[dict]:
    """Generated users plus hand-written ones, over the last few hours (a backfill, by the 1 h backfill age)."""
    start = now - 4 * HOUR_MS
    events = generate(seed=11, users=150, start_ms=start, span_ms=2 * HOUR_MS)
    events = [as_wire(e) for e in events]
    t = start + 10 * MINUTE_MS
    events += [
        track("shopper", "Product Added", t, product_id="p1"),  # abandons: a timer fires 30 min later
        page("shopper", "Pricing", t + 1000),
        track("shopper", "Checkout Started", t + 2000),  # intent 2 + 3 + 4 >= 6
        track("buyer", "Product Added", t, product_id="p2"),
        track("buyer", "Order Completed", t + 5 * MINUTE_MS, revenue=40),
    ]
    return events


def _key(record: dict) -> tuple:
    return (record["transition_id"], record["user_id"], record["segment"], record["from"], record["to"], record["at"], json.dumps(record["cause"], sort_keys=True))


def test_worker_matches_replay_and_dead_letters_bad_input(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    now = int(time.time() * 1000)
    events = interleave_users_within(_scenario(now), 4_000, seed=5)  # each user in order
    messages = [(e["userId"].encode(), encode(e)) for e in events]
    malformed = list(MALFORMED_SAMPLES) + [b'{"type":"track","event":"X","userId":"u","timestamp":"2026-01-01T00:00:00Z"}']
    for n, bad in enumerate(malformed):  # interleave bad input with good
        messages.insert(1 + n * 37, (None, bad))
    produce(kafka_bootstrap, names.input, messages)

    worker = WorkerProcess(names, tmp_path / "w").start()
    try:
        wait_for(lambda: _try(worker.metrics), 90, "the worker's /metrics endpoint")
        valid = len(events)
        wait_for(lambda: worker.metric_value("stream_app_events_consumed_total") >= valid, 90, "all valid events consumed")
        expected, _dead, store = replay_records([encode(e) for e in events], CatalogConfig(), until_ms=int(time.time() * 1000) - 6000)
        expected = population_independent(expected)
        got = wait_for(lambda: (rows := read_all(kafka_bootstrap, names.transitions)) and len(population_independent(rows)) >= len(expected) and rows,
                       60, f"{len(expected)} transitions")
        worker.assert_alive()

        # identical records, each exactly once
        assert Counter(r["transition_id"] for r in got).most_common(1)[0][1] == 1
        assert sorted(map(_key, population_independent(got))) == sorted(map(_key, population_independent(expected)))
        causes = Counter((r["segment"], r["cause"]["type"]) for r in got)
        assert causes[("cart_abandoner", "timer")] > 0 and causes[("high_intent", "event")] > 0
        assert {r["to"] for r in got if r["segment"] == "lifecycle"} >= {"new_lead", "activated"}
        shopper = [(r["segment"], r["to"]) for r in got if r["user_id"] == "shopper"]
        assert ("cart_abandoner", "cart_abandoner") in shopper and ("high_intent", "high_intent") in shopper
        assert not [r for r in got if r["user_id"] == "buyer" and r["segment"] == "cart_abandoner"]

        # dead letters: every malformed message, with its reason, bytes and position
        dead = wait_for(lambda: (rows := read_all(kafka_bootstrap, names.dlq)) and len(rows) >= len(malformed) and rows, 30, "dead letters")
        assert sorted(base64.b64decode(d["original"]) for d in dead) == sorted(malformed)
        assert {d["reason"] for d in dead} == {"undecodable", "missing_user_id", "schema_violation", "future_timestamp"}
        assert all(d["topic"] == names.input and d["offset"] >= 0 and d["detail"] for d in dead)

        # the compacted memberships topic ends with each user's final memberships
        latest: dict[str, dict] = {}
        for row in read_all(kafka_bootstrap, names.memberships):
            if row is not None:
                latest[row["user_id"]] = without_rfm(row["segments"])
        replayed = {row["user_id"]: without_rfm(row["segments"]) for row in final_memberships(store, CatalogConfig())}
        assert latest == {user: segs for user, segs in replayed.items() if user in latest}
        assert set(latest) == set(replayed)

        # metrics: counts by type and reason, transitions, populations; no user ids anywhere
        text = worker.metrics()
        assert worker.metric_value("stream_app_dead_letters_total") == len(malformed)
        assert worker.metric_value("stream_app_transitions_total") == len(got)
        assert 'stream_app_segment_population{member="cart_abandoner",segment="cart_abandoner"}' in text
        assert "stream_app_consumer_lag" in text and "stream_app_event_time_to_emit_seconds_bucket" in text
        assert worker.metric_value("stream_app_rocksdb_budget_bytes") == 64 * 2**20
        assert 0 < worker.metric_value("stream_app_rocksdb_cache_bytes") <= 64 * 2**20
        assert "shopper" not in text and "user-000" not in text
        assert "shopper" not in worker.log()
        assert worker.metric_value("stream_app_commits_total", 'outcome="committed"') > 0
        assert worker.metric_value("stream_app_commits_total", 'outcome="aborted"') == 0
        assert worker.metric_value("stream_app_commit_duration_seconds_count") > 0
        # the scenario is 2 to 4 hours old: a backfill, decided on its own clock, every transition historical
        assert worker.metric_value("stream_app_backfill_events_total") == valid
        assert all(r["historical"] for r in got) and worker.metric_value("stream_app_late_events_total") == 0
        live_timers = sum(1 for r in got if r["cause"]["type"] == "timer" and not r["historical"])
        assert worker.metric_value("stream_app_timer_lateness_seconds_count") == live_timers
        assert worker.metric_value("stream_app_assigned_input_partitions") == names.partitions

        # health endpoints, and nothing else: no state or table pages
        assert _status(worker, "/healthz") == 200 and _status(worker, "/readyz") == 200
        assert _status(worker, "/table") == 404 and _status(worker, "/router") == 404
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]


def _try(fn):
    try:
        return fn()
    except OSError:
        return None


def _status(worker: WorkerProcess, path: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}{path}", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
