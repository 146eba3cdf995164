"""The rule of the clock: events take effect at once in each user's order, the live clock fires the
timers of users with nothing newer, a backfill is decided on its own clock; deduplication, dormancy."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.engine import PartitionEngine, RawRecord
from stream_app.engine.partition import CLOCK_KEY
from stream_app.replay import InMemoryStore
from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, format_timestamp

from .helpers import encode, interleave_users_within, page, track

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


def _changes(result, skip=("engagement",)):
    return [(t["user_id"], t["segment"], t["to"], t["cause"]["type"]) for t in result.transitions if t["segment"] not in skip]


def test_an_event_takes_effect_at_once_and_the_idle_clock_fires_the_timer():
    store = InMemoryStore()
    eng = engine(store)
    added = feed(eng, store, [track("u", "Product Added", T0, product_id="p")], wall=T0 + 1000)
    # no wait for the clock: the event is decided in the batch that reads it, at its own timestamp
    assert _changes(added) == [("u", "lifecycle", "new_lead", "event")]
    assert added.transitions[0]["at"] == format_timestamp(T0) and eng.clock == T0 - CFG.lateness_ms
    assert eng.tick(T0 + 1000 + CFG.lateness_ms).transitions == []  # not idle for longer than the allowance yet
    result = eng.tick(T0 + 31 * MINUTE_MS + CFG.lateness_ms + 1)
    store.write(result.writes)
    assert _changes(result) == [("u", "cart_abandoner", "cart_abandoner", "timer")]


def test_a_users_own_timers_fire_before_their_next_event_whatever_the_clock():
    store = InMemoryStore()
    eng = engine(store, wall_clock=False)
    feed(eng, store, [track("u", "Product Added", T0, product_id="p")])
    assert eng.clock < T0 + 30 * MINUTE_MS  # the clock has not reached the cart's due time
    # the user's next event, 40 minutes later: the cart timer due at +30 min fires first, then the order
    result = feed(eng, store, [track("u", "Order Completed", T0 + 40 * MINUTE_MS, revenue=5)])
    assert _changes(result, skip=("engagement", "rfm")) == [
        ("u", "cart_abandoner", "cart_abandoner", "timer"), ("u", "cart_abandoner", None, "event"),
        ("u", "lifecycle", "activated", "event")]
    assert [t["at"] for t in result.transitions if t["segment"] == "cart_abandoner"] == [
        format_timestamp(T0 + 30 * MINUTE_MS), format_timestamp(T0 + 40 * MINUTE_MS)]


def test_late_means_older_than_the_users_own_decided_until_time():
    store = InMemoryStore()
    eng = engine(store, wall_clock=False)
    feed(eng, store, [track("ahead", "Signed In", T0 + DAY_MS)])  # the clock moves a day ahead
    first = feed(eng, store, [track("behind", "Signed In", T0)])
    assert first.counts["late"] == 0  # older than the clock, but the first event of its user
    assert _changes(first) == [("behind", "lifecycle", "new_lead", "event")]
    again = feed(eng, store, [track("ahead", "Signed In", T0 + DAY_MS - 1000)])
    assert again.counts["late"] == 1  # older than its own user's last event
    assert again.transitions == [] or all(t["at"] == format_timestamp(T0 + DAY_MS) for t in again.transitions)


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
    ordered = feed(eng, store, [track("u", "Order Completed", T0, revenue=1)])
    assert [t["to"] for t in ordered.transitions if t["segment"] == "lifecycle"] == ["activated"]  # at once
    result = eng.advance_to(T0 + 400 * DAY_MS, WALL)
    store.write(result.writes)
    assert "u" not in store
    assert result.memberships == {"u": None}  # a tombstone on the memberships topic
    # the 60-day churn fires; the drop itself emits no transition
    assert [t["to"] for t in result.transitions if t["segment"] == "lifecycle"] == ["churned"]


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
def test_users_interleaved_within_the_allowance_and_any_batching_give_the_same_transitions(seed, batches):
    events = _events_for(seed)
    until = T0 + 200 * DAY_MS
    in_order = _run_in_batches(events, [len(events)], until)
    interleaved = interleave_users_within(events, CFG.lateness_ms - 1, seed)
    assert _run_in_batches(interleaved, batches, until) == in_order
    assert in_order, "the generated history produces transitions"


def test_a_partition_with_a_backlog_is_busy_not_idle():
    store = InMemoryStore()
    eng = engine(store)
    feed(eng, store, [track("u", "Product Added", T0, product_id="p")], wall=T0 + 1000)
    before = eng.clock
    assert eng.tick(T0 + 3600_000, caught_up=False).transitions == []
    assert eng.clock == before  # the unprocessed input decides the clock, not the wall clock


# -- history is decided in its own time ---------------------------------------------------------------
NOW = T0 + 400 * DAY_MS  # the wall clock of the backfill tests


def test_a_backfill_follows_its_own_clock_and_drains_to_the_live_one():
    store = InMemoryStore()
    eng = engine(store)
    eng.tick(NOW), eng.tick(NOW + 10 * SECOND_MS)  # an idle worker: its live clock follows the wall clock
    assert eng.clock == NOW + 5 * SECOND_MS
    old = T0 + 10 * DAY_MS
    result = feed(eng, store, [track("old", "Product Added", old, product_id="p")], wall=NOW + 11 * SECOND_MS)
    assert result.counts["backfill"] == 1 and result.counts["late"] == 0
    assert eng.backfill_clock == old - CFG.lateness_ms
    # not dropped as 400 days dormant, and its cart timer waits for the backfill clock
    assert "old" in store and _changes(result) == [("old", "lifecycle", "new_lead", "event")]
    assert result.transitions[0]["historical"] is True
    # the next backfill event of another user moves the backfill clock past the cart's due time
    later = feed(eng, store, [track("other", "Signed In", old + HOUR_MS)], wall=NOW + 12 * SECOND_MS)
    assert ("old", "cart_abandoner", "cart_abandoner", "timer") in _changes(later)
    assert all(t["historical"] for t in later.transitions)
    # the backfill clock survives a restart with the partition's state
    assert engine(store).backfill_clock == eng.backfill_clock
    # drained after 60 s without a backfill event: its users follow the live clock (the engagement decay
    # and the 60-day churn fire now; the cart has expired after 7 days)
    assert eng.tick(NOW + 12 * SECOND_MS + CFG.backfill_drained_after_ms - 1).transitions == []
    drained = eng.tick(NOW + 12 * SECOND_MS + CFG.backfill_drained_after_ms)
    assert eng.backfill_clock is None
    assert ("old", "cart_abandoner", None, "timer") in _changes(drained)
    # live-clock timers of backfilled users are historical by their age
    assert drained.transitions and all(t["historical"] for t in drained.transitions)


def test_live_users_are_decided_at_once_while_a_backfill_runs():
    store = InMemoryStore()
    eng = engine(store)
    wall = NOW
    feed(eng, store, [track("old", "Product Added", T0, product_id="p")], wall=wall)  # a backfill starts
    live = feed(eng, store, [track("live", "Product Added", wall - 1000, product_id="p")], wall=wall)
    assert _changes(live) == [("live", "lifecycle", "new_lead", "event")] and not live.transitions[0]["historical"]
    later = wall + 30 * MINUTE_MS + 10 * SECOND_MS
    feed(eng, store, [track("old2", "Signed In", T0 + SECOND_MS)], wall=later)  # the backfill goes on
    fired = eng.tick(later + CFG.lateness_ms + 1)  # idle: the live clock follows the wall clock
    # the live user's cart timer fires on the live clock, the backfilled user's waits for the backfill clock
    assert _changes(fired) == [("live", "cart_abandoner", "cart_abandoner", "timer")]
    assert not fired.transitions[0]["historical"]
    assert eng.backfill_clock == T0 + SECOND_MS - CFG.lateness_ms
