"""The pure core's own cost: the engine calls of `stream-app replay` (batches, day boundaries, RFM
refreshes), without decoding the input, timed in CPU seconds, best of N runs in one process. With
`--rebuild`, then the due schedule's rebuild over the resulting store, as a worker does for each
partition it is assigned, per profile, best of N: from the stored schedule entries (what a worker
does), and from the profiles themselves (decode every profile, compute its next due time, index its RFM
values: what it does for profiles written without an entry, or under other definitions).

    .venv/bin/python benchmarks/core_cost.py EVENTS.jsonl [--runs 3] [--chunk 5000] [--hot-profiles N] [--rebuild]

The input is decoded and sorted once, before any timing. `--chunk` is the batch size (the replay's is
5,000, and it also cuts batches at every UTC midnight); `--hot-profiles` is the engine's setting
(docs/state.md, "Hot profiles in memory"; not given: the engine's default). Deterministic instruction
counts, for a shared machine: run it under `valgrind --tool=callgrind` with `--runs 1` and `--runs 2`
and subtract (docs/performance.md, "Core: per-rule dues and hot profiles").
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from stream_app.engine import BatchResult, PartitionEngine, RawRecord
from stream_app.events import InvalidEvent
from stream_app.replay.run import CHUNK, InMemoryStore, _by_refresh_period, _event_order, _period_end, _refresh_rfm
from stream_app.segments.definitions import load_definitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=CHUNK)
    parser.add_argument("--hot-profiles", type=int, default=None)
    parser.add_argument("--rebuild", action="store_true", help="also time the due schedule's rebuild over the store")
    args = parser.parse_args()
    cfg = load_definitions()
    wall = int(time.time() * 1000)
    with open(args.events, "rb") as handle:
        lines = [line.rstrip(b"\r\n") for line in handle if line.strip()]
    decoded = PartitionEngine(0, InMemoryStore(), cfg, use_wall_clock=False).decode(
        (RawRecord(line, "file", 0, n) for n, line in enumerate(lines)), wall)
    decoded.sort(key=_event_order)
    last_ts = max((event.ts for _, event in decoded if not isinstance(event, InvalidEvent)), default=0)
    extra: dict[str, Any] = {} if args.hot_profiles is None else {"hot_profiles": args.hot_profiles}
    best = None
    for _ in range(args.runs):
        store = InMemoryStore()
        engine = PartitionEngine(0, store, cfg, use_wall_clock=False, **extra)
        transitions = 0

        def collect(result: BatchResult) -> None:
            nonlocal transitions
            store.write(result.writes, result.entries)
            transitions += len(result.transitions)

        started = time.process_time()
        for part in _by_refresh_period(decoded, cfg):
            for start in range(0, len(part), args.chunk):
                collect(engine.handle_decoded(part[start:start + args.chunk], wall))
            boundary = _period_end(part, cfg)
            if boundary is not None and boundary <= last_ts:
                collect(engine.advance_to(boundary, wall))
                _refresh_rfm(engine, collect)
        collect(engine.advance_to(last_ts, wall))
        _refresh_rfm(engine, collect)
        took = time.process_time() - started
        best = took if best is None else min(best, took)
        print(f"core: {took:.2f} s CPU for {len(decoded)} events, {transitions} transitions", flush=True)
    print(f"best of {args.runs}: {best:.2f} s CPU")
    if args.rebuild:
        rebuild_cost(store, cfg, args.runs, extra)


def rebuild_cost(store: InMemoryStore, cfg: Any, runs: int, extra: dict[str, Any]) -> None:
    profiles = len(store) - 1  # the partition's clock is one key too
    without_entries = InMemoryStore()
    without_entries.update(store)
    results = {}
    for name, source in (("from schedule entries", store), ("from the profiles", without_entries)):
        rebuilds = []
        for _ in range(runs):
            fresh = PartitionEngine(0, source, cfg, use_wall_clock=False, **extra)
            started = time.process_time()
            population = fresh.rebuild_schedule()
            rebuilds.append(time.process_time() - started)
        results[name] = (dict(fresh.schedule.take_all()), fresh.rfm_index, population)
        rebuild = min(rebuilds)
        print(f"schedule rebuild {name}: {rebuild:.2f} s CPU for {profiles} profiles, {rebuild / profiles * 1e6:.1f} us "
              f"per profile ({profiles / rebuild:,.0f} profiles/s; best of {runs})")
    if len({repr(result) for result in results.values()}) != 1:
        raise SystemExit("the two rebuilds disagree: a schedule entry differs from its profile")


if __name__ == "__main__":
    main()
