"""Creating the contract's topics survives a request lost on its way (librdkafka's `_DESTROY_BROKER` when
it drops the bootstrap connection, seen against the three-node test cluster) and still refuses what a
retry cannot mend. The admin client is a stand-in returning the futures librdkafka's would."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from stream_app.worker import topics


class AdminAnswering:
    """Answers each create_topics call with the next round's outcome per topic (None: created)."""

    def __init__(self, rounds: list[dict[str, int | None]]) -> None:
        self.rounds = rounds
        self.asked: list[list[str]] = []

    def create_topics(self, specs, **_kwargs):  # type: ignore[no-untyped-def]
        outcome = self.rounds[len(self.asked)]
        self.asked.append([spec.topic for spec in specs])
        futures = {}
        for spec in specs:
            future: Future = Future()
            code = outcome[spec.topic]
            if code is None:
                future.set_result(None)
            else:
                future.set_exception(KafkaException(KafkaError(code)))
            futures[spec.topic] = future
        return futures


def test_a_lost_request_is_sent_again_and_an_existing_topic_is_fine():
    admin = AdminAnswering([
        {"a": KafkaError._DESTROY_BROKER, "b": KafkaError.TOPIC_ALREADY_EXISTS, "c": None},
        {"a": None},
    ])
    topics._create(admin, [NewTopic("a", 1, -1), NewTopic("b", 1, -1), NewTopic("c", 1, -1)], timeout_s=10)
    assert admin.asked == [["a", "b", "c"], ["a"]]


def test_an_error_a_retry_cannot_mend_is_raised_at_once():
    admin = AdminAnswering([{"a": KafkaError.INVALID_REPLICATION_FACTOR}])
    with pytest.raises(KafkaException) as raised:
        topics._create(admin, [NewTopic("a", 1, -1)], timeout_s=10)
    assert raised.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR and admin.asked == [["a"]]


def test_a_request_lost_again_and_again_gives_up_at_the_deadline():
    admin = AdminAnswering([{"a": KafkaError._DESTROY_BROKER}] * 50)
    with pytest.raises(KafkaException):
        topics._create(admin, [NewTopic("a", 1, -1)], timeout_s=1.2)
    assert 2 <= len(admin.asked) <= 5
