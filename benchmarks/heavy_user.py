"""A heavy user's cost against the same events spread over many users (issue #16), with the pure core.

One user sends N events, 3/4 `Product Viewed` and 1/4 `Feature Used` over 5,000 feature names, one every
0.4 s; the baseline is the same N events with the user id taken from 10,000 users. Both go through
`stream-app replay`'s code path (`replay_records`). Prints events/s of each and their ratio, and the
heavy user's time per 10% of its events (flat when a step's cost does not grow with the history).

    .venv/bin/python benchmarks/heavy_user.py --events 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_app.engine import PartitionEngine, RawRecord  # noqa: E402
from stream_app.replay import InMemoryStore, replay_records  # noqa: E402
from stream_app.segments.config import CatalogConfig  # noqa: E402
from stream_app.timeutil import format_timestamp  # noqa: E402

T0 = 1_790_000_000_000


def events(count: int, users: int) -> list[bytes]:
    lines = []
    for n in range(count):
        user = "heavy" if users == 1 else f"u{n % users}"
        props = {"feature": f"feature-{(n // 4) % 5000}"} if n % 4 == 3 else {"product_id": f"p{n % 50}"}
        name = "Feature Used" if n % 4 == 3 else "Product Viewed"
        lines.append(json.dumps({"type": "track", "event": name, "userId": user, "messageId": f"m{n}",
                                 "timestamp": format_timestamp(T0 + n * 400), "properties": props}).encode())
    return lines


def timed_replay(lines: list[bytes]) -> float:
    started = time.perf_counter()
    replay_records(lines, CatalogConfig())
    return time.perf_counter() - started


def tenths(lines: list[bytes]) -> list[float]:
    """Seconds per tenth of the events, fed in order through one engine in chunks of 5,000."""
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CatalogConfig(), use_wall_clock=False)
    step = max(1, len(lines) // 10)
    out = []
    for start in range(0, step * 10, step):
        began = time.perf_counter()
        for chunk in range(start, start + step, 5000):
            result = engine.handle([RawRecord(line) for line in lines[chunk:min(chunk + 5000, start + step)]], T0)
            store.write(result.writes)
        out.append(time.perf_counter() - began)
    return out


def mixed(count: int) -> None:
    from stream_app.demo.generator import as_wire, generate
    from stream_app.state import bounds
    from stream_app.state.encoding import decode_profile
    from stream_app.timeutil import DAY_MS

    others = [json.dumps(as_wire(e)).encode() for e in generate(5, 1_000, T0, DAY_MS)]
    step = DAY_MS / count
    heavy = [json.dumps({"type": "track", "event": "Feature Used" if n % 4 == 3 else "Product Viewed", "userId": "heavy",
                         "messageId": f"h{n}", "timestamp": format_timestamp(T0 + int(n * step)),
                         "properties": {"feature": f"feature-{(n // 4) % 5000}"} if n % 4 == 3 else {"product_id": f"p{n % 50}"}}).encode()
             for n in range(count)]
    started = time.perf_counter()
    with_heavy, _, store = replay_records(others + heavy, CatalogConfig(), until_ms=T0 + DAY_MS)
    seconds = time.perf_counter() - started
    profile = decode_profile(store["heavy"])
    sizes = {"seen": (len(profile.seen), bounds.SEEN_IDS), "intent": (len(profile.intent), bounds.INTENT_ENTRIES),
             "features": (len(profile.features), bounds.FEATURES)}
    alone, _, _ = replay_records(others, CatalogConfig(), until_ms=T0 + DAY_MS)

    def key(rows: list[dict]) -> list[str]:
        return sorted(json.dumps({k: v for k, v in r.items() if k != "emitted_at"}, sort_keys=True)
                      for r in rows if r["user_id"] != "heavy" and r["segment"] != "rfm")

    same = key(with_heavy) == key(alone)
    print(f"{count:,} events of one user in one day among {len(others):,} others': {seconds:.1f} s "
          f"({(count + len(others)) / seconds:,.0f} events/s); heavy profile {len(store['heavy']):,} bytes; "
          f"structures (size, bound) {sizes}; other users' transitions (RFM aside) unchanged: {same}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--mixed", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.mixed:
        mixed(args.mixed)
        return 0
    heavy, spread = events(args.events, 1), events(args.events, 10_000)
    heavy_s, spread_s = timed_replay(heavy), timed_replay(spread)
    print(f"{args.events:,} events: one user {args.events / heavy_s:,.0f} events/s ({heavy_s:.1f} s), "
          f"10,000 users {args.events / spread_s:,.0f} events/s ({spread_s:.1f} s); ratio {spread_s / heavy_s:.2f}")
    print("one user, seconds per tenth of its events:", " ".join(f"{s:.2f}" for s in tenths(heavy)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
