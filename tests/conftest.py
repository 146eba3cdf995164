"""Session fixtures. The Kafka broker is real: a local Apache Kafka (KRaft) started on free loopback
ports, or the cluster named by KAFKA_BOOTSTRAP_SERVERS. If it cannot be had, Kafka tests fail."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from .helpers import local_broker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    with local_broker("stream-app-test-kafka-") as broker:
        yield broker.bootstrap
