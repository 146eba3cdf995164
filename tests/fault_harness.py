"""The fault tests' and the kill -9 benchmark's shared harness (issue #15): a seeded scenario with a few
malformed records and its check by content against the replay, a worker kept running as a supervisor
would, and a producer pacing input while workers come and go."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from stream_app.demo.generator import as_wire, generate
from stream_app.timeutil import DAY_MS

from .helpers import Names, WorkerProcess, encode, produce, track, wait_for
from .output_check import compare_with_replay, everything_committed

# input no worker can decode: each must come out as exactly one dead letter, whatever the fault
MALFORMED = [b"not json at all", b'{"type": "track", "event": "Product Viewed"}', b'{"type": "track", "userId": "u-bad", "event": "Order Completed", "timestamp": "yesterday"}']


class Scenario:
    """A seeded clickstream (plus a few malformed records), and the check of a faulty run's output."""

    def __init__(self, seed: int, users: int) -> None:
        self.now = int(time.time() * 1000)
        self.events = [as_wire(e) for e in generate(seed=seed, users=users, start_ms=self.now - 4 * DAY_MS, span_ms=3 * DAY_MS)]
        self.lines = [encode(e) for e in self.events] + MALFORMED  # what is produced, as the replay reads it

    def messages(self) -> list[tuple[bytes | None, bytes]]:
        return [(e["userId"].encode(), encode(e)) for e in self.events] + [(None, raw) for raw in MALFORMED]

    def produce(self, bootstrap: str, topic: str) -> None:
        produce(bootstrap, topic, self.messages())

    def send_live_events(self, names: Names, users: int = 200) -> None:
        """Live events (now) of the scenario's first `users` users, whose decisions depend on their state
        so far (carts, intent, orders); they join the input the comparison replays (ids `live-...`)."""
        now = int(time.time() * 1000)
        chosen = sorted({e["userId"] for e in self.events})[:users]
        live = [track(user, name, now + n, f"live-{user}-{n}", product_id=f"p-{n % 7}", revenue=20.0)
                for n, user in enumerate(chosen) for name in ("Product Viewed", "Product Added", "Order Completed")[: 1 + n % 3]]
        produce(names.bootstrap, names.input, [(e["userId"].encode(), encode(e)) for e in live])
        self.events += live
        self.lines += [encode(e) for e in live]

    def decide_history(self, names: Names, data_dir: Path) -> None:
        """A worker decides the whole scenario as history (its backfill drained) and stops cleanly."""
        first = WorkerProcess(names, data_dir).start()
        self.produce(names.bootstrap, names.input)
        wait_for(lambda: everything_committed(names), 180, "the history decided and its backfill drained")
        assert first.stop() == 0, first.log()[-3000:]

    def finish_and_compare(self, names: Names, *workers: "Supervised", timeout: float = 240) -> dict[str, Any]:
        """Wait (never sleep) until the group has committed all input and the backfill drained, stop the
        workers, and compare their whole output with the replay's."""
        wait_for(lambda: everything_committed(names, *workers), timeout, "every input offset committed and the backfill drained")
        for worker in workers:
            worker.stop()
        compared = compare_with_replay(names, self.lines, encode=lambda raw: raw)
        assert compared["compared"] > len(self.events) / 10, "the input produces transitions"
        assert compared["dead_letters"] == len(MALFORMED)
        return compared


class Supervised:
    """A worker kept running as a supervisor (systemd Restart=on-failure, Kubernetes) would: when it exits
    with a non-zero status it is started again (status 70: it cannot go on, e.g. fenced or a failed
    batch); the restart resumes from its local state and the changelog tail. `crash_at` makes the first
    process tests/crash_worker.py, which kills itself at the N-th time the driver reaches a point; the
    restarts are plain workers."""

    def __init__(self, names: Names, data_dir: Path, crash_at: tuple[str, int] | None = None) -> None:
        self.names, self.data_dir = names, data_dir
        command = ("-m", "tests.crash_worker", crash_at[0], str(crash_at[1])) if crash_at else ("-m", "stream_app", "worker")
        self.worker = WorkerProcess(names, data_dir, command).start()
        self.restarts: list[str] = []
        self.dead_logs: list[str] = []  # the logs of the processes that exited, in order
        self.stopped = False

    def poll(self) -> "Supervised":
        proc = self.worker.proc
        if proc is not None and proc.poll() is not None and not self.stopped:
            log = self.worker.log()
            assert proc.returncode != 0, f"the worker stopped by itself with status 0:\n{log[-3000:]}"
            self.dead_logs.append(log)
            # the worker's own last word (it names the status it exits with), not librdkafka's connection noise
            errors = re.findall(r"\[(?:ERROR|CRITICAL)\] (.*)", log)
            own = [e for e in errors if "status 70" in e or "Exiting with status" in e]
            # and the exception its traceback ends with, which says why
            raised = re.findall(r"^Traceback \(most recent call last\):\n(?:[ \t].*\n)*(.*)$", log, re.MULTILINE)
            # or the native crash: librdkafka's failed assertion, and the Python call faulthandler shows
            # the main thread in
            native = re.findall(r"^(\*\*\* .*assert.*|.*Assertion .* failed\.|Fatal Python error: .*)$", log, re.MULTILINE)
            crashed_in = re.findall(r"^Current thread .*\n(?:  .*\n)*?  File (.*)$", log, re.MULTILINE)
            cause = "".join(f" ({what})" for what in [*raised[-1:], *native, *crashed_in[:1]])
            self.restarts.append(f"exit {proc.returncode}: {(own or errors or ['no error logged'])[-1]}{cause}")
            self.worker = WorkerProcess(self.names, self.data_dir).start()
        return self

    def stop(self) -> None:
        if self.stopped:
            return
        self.poll()
        self.stopped = True
        assert self.worker.stop() == 0, self.worker.log()[-3000:]


class Pacer(threading.Thread):
    """Produces messages in order at a steady rate, so input keeps arriving while workers come and go."""

    def __init__(self, bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]], rate: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.messages, self.rate = bootstrap, topic, messages, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaProducer

        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=10)
            started = time.monotonic()
            for n, (key, value) in enumerate(self.messages):
                producer.send(self.topic, key=key, value=value)
                self.sent = n + 1
                ahead = n / self.rate - (time.monotonic() - started)
                if ahead > 0.02:
                    time.sleep(ahead)
            producer.flush()
            producer.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def ticking(worker: WorkerProcess) -> bool:
    try:
        return worker.metric_value("stream_app_clock_ticks_total") > 0
    except OSError:
        return False


def consumed(worker: WorkerProcess) -> float:
    try:
        return worker.metric_value("stream_app_events_consumed_total")
    except OSError:
        return 0.0
