"""Session fixtures. The Kafka broker is real: a local Apache Kafka (KRaft) started on free loopback
ports, or the cluster named by KAFKA_BOOTSTRAP_SERVERS. If it cannot be had, Kafka tests fail."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from stream_app.broker.local_kafka import BrokerError, LocalKafka, free_port


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    try:
        broker.start()
    except BrokerError as exc:
        pytest.fail(f"these tests need the real Kafka broker and it could not be started: {exc}", pytrace=False)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
