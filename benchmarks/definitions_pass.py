"""New definitions over a partition's stored users: all at once (the replay, and every worker before
2026-11-30) against the worker's bounded pass (engine/definitions_pass.py), in one run, in memory.

The demo generator's users are replayed into one engine; two copies of its store then take the same new
definitions (a lower intent threshold and a shorter cart window, so that many users change), one decided
at once, one a bounded number of users per call as a worker with the default 6 partitions does (1,000
users per call: half decided again, the rest for the timers due). Prints the time of the single call,
the longest and the mean call of the pass, their number, and the pass's total against the single call.

    .venv/bin/python benchmarks/definitions_pass.py --users 20000 [--per-call 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

from stream_app.demo.generator import as_wire, generate
from stream_app.engine import PartitionEngine, RawRecord
from stream_app.engine.partition import CLOCK_KEY
from stream_app.replay import InMemoryStore
from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import DAY_MS, MINUTE_MS


def _copy(store: InMemoryStore) -> InMemoryStore:
    copy = InMemoryStore()
    copy.write(dict(store))
    return copy


def _history(users: int) -> tuple[InMemoryStore, CatalogConfig, int]:
    cfg = CatalogConfig()
    now = int(time.time() * 1000)
    events = [as_wire(e) for e in generate(seed=7, users=users, start_ms=now - 11 * DAY_MS, span_ms=10 * DAY_MS)]
    events.sort(key=lambda e: e["timestamp"])
    store = InMemoryStore()
    engine = PartitionEngine(0, store, cfg, use_wall_clock=False)
    records = [RawRecord(json.dumps(e).encode(), "in", 0, n) for n, e in enumerate(events)]
    for start in range(0, len(records), 5000):
        store.write(engine.handle(records[start:start + 5000], now).writes)
    return store, cfg, now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--per-call", type=int, default=1_000, help="the engine's budget per call (timers_per_step)")
    args = parser.parse_args()

    store, cfg, now = _history(args.users)
    stored = sum(1 for key in store if key != CLOCK_KEY)
    new = replace(cfg, intent_threshold=cfg.intent_threshold / 2, cart_abandon_after_ms=10 * MINUTE_MS, version="new")

    at_once = PartitionEngine(0, _copy(store), cfg, use_wall_clock=False)
    started = time.perf_counter()
    single = at_once.reevaluate_all(new, now, loaded_at=now)
    single_s = time.perf_counter() - started

    copy = _copy(store)
    bounded = PartitionEngine(0, copy, cfg, use_wall_clock=False, timers_per_step=args.per_call)
    calls: list[float] = []
    transitions = 0
    started = time.perf_counter()
    result = bounded.reevaluate_all(new, now, loaded_at=now)
    calls.append(time.perf_counter() - started)
    transitions += len(result.transitions)
    copy.write(result.writes)
    while bounded.deciding or bounded.left_due:
        started = time.perf_counter()
        result = bounded.decide_pending(now) if bounded.deciding else bounded.advance_to(bounded.clock, now)
        calls.append(time.perf_counter() - started)
        transitions += len(result.transitions)
        copy.write(result.writes)

    print(f"{stored:,} stored users; {len(single.transitions):,} transitions at once, {transitions:,} by the pass")
    print(f"at once: one call of {single_s * 1000:,.0f} ms ({single_s / stored * 1e6:.0f} us per user)")
    print(f"pass ({args.per_call:,} per call): {len(calls)} calls, longest {max(calls) * 1000:,.0f} ms, "
          f"mean {statistics.mean(calls) * 1000:,.0f} ms, total {sum(calls) * 1000:,.0f} ms "
          f"({sum(calls) / single_s:.2f} x the single call)")


if __name__ == "__main__":
    main()
