"""Waiting for a Kafka cluster that does not answer, instead of exiting (issue #15).

When every broker is away, librdkafka's calls fail with retriable errors (timed out, transport, all
brokers down). Exiting then would only restart the process into the same outage, again and again. So
the calls whose failure would end the process (registering the transactional id, aborting or
committing a transaction, reading the committed offsets) are retried here with a pause, for as long
as their error is retriable, and the process waits where it is. It stays live for its liveness probe
and its own watchdog, since each retry proves the loop turns, and it is not ready for its readiness
probe. A fatal error (fenced) is never retried.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger(__name__)
REPORT_EVERY_S = 15.0


def kafka_error(exc: KafkaException) -> KafkaError | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None


# errors of a cluster that does not answer (or whose coordinator moves), whether or not librdkafka
# flags them retriable
UNREACHABLE = frozenset({
    KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._WAIT_COORD,
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION,
})


def unreachable(error: KafkaError) -> bool:
    return error.retriable() or error.code() in UNREACHABLE


class Patience:
    """Retries of calls that fail while the cluster is unreachable, and the state they put the process in."""

    def __init__(self, pause_s: float = 1.0) -> None:
        self.pause_s = pause_s
        self.since: float | None = None  # monotonic time the current wait began; None: not waiting
        self.last_beat = 0.0  # monotonic time of the last attempt
        self._last_report = 0.0

    @property
    def waiting(self) -> bool:
        return self.since is not None

    def call(self, what: str, fn: Callable[..., Any], *args: Any, retry_if: Callable[[KafkaError], bool] = unreachable) -> Any:
        """`fn(*args)`, retried while it fails with an error that is not fatal and `retry_if` accepts."""
        while True:
            try:
                result = fn(*args)
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is None or error.fatal() or not retry_if(error):
                    self._done()
                    raise
                self._waited(what, error)
                continue
            self._done(what)
            return result

    def _waited(self, what: str, error: KafkaError) -> None:
        now = time.monotonic()
        self.last_beat = now
        if self.since is None:
            self.since = self._last_report = now
            log.warning("%s: %s; Kafka does not answer: waiting for it (retrying every %.0f s)", what, error, self.pause_s)
        elif now - self._last_report >= REPORT_EVERY_S:
            self._last_report = now
            log.warning("%s: still waiting for Kafka, %.0f s now: %s", what, now - self.since, error)
        time.sleep(self.pause_s)

    def _done(self, what: str | None = None) -> None:
        if self.since is not None and what is not None:
            log.info("%s: Kafka answers again, after %.0f s", what, time.monotonic() - self.since)
        self.since = None
