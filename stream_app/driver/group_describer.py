"""The group watch's questions to Kafka, asked from a process of their own.

`describe_consumer_groups` goes to the group coordinator. When that broker dies while a request waits
for it, librdkafka's admin client (2.12, and the same code in later releases) can fail an assertion
(`rd_kafka_enq_once_del_source_return: Assertion 'eonce->refcnt > 0'`) and abort the whole process:
seen on the three-broker test cluster, where it took the worker down with SIGABRT. The check is a side
channel of the worker (group_watch.py), so its admin client lives in a child process: should librdkafka
abort there, the check fails once and the next one starts a new child, while the worker goes on.

The child is `python -m stream_app.driver.group_describer`. It reads the admin client's configuration
(security settings included, hence a pipe rather than arguments or environment; its environment is the
worker's without the app's settings and anything named like a secret) as the first JSON line on its
stdin, then answers each request line with one JSON line on its stdout:
`{"stable": bool, "members": [[member id, instance id, [partition, ...]], ...], "partitions": n}` or
`{"error": "..."}`. It ignores SIGINT, SIGTERM and SIGHUP and ends when its stdin closes, that is when
the worker ends, whichever way. Its stderr is the worker's, so librdkafka's own lines (and an
assertion) show in the worker's log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from typing import Any

log = logging.getLogger(__name__)
REPLY_WITHIN_S = 15.0  # a describe (5 s) and a metadata request (5 s), and the child's start


class DescriberGone(RuntimeError):
    """The child did not answer: it died (librdkafka aborted it), or hangs."""


class GroupDescriber:
    """The worker's side: one child, started at the first question and again after it died."""

    def __init__(self, admin_config: dict[str, Any], group: str, topic: str) -> None:
        self.config = {key: value for key, value in admin_config.items() if not callable(value)}
        self.group, self.topic = group, topic
        self.proc: subprocess.Popen | None = None
        self._pending = b""

    def describe(self) -> tuple[bool, list[tuple[str, str, frozenset[int]]], int]:
        """(the group is Stable, its members as (member id, instance id, input partitions), the input
        topic's partition count). Raises DescriberGone or RuntimeError (Kafka's answer was an error)."""
        proc = self._child()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(b"describe\n")
            proc.stdin.flush()
        except OSError as exc:
            raise self._gone(f"could not be asked ({exc})") from exc
        reply = self._read_line(proc)
        answer = json.loads(reply)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        members = [(member_id, instance_id, frozenset(partitions)) for member_id, instance_id, partitions in answer["members"]]
        return bool(answer["stable"]), members, int(answer["partitions"])

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # the child ends at the end of its input
            proc.wait(2)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _child(self) -> subprocess.Popen:
        if self.proc is not None:
            if self.proc.poll() is None:
                return self.proc
            log.warning("%s", self._gone("ended between two checks"))  # and closed
        self._pending = b""
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=child_environment(os.environ))
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"config": self.config, "group": self.group, "topic": self.topic}).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:  # it died at once (it could not start)
            raise self._gone(f"could not be started ({exc})") from exc
        return self.proc

    def _read_line(self, proc: subprocess.Popen) -> bytes:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + REPLY_WITHIN_S
        # a selector, not select.select: a worker with many RocksDB files has descriptors above 1024
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise self._gone(f"did not answer within {REPLY_WITHIN_S:.0f} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise self._gone("ended")
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line

    def _gone(self, what: str) -> DescriberGone:
        proc = self.proc
        self.close()
        status = proc.returncode if proc is not None else None
        how = ""
        if status is not None and status < 0:
            try:
                how = f" ({signal.Signals(-status).name})"
            except ValueError:  # a real-time signal has no name
                how = f" (signal {-status})"
        return DescriberGone(f"the group check's client process {what}, status {status}{how}; a new one starts at the next check")


# the app's own settings and anything named like a secret stay out of the child's environment: it gets its
# client's configuration on its stdin and needs nothing else of the worker's
_NOT_INHERITED = re.compile(r"^(KAFKA_|STREAM_APP_)|PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)


def child_environment(environ: Any) -> dict[str, str]:
    return {name: value for name, value in environ.items() if not _NOT_INHERITED.search(name)}


def _serve() -> None:
    """The child: answer each request line until stdin closes."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    # Ctrl-C in a terminal, a closed terminal, `kill` of the worker's process group: the worker stops, and
    # the child ends at the end of its input, when the worker has gone (not with a misleading signal first)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    setup = json.loads(sys.stdin.buffer.readline())
    admin = AdminClient(setup["config"])
    group, topic = setup["group"], setup["topic"]
    out = sys.stdout
    for _ in sys.stdin.buffer:
        try:
            description = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
            metadata = admin.list_topics(topic, timeout=5).topics.get(topic)
            if metadata is None or metadata.error is not None:
                raise RuntimeError(f"the input topic {topic} cannot be described: {metadata.error if metadata else 'absent'}")
            members = [[m.member_id, m.group_instance_id or "",
                        sorted(tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic)]
                       for m in description.members]
            answer: dict[str, Any] = {"stable": description.state == ConsumerGroupState.STABLE, "members": members,
                                      "partitions": len(metadata.partitions)}
        except Exception as exc:  # noqa: BLE001 - the worker's watch reports it
            answer = {"error": str(exc)}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    _serve()
