"""`stream-app erase` against the real broker and worker: the erased user leaves every segment (cause
`erasure`, no traits), the changelog and the memberships topic end with a tombstone for the user, and
a worker that lost its disk restores without the user: the user's next event starts a new user. The
other user is untouched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from .helpers import REPO, Names, WorkerProcess, encode, produce, read_all, track, wait_for
from .output_check import read_partitioned

pytestmark = [pytest.mark.kafka]


def _last_value(bootstrap: str, topic: str, key: bytes) -> tuple[bool, bytes | None]:
    """(the key has a record, the value of its last one: None for a tombstone)."""
    values = [value for _, k, value in read_partitioned(bootstrap, topic) if k == key]
    return bool(values), values[-1] if values else None


def _buyer(user: str, t: int) -> list[dict]:
    return [track(user, "Order Completed", t, order_id=f"{user}-1", revenue=120.0),
            track(user, "Order Completed", t + 1000, order_id=f"{user}-2", revenue=80.0),
            track(user, "Product Added", t + 2000, product_id="p1", price=30.0)]


def test_erase_removes_the_users_state_everywhere(kafka_bootstrap, tmp_path):
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    changelog = names.settings().changelog_topic
    # the compacted topics that hold users' data compact an erased user's older records within 7 days
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resources = [ConfigResource("topic", topic) for topic in (changelog, names.memberships)]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result(10)["max.compaction.lag.ms"].value == str(7 * 24 * 3600 * 1000), resource
    t = int(time.time() * 1000) - 20_000
    produce(kafka_bootstrap, names.input, [(e["userId"].encode(), encode(e)) for e in _buyer("erased", t) + _buyer("kept", t)])
    worker = WorkerProcess(names, tmp_path / "w").start()
    try:
        def entered(user: str):  # type: ignore[no-untyped-def]
            rows = [r for r in read_all(kafka_bootstrap, names.transitions, idle_ms=500) if r["user_id"] == user]
            return rows if any(r["segment"] == "lifecycle" for r in rows) else None

        wait_for(lambda: entered("erased"), 90, "the user's transitions")
        wait_for(lambda: entered("kept"), 30, "the other user's transitions")

        erase = subprocess.run([sys.executable, "-m", "stream_app", "erase", "--user-id", "erased"], cwd=REPO,
                               env=names.env(tmp_path / "cli", 0), capture_output=True, text=True, timeout=120)
        assert erase.returncode == 0, erase.stderr
        assert "erase: 1 messages" in erase.stderr and "erased" not in erase.stderr.replace("erase:", "")  # no id printed

        erasures = wait_for(lambda: [r for r in read_all(kafka_bootstrap, names.transitions, idle_ms=500)
                                     if r["user_id"] == "erased" and r["cause"]["type"] == "erasure"], 60, "the erasure's transitions")
        assert all(r["to"] is None and r["traits"] == {} for r in erasures)
        assert wait_for(lambda: _last_value(kafka_bootstrap, names.memberships, b"erased") == (True, None), 30,
                        "a memberships tombstone")
        # the user left exactly the segments of its last memberships record before the tombstone (written
        # in the same transactions as the transitions; an RFM refresh may have changed them meanwhile)
        records = [value for _, key, value in read_partitioned(kafka_bootstrap, names.memberships) if key == b"erased"]
        members = json.loads(records[-2])["segments"]
        assert members and {r["segment"]: r["from"] for r in erasures} == members
        assert wait_for(lambda: _last_value(kafka_bootstrap, changelog, b"erased") == (True, None), 30, "a changelog tombstone")
        kept_state = _last_value(kafka_bootstrap, changelog, b"kept")
        assert kept_state[0] and kept_state[1] is not None
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

    # a lost disk: everything restores from the changelog, without the erased user
    shutil.rmtree(tmp_path / "w")
    worker = WorkerProcess(names, tmp_path / "w").start()
    try:
        produce(kafka_bootstrap, names.input, [(b"erased", encode(track("erased", "Signed In", int(time.time() * 1000) - 1000)))])
        again = wait_for(lambda: [r for r in read_all(kafka_bootstrap, names.transitions, idle_ms=500)
                                  if r["user_id"] == "erased" and r["segment"] == "lifecycle" and r["cause"]["type"] == "event"
                                  and r["at"] > erasures[0]["at"]], 90, "the erased id's next event decided")
        assert [(r["from"], r["to"]) for r in again] == [(None, "new_lead")]  # a new user, nothing remembered
        rows = read_all(kafka_bootstrap, names.transitions)
        assert len({r["transition_id"] for r in rows}) == len(rows)  # nothing repeated by the restore
        assert not [r for r in rows if r["user_id"] == "kept" and r["cause"]["type"] == "erasure"]
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
