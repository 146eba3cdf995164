"""Peer (c): the catalog's Cart, Intent and Lifecycle segments written the way the Faust documentation
teaches it: one agent over the input topic, a ``faust.Table`` (rocksdb store, changelog) set once per
event, and an ``app.timer`` for the time-driven changes (cart abandonment, window expiries, churn).

Settings are Faust's defaults apart from what the docs tell you to set for production: the app id,
the broker, ``store="rocksdb://"`` and the number of partitions. So the processing guarantee is Faust's
default ``at_least_once`` and the commit interval its default 2.8 s.

Event time. The agent applies each event to its user's state (rules.apply: the user's own due changes
up to the event's timestamp first, then the event). Each partition has a clock: the newest applied event
time minus the 5 s allowance, or, after 5 s without input once the backfill is read, the wall clock minus 5 s (the catalog's clock).
Faust tables can only be modified inside a stream, so the timer, every ``TIMER_INTERVAL`` seconds,
iterates the table (the docs' way to visit keys), and for each user whose next due time is at or before
the lowest partition clock sends a ``{"until": clock}`` message keyed by the user to a timers topic
that the same agent consumes; the agent then fires the user's due changes (rules.advance) in stream
context. So a cart opened at t is decided at t + 30 min of event time, exactly as the catalog says;
only when it is emitted depends on the timer interval.

    python benchmarks/peers/textbook_faust.py worker -l warn
    env: BENCH_BOOTSTRAP, BENCH_APP_ID, BENCH_INPUT, BENCH_TRANSITIONS, BENCH_PARTITIONS, BENCH_DATA_DIR,
         BENCH_WEB_PORT
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import faust
import msgpack
from faust.serializers import codecs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rules  # noqa: E402

BOOTSTRAP = os.environ.get("BENCH_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "6"))
TIMER_INTERVAL = float(os.environ.get("BENCH_TIMER_INTERVAL", "5.0"))


class MsgPackCodec(codecs.Codec):
    """A custom codec, registered as the Faust docs show (`codecs.register`)."""

    def _dumps(self, obj: Any) -> bytes:
        return msgpack.packb(obj)

    def _loads(self, s: bytes) -> Any:
        return msgpack.unpackb(s)


codecs.register("bench_msgpack", MsgPackCodec())

app = faust.App(
    os.environ.get("BENCH_APP_ID", "textbook-faust"),
    broker=f"kafka://{BOOTSTRAP}",
    store="rocksdb://",
    datadir=os.environ.get("BENCH_DATA_DIR", "var/textbook-faust"),
    topic_partitions=PARTITIONS,
    web_port=int(os.environ.get("BENCH_WEB_PORT", "6067")),
    key_serializer="raw",  # the input is keyed by the user id (raw bytes); the table uses the same keys
)
events_topic = app.topic(os.environ.get("BENCH_INPUT", "clickstream.events"), key_serializer="raw", value_serializer="bench_msgpack")
timers_topic = app.topic(f"{app.conf.id}-timers", key_serializer="raw", value_serializer="json", partitions=PARTITIONS)
transitions_topic = app.topic(os.environ.get("BENCH_TRANSITIONS", "textbook-faust.transitions"), key_serializer="raw",
                              value_serializer="json")
profiles = app.Table("profiles", default=None, partitions=PARTITIONS, key_type=bytes)  # raw keys, json values

clock: dict[int, int] = {}  # partition -> event-time clock (newest applied event - allowance)
idle = rules.IdleClock()
requested: set[bytes] = set()  # users with a timer message in flight


@app.agent(app.topic(events_topic.get_topic_name(), timers_topic.get_topic_name(), key_serializer="raw", value_serializer="raw"))
async def segment(stream: Any) -> None:
    async for event in stream.events():
        key: bytes = event.key
        partition = event.message.partition
        if event.message.topic == timers_topic.get_topic_name():
            message = json.loads(event.value)
            requested.discard(key)
            state = profiles.get(key)
            if state is None:
                continue
            changes = rules.advance(key.decode(), state, message["until"])
        else:
            body = msgpack.unpackb(event.value)
            user = rules.user_of(body)
            if user is None:
                continue
            state = profiles.get(key) or rules.new_state()
            changes = rules.apply(user, state, body)
            ts = rules.event_ms(body["timestamp"])
            clock[partition] = max(clock.get(partition, 0), ts - rules.ALLOWANCE)
            idle.saw_input(partition, event.message.offset, time.time())
        state["due"] = rules.next_due(state)
        profiles[key] = state
        for change in changes:
            await transitions_topic.send(key=key, value=change)


@app.timer(interval=TIMER_INTERVAL)
async def fire_due_timers() -> None:
    now = time.time()
    for partition in range(PARTITIONS):
        idle_clock = idle.idle_clock(partition, now)
        if idle_clock is not None:  # idle: the clock follows the wall clock
            clock[partition] = max(clock.get(partition, 0), idle_clock)
    until = min(clock.get(p, 0) for p in range(PARTITIONS))
    for key, state in profiles.items():
        due = state.get("due") if state else None
        if due is not None and due <= until and key not in requested:
            requested.add(key)
            await timers_topic.send(key=key, value={"until": until})


if __name__ == "__main__":
    app.main()
