"""The bound of every per-user structure, and a ledger of the times a bound bit.

Below these bounds every decision is exact, as the catalog says. Past them the oldest entries go first;
docs/segments.md ("Bounded state") says, for each structure, what may then deviate. Together they cap
the encoded profile (tests/test_state_bounds.py builds the largest one and checks it fits a changelog
record, 1 MB by Kafka's default).

The core is pure, but counting evictions inside `apply_event` and `expire` would thread a counter
through every call; instead they note evictions here and the partition engine takes the tally once per
batch (`take_evictions`) into its `BatchResult.counts`, which the worker turns into the metric
`stream_app_state_evictions_total{structure}`. One process, one thread: the tally belongs to the batch
being processed.
"""

from __future__ import annotations

from collections import Counter

SEEN_IDS = 10_000  # deduplication: the newest messageId hashes within the 7-day window
INTENT_ENTRIES = 256  # intent-scored events within the 7-day window
ORDERS = 1_000  # `Order Completed` within the 365-day window (RFM F and M, lifecycle, promotions)
REFUNDS = 1_000  # `Order Refunded` within the 365-day window
PROMO_CLICKS = 500  # `Promotion Clicked` within the 90-day window
FEATURES = 100  # features with a `Feature Used` in the 7-day window (power_user), most recently used kept
USAGE_METRICS = 100  # metrics with a latest `Usage Reported` (nearing_usage_limit), most recently reported kept
FEATURES_EVER = 200  # distinct features ever used (trial activation; the key feature is always kept)
CUSTOM_BUCKETS = 2_000  # buckets per series of a user-defined windowed aggregate
CART_ITEMS = 500  # distinct products in the cart; more are counted under one overflow item

STRUCTURES = ("seen", "intent", "orders", "refunds", "promo_clicks", "features", "usage", "features_ever", "custom_buckets",
              "cart_items")

_evictions: Counter = Counter()


def evicted(structure: str, count: int = 1) -> None:
    _evictions[structure] += count


def take_evictions() -> Counter:
    """The evictions since the last call, by structure."""
    global _evictions
    taken, _evictions = _evictions, Counter()
    return taken
