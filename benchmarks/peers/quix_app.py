"""Peer (d): the catalog's Cart, Intent and Lifecycle segments on Quix Streams, with its own state
(``StreamingDataFrame.apply(..., stateful=True)``: RocksDB per partition plus a changelog topic) and its
documented defaults (at-least-once, 5 s commit interval); systems (d2) and (d2x2) set
``processing_guarantee="exactly-once"`` (BENCH_PROCESSING_GUARANTEE). The only other settings changed are the broker, the
consumer group, ``auto_offset_reset="earliest"`` (the default "latest" would skip the backfill), the
state directory and the log level.

Event time and timers. Quix Streams 3 has no timers and calls the application only when a message
arrives. So:
- each event is applied to its user's state with rules.apply (the user's own due changes up to the
  event's timestamp first, then the event);
- each partition keeps an event-time clock (newest applied event minus the 5 s allowance; after 5 s
  without input once the backfill is read, the wall clock minus 5 s, as the catalog's clock) and an in-process heap of the users'
  next due times, fed on every event;
- a Quix ``Source`` inside the app produces a tick to every partition of a ticks topic every 0.5 s; the
  ticks are concatenated with the input (``sdf.concat``), so each partition sees wall-clock progress
  while idle. On any message the partition's due users (due <= clock) are advanced with rules.advance.
  Their state is reached through the partition's store transaction (``as_state(prefix=user key)``, the
  same call Quix makes for the current key), because the public State only gives the current key's.
The heap is process memory: a restart would have to rebuild it by scanning the store, which this
benchmark peer does not do (it never restarts).

    python benchmarks/peers/quix_app.py
    env: BENCH_BOOTSTRAP, BENCH_APP_ID, BENCH_INPUT, BENCH_TRANSITIONS, BENCH_PARTITIONS, BENCH_DATA_DIR
"""

from __future__ import annotations

import heapq
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
from quixstreams import Application, State
from quixstreams.context import message_context
from quixstreams.models import TopicConfig
from quixstreams.models.serializers import Deserializer
from quixstreams.sources import Source

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rules  # noqa: E402

BOOTSTRAP = os.environ.get("BENCH_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "6"))
GROUP = os.environ.get("BENCH_APP_ID", "quix-peer")
TICK_KEY = b"\x00tick"


class MsgPackDeserializer(Deserializer):
    def __call__(self, value: bytes, ctx: Any) -> Any:
        return msgpack.unpackb(value)


class Ticks(Source):
    """Wall-clock progress into every partition, twice a second."""

    def run(self) -> None:
        while self.running:
            for partition in range(PARTITIONS):
                self.produce(key=TICK_KEY, value=b"{}", partition=partition)
            self.flush()
            time.sleep(0.5)


app = Application(
    broker_address=BOOTSTRAP,
    consumer_group=GROUP,
    auto_offset_reset="earliest",
    state_dir=os.environ.get("BENCH_DATA_DIR", "var/quix-peer"),
    processing_guarantee=os.environ.get("BENCH_PROCESSING_GUARANTEE", "at-least-once"),
    loglevel="WARNING",
)
events = app.topic(os.environ.get("BENCH_INPUT", "clickstream.events"), key_deserializer="bytes", value_deserializer=MsgPackDeserializer())
ticks = app.topic(f"{GROUP}-ticks", key_deserializer="bytes", value_deserializer="json",
                  config=TopicConfig(num_partitions=PARTITIONS, replication_factor=1))
transitions = app.topic(os.environ.get("BENCH_TRANSITIONS", "quix-peer.transitions"), value_serializer="json")

clock: dict[int, int] = {}
idle = rules.IdleClock()
due_heap: dict[int, list[tuple[int, bytes]]] = {}
due_of: dict[int, dict[bytes, int]] = {}


def _schedule(partition: int, key: bytes, state: dict) -> None:
    due = rules.next_due(state)
    dues = due_of.setdefault(partition, {})
    if due is None:
        dues.pop(key, None)
    elif dues.get(key) != due:
        dues[key] = due
        heapq.heappush(due_heap.setdefault(partition, []), (due, key))


def _fire_due(partition: int, store: Any) -> list[dict]:
    out: list[dict] = []
    heap, dues, until = due_heap.get(partition, []), due_of.get(partition, {}), clock.get(partition, 0)
    while heap and heap[0][0] <= until:
        due, key = heapq.heappop(heap)
        if dues.get(key) != due:
            continue  # superseded
        user_state = store.as_state(prefix=key)
        s = user_state.get("s")
        out += rules.advance(key.decode(), s, until)
        user_state.set("s", s)
        dues.pop(key, None)
        _schedule(partition, key, s)
    return out


def process(value: Any, key: bytes, timestamp: int, headers: Any, state: State) -> list[dict]:
    context = message_context()
    partition = context.partition
    now = time.time()
    out: list[dict] = []
    if key == TICK_KEY:
        idle_clock = idle.idle_clock(partition, now)
        if idle_clock is not None:
            clock[partition] = max(clock.get(partition, 0), idle_clock)
    else:
        user = rules.user_of(value)
        if user is None:
            return out
        s = state.get("s") or rules.new_state()
        out += rules.apply(user, s, value)
        state.set("s", s)
        _schedule(partition, key, s)
        clock[partition] = max(clock.get(partition, 0), rules.event_ms(value["timestamp"]) - rules.ALLOWANCE)
        idle.saw_input(partition, context.offset, now)
    store = merged.processing_context.checkpoint.get_store_transaction(stream_id=merged.stream_id, partition=partition)
    return out + _fire_due(partition, store)


merged = app.dataframe(events).concat(app.dataframe(ticks, source=Ticks(name=f"{GROUP}-ticks")))
merged.apply(process, stateful=True, expand=True, metadata=True).to_topic(transitions)

if __name__ == "__main__":
    app.run()
