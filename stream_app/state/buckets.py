"""Sparse time buckets: the state behind user-defined windowed aggregates.

A series keeps, for the events that match one filter, a sorted list of buckets `[start, count, sum]`
(only buckets that saw an event exist). The bucket width (the window's resolution) grows with the
window so that a series stays small: 1 s for windows up to 1 day, 1 min up to 30 days, 1 h beyond.
An event counts in a window at moment t while t < its bucket's start + the window, so it leaves the
window at most one resolution earlier than its exact timestamp would. Buckets are dropped by event
time once every window reading them has passed.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from ..timeutil import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from . import bounds

Bucket = list[Any]  # [start ms, count, sum]


def resolution_for(window_ms: int) -> int:
    if window_ms <= DAY_MS:
        return SECOND_MS
    if window_ms <= 30 * DAY_MS:
        return MINUTE_MS
    return HOUR_MS


def add(buckets: list[Bucket], ts: int, value: float, resolution: int) -> None:
    start = ts - ts % resolution
    index = bisect_left(buckets, start, key=lambda b: b[0])
    if index < len(buckets) and buckets[index][0] == start:
        buckets[index][1] += 1
        buckets[index][2] += value
    else:
        buckets.insert(index, [start, 1, value])
        if len(buckets) > bounds.CUSTOM_BUCKETS:  # the oldest bucket goes (docs/segments.md, bounded state)
            del buckets[0]
            bounds.evicted("custom_buckets")


def in_window(buckets: list[Bucket], t: int, window_ms: int) -> list[Bucket]:
    """Buckets whose events count at ``t``: start <= t < start + window."""
    return [b for b in buckets if b[0] <= t < b[0] + window_ms]


def expire(buckets: list[Bucket], t: int, keep_ms: int) -> list[Bucket]:
    """Drop buckets no window of length ``keep_ms`` can see at ``t`` or later."""
    if buckets and buckets[0][0] + keep_ms <= t:
        return [b for b in buckets if b[0] + keep_ms > t]
    return buckets
