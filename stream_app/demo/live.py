"""Live synthetic traffic: a backfill of history, then new sessions arriving in compressed event time.

Event time runs `speed` times faster than the wall clock (default 60: a 30-minute cart rule shows in
30 s) and stays behind the wall clock, as the partition clock requires.
"""

from __future__ import annotations

import heapq
import random
import time
from typing import Any, Iterator

from ..timeutil import DAY_MS, MINUTE_MS
from .generator import generate, user_events


def live_events(seed: int, live_start_ms: int, speed: float, sessions_per_minute: int = 3) -> Iterator[dict[str, Any]]:
    """Yield events forever, each when its compressed event time has come (blocks with sleep)."""
    rng = random.Random(seed + 1)
    heap: list[tuple[int, str, dict[str, Any]]] = []
    wall_start = time.monotonic()
    # Sessions already under way at the start (begun up to 20 minutes before it) give every partition
    # steady traffic from the first second.
    next_minute = live_start_ms - 20 * MINUTE_MS
    user_no = 0
    while True:
        now_event = live_start_ms + int((time.monotonic() - wall_start) * 1000 * speed)
        while next_minute <= now_event + MINUTE_MS:
            for _ in range(sessions_per_minute):
                user_no += 1
                for event in user_events(rng, f"live-{user_no:06d}", next_minute, 20 * MINUTE_MS):
                    heapq.heappush(heap, (event["timestamp"], event["messageId"], event))
            next_minute += MINUTE_MS
        if heap and heap[0][0] <= now_event:
            yield heapq.heappop(heap)[2]
            continue
        time.sleep(0.02)


def backfill_events(seed: int, users: int, live_start_ms: int, days: int = 10) -> list[dict[str, Any]]:
    return generate(seed, users, live_start_ms - days * DAY_MS, days * DAY_MS)
