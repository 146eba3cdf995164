"""The partition clock, deduplication, ordering within the lateness allowance, dormancy."""

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.engine import PartitionEngine, RawRecord
from stream_app.engine.partition import CLOCK_KEY
from stream_app.replay import InMemoryStore
from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import DAY_MS, MINUTE_MS, SECOND_MS

from .helpers import encode, page, track

CFG = CatalogConfig()
T0 = 1_790_000_000_000
WALL = T0 + 30 * DAY_MS


def engine(store=None, wall_clock=True):
    return PartitionEngine(0, store if store is not None else InMemoryStore(), CFG, use_wall_clock=wall_clock)


def feed(eng, store, events, wall=WALL):
    result = eng.handle([RawRecord(encode(e)) for e in events], wall)
    store.write(result.writes)
    return result


def test_clock_is_max_event_time_minus_allowance_and_never_moves_back():
    store = InMemoryStore()
    eng = engine(store)
    feed(eng, store, [track("u", "Signed In", T0 + 10 * SECOND_MS)])
    assert eng.clock == T0 + 5 * SECOND_MS
    feed(eng, store, [track("u", "Signed In", T0)])  # older: the clock stays
    assert eng.clock == T0 + 5 * SECOND_MS


def test_clock_is_never_ahead_of_the_wall_clock():
    store = InMemoryStore()
    eng = engine(store)
    wall = T0
    feed(eng, store, [track("u", "Signed In", T0 + 3600_000)], wall=wall)  # an hour ahead: valid (< 24 h)
    assert eng.clock == wall - CFG.lateness_ms


def test_idle_partition_follows_the_wall_clock_and_fires_timers():
    store = InMemoryStore()
    eng = engine(store)
    feed(eng, store, [track("u", "Product Added", T0, product_id="p")], wall=T0 + 1000)
    assert eng.tick(T0 + 1000 + CFG.lateness_ms).transitions == []  # not idle for longer than the allowance yet
    result = eng.tick(T0 + 31 * MINUTE_MS + CFG.lateness_ms + 1)
    store.write(result.writes)
    # the buffered event is applied once the clock passes it, then the 30-minute timer fires
    assert [(t["segment"], t["to"], t["cause"]["type"]) for t in result.transitions if t["segment"] != "engagement"] == [
        ("lifecycle", "new_lead", "event"), ("cart_abandoner", "cart_abandoner", "timer")]


def test_the_clock_survives_a_restart_through_the_store():
    store = InMemoryStore()
    eng = engine(store)
    feed(eng, store, [track("u", "Signed In", T0 + 10 * SECOND_MS)])
    assert CLOCK_KEY in store
    again = engine(store)
    assert again.clock == eng.clock


def test_a_message_id_seen_again_is_dropped_and_counted():
    store = InMemoryStore()
    eng = engine(store)
    first = feed(eng, store, [track("u", "Signed In", T0, mid="same")])
    again = feed(eng, store, [track("u", "Signed In", T0 + 1000, mid="same")])
    assert first.counts["duplicate"] == 0 and again.counts["duplicate"] == 1


def test_invalid_records_become_dead_letters_with_their_position():
    store = InMemoryStore()
    eng = engine(store)
    result = eng.handle([RawRecord(b"\x00\x01", "in", 2, 41), RawRecord(encode(track("u", "Signed In", T0)), "in", 2, 42)], WALL)
    assert [(r.offset, inv.reason.value) for r, inv in result.dead_letters] == [(41, "undecodable")]
    assert result.counts["type:track"] == 1


def test_a_profile_silent_for_400_days_is_dropped_without_transitions():
    store = InMemoryStore()
    eng = engine(store, wall_clock=False)
    feed(eng, store, [track("u", "Order Completed", T0, revenue=1)])
    result = eng.advance_to(T0 + 400 * DAY_MS, WALL)
    store.write(result.writes)
    assert "u" not in store
    assert result.memberships == {"u": None}  # a tombstone on the memberships topic
    # the order is applied, the 60-day churn fires; the drop itself emits no transition
    assert [t["to"] for t in result.transitions if t["segment"] == "lifecycle"] == ["activated", "churned"]


def _events_for(seed: int, users: int = 4, count: int = 60):
    rng = random.Random(seed)
    names = ["Product Added", "Product Viewed", "Checkout Started", "Order Completed", "Signed In", "Product Removed"]
    events, ts = [], T0
    for n in range(count):
        ts += rng.choice([0, 1, 500, 2000, 60_000, 20 * MINUTE_MS, 2 * DAY_MS])
        user = f"u{rng.randrange(users)}"
        if rng.random() < 0.15:
            events.append(page(user, "Pricing", ts, mid=f"m{n}"))
        else:
            events.append(track(user, rng.choice(names), ts, mid=f"m{n}", product_id=f"p{rng.randrange(3)}", revenue=3))
    return events


def _shuffle_within_allowance(events, rng):
    """Reorder events so that none arrives after an event more than the allowance (5 s) newer."""
    keyed = [(e, rng.uniform(0, CFG.lateness_ms - 1)) for e in events]
    from stream_app.timeutil import parse_timestamp

    keyed.sort(key=lambda pair: parse_timestamp(pair[0]["timestamp"]) + pair[1])
    return [e for e, _ in keyed]


def _run_in_batches(events, batch_sizes, until):
    store = InMemoryStore()
    eng = engine(store, wall_clock=False)
    out, i = [], 0
    for size in batch_sizes:
        if i >= len(events):
            break
        result = feed(eng, store, events[i:i + size])
        out.extend(result.transitions)
        i += size
    if i < len(events):
        out.extend(feed(eng, store, events[i:]).transitions)
    result = eng.advance_to(until, WALL)
    out.extend(result.transitions)
    return sorted((t["transition_id"], t["at"], t["from"], t["to"]) for t in out)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), batches=st.lists(st.integers(1, 20), min_size=1, max_size=30))
def test_out_of_order_within_the_allowance_and_any_batching_give_the_same_transitions(seed, batches):
    events = _events_for(seed)
    until = T0 + 200 * DAY_MS
    in_order = _run_in_batches(events, [len(events)], until)
    shuffled = _shuffle_within_allowance(events, random.Random(seed))
    assert _run_in_batches(shuffled, batches, until) == in_order
    assert in_order, "the generated history produces transitions"


def test_a_partition_with_a_backlog_is_busy_not_idle():
    store = InMemoryStore()
    eng = engine(store)
    feed(eng, store, [track("u", "Product Added", T0, product_id="p")], wall=T0 + 1000)
    before = eng.clock
    assert eng.tick(T0 + 3600_000, caught_up=False).transitions == []
    assert eng.clock == before  # the unprocessed input decides the clock, not the wall clock
