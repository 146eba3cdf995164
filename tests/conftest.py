"""Session fixtures. The Kafka broker is real: a local Apache Kafka (KRaft) started on free loopback
ports, or the cluster named by KAFKA_BOOTSTRAP_SERVERS. If it cannot be had, Kafka tests fail."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from stream_app.broker.local_kafka import BrokerError, LocalKafka, free_port


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    # not under pytest's basetemp: another pytest session's clean-up of old basetemps must not delete it
    data_dir = Path(tempfile.mkdtemp(prefix="stream-app-test-kafka-"))
    broker = LocalKafka(data_dir, port=free_port(), controller_port=free_port())
    try:
        broker.start()
    except BrokerError as exc:
        pytest.fail(f"these tests need the real Kafka broker and it could not be started: {exc}", pytrace=False)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
