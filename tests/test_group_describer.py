"""The group watch's child process (driver/group_describer.py) against the real broker: it describes a
live group member and its partitions, an error from Kafka comes back as an error, and a child that
librdkafka aborts (SIGABRT, as its admin client did when the group coordinator died) costs one failed
check, is named with its signal, and is replaced at the next check while the worker's process goes on."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_app.driver.group_describer import DescriberGone, GroupDescriber, child_environment

pytestmark = pytest.mark.kafka


@pytest.fixture
def member(kafka_bootstrap):  # type: ignore[no-untyped-def]
    """A static member of a fresh group that owns every partition of a fresh 3-partition topic."""
    topic, group = f"in-{uuid.uuid4().hex[:8]}", f"app-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "group.instance.id": "host-a",
                         "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    deadline = time.monotonic() + 60
    while len(consumer.assignment()) < 3 and time.monotonic() < deadline:
        consumer.poll(0.2)
    assert len(consumer.assignment()) == 3
    stop = threading.Event()
    polling = threading.Thread(target=lambda: [consumer.poll(0.2) for _ in iter(stop.is_set, True)], daemon=True)
    polling.start()
    yield topic, group, consumer.memberid()
    stop.set()
    polling.join()
    consumer.close()


def test_it_describes_the_member_and_survives_its_childs_abort(kafka_bootstrap, member, caplog):
    topic, group, member_id = member
    described = (True, [(member_id, "host-a", frozenset({0, 1, 2}))], 3)
    describer = GroupDescriber({"bootstrap.servers": kafka_bootstrap, "client.id": "describer-test"}, group, topic)
    children = []
    try:
        assert describer.describe() == described
        children.append(describer.proc)
        assert children[0] is not None and children[0].pid != os.getpid()

        # aborted while it answers: held stopped, asked, then SIGABRT and SIGCONT
        os.kill(children[0].pid, signal.SIGSTOP)
        threading.Timer(0.3, lambda: (os.kill(children[0].pid, signal.SIGABRT), os.kill(children[0].pid, signal.SIGCONT))).start()
        with pytest.raises(DescriberGone, match=r"ended, status -6 \(SIGABRT\)"):
            describer.describe()
        assert describer.proc is None
        assert describer.describe() == described  # the next check starts a new child
        children.append(describer.proc)

        # aborted between two checks: said, and replaced
        os.kill(children[1].pid, signal.SIGABRT)
        children[1].wait(10)
        with caplog.at_level("WARNING", logger="stream_app.driver.group_describer"):
            assert describer.describe() == described
        assert "ended between two checks, status -6 (SIGABRT)" in caplog.text
        children.append(describer.proc)
        assert len({child.pid for child in children}) == 3
    finally:
        describer.close()
    assert [child.returncode for child in children] == [-signal.SIGABRT, -signal.SIGABRT, 0]


def test_kafkas_error_is_an_error_and_the_child_ends_with_the_describer(kafka_bootstrap, member):
    _, group, _ = member
    describer = GroupDescriber({"bootstrap.servers": kafka_bootstrap, "client.id": "describer-test"}, group, "no-such-topic")
    try:
        with pytest.raises(RuntimeError, match="no-such-topic"):
            describer.describe()
        child = describer.proc
        assert child is not None and child.poll() is None  # an error is an answer: the child goes on
    finally:
        describer.close()
    assert child.poll() is not None and child.returncode == 0  # it ended at the end of its input


def test_the_childs_environment_holds_no_setting_of_the_app_and_no_secret():
    kept = child_environment({"PATH": "/usr/bin", "PYTHONPATH": "/app", "HOME": "/home/app", "LANG": "C.UTF-8",
                              "KAFKA_SASL_PASSWORD": "s3cret", "KAFKA_BOOTSTRAP_SERVERS": "b:9092",
                              "STREAM_APP_ID": "app", "MY_DB_PASSWORD": "x", "AWS_SECRET_ACCESS_KEY": "y",
                              "GITHUB_TOKEN": "z", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json"})
    assert kept == {"PATH": "/usr/bin", "PYTHONPATH": "/app", "HOME": "/home/app", "LANG": "C.UTF-8"}


def test_the_child_ignores_stop_signals_and_ends_with_its_input(kafka_bootstrap, member):
    topic, group, member_id = member
    describer = GroupDescriber({"bootstrap.servers": kafka_bootstrap, "client.id": "describer-test"}, group, topic)
    try:
        assert describer.describe()[0] is True
        child = describer.proc
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # the worker's process group stopped
            os.kill(child.pid, signum)
        time.sleep(0.5)
        assert child.poll() is None and describer.describe()[1][0][0] == member_id
    finally:
        describer.close()
    assert child.returncode == 0
