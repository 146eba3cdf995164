"""New definitions decide every stored user again, a bounded number of users per engine call in a worker
(engine/definitions_pass.py): a partition of a million users must not hold one transaction open past its
timeout (at 100-120 us a user, about 80,000 users took 10 s). The interleavings with events, timers,
erasures and aborted transactions are searched by tests/test_timers_per_step.py and
tests/test_engine_rollback.py; these tests pin the bound itself, the stored version and a restart."""

from __future__ import annotations

from dataclasses import replace

import msgpack

from stream_app.engine import PartitionEngine, RawRecord
from stream_app.engine.partition import CLOCK_KEY
from stream_app.replay import InMemoryStore
from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import MINUTE_MS

from .helpers import encode, track

T0 = 1_790_000_000_000
WALL = T0 + 10 * MINUTE_MS
A = CatalogConfig(version="a")
B = replace(A, intent_threshold=0.5, version="b")  # a product viewed (0.5 points) is high intent under b
USERS = 35


def _history(engine: PartitionEngine, store: InMemoryStore) -> None:
    records = [RawRecord(encode(track(f"user-{n:02d}", "Product Viewed", T0 + n, f"m-{n}", product_id="p")), "in", 0, n)
               for n in range(USERS)]
    store.write(engine.handle(records, WALL).writes)


def _ids(results: list) -> list[str]:
    return [t["transition_id"] for result in results for t in result.transitions if t["cause"]["type"] == "definitions"]


def _stored_pass(store: InMemoryStore) -> tuple:
    state = msgpack.unpackb(store[CLOCK_KEY])
    return state[3], state[5], state[6]  # the version every user is decided under; the pass running


def test_new_definitions_decide_a_bounded_number_of_users_per_call_and_are_stored_once_all_are():
    unbounded_store = InMemoryStore()
    unbounded = PartitionEngine(0, unbounded_store, A, use_wall_clock=False)
    _history(unbounded, unbounded_store)
    expected = _ids([unbounded.reevaluate_all(B, WALL, loaded_at=WALL)])
    assert len(expected) == USERS and not unbounded.deciding  # each user enters high_intent

    store = InMemoryStore()
    engine = PartitionEngine(0, store, A, use_wall_clock=False, timers_per_step=10)
    _history(engine, store)
    results = [engine.reevaluate_all(B, WALL, loaded_at=WALL)]
    store.write(results[0].writes)
    per_call = [len(_ids(results))]
    while engine.deciding:
        # not all decided: under no one version ("" makes any reader decide every user again), the pass named
        assert _stored_pass(store) == ("", "b", WALL)
        results.append(engine.decide_pending(WALL))
        store.write(results[-1].writes)
        per_call.append(len(_ids(results[-1:])))
    assert per_call == [5, 5, 5, 5, 5, 5, 5]  # half the call's budget of 10: the timers due get the rest
    assert sorted(_ids(results)) == sorted(expected)
    assert _stored_pass(store) == ("b", None, None) and engine.saved_definitions == "b"


def test_a_pass_stopped_half_way_is_resumed_with_the_same_transition_ids():
    """A worker stops after two committed calls of a pass; the next process loads the same definitions a
    minute later. Users already decided change nothing, the others get the ids the first process would
    have given them: together, exactly the ids of a pass never stopped."""
    unbounded_store = InMemoryStore()
    unbounded = PartitionEngine(0, unbounded_store, A, use_wall_clock=False)
    _history(unbounded, unbounded_store)
    expected = _ids([unbounded.reevaluate_all(B, WALL, loaded_at=WALL)])

    store = InMemoryStore()
    first = PartitionEngine(0, store, A, use_wall_clock=False, timers_per_step=10)
    _history(first, store)
    results = [first.reevaluate_all(B, WALL, loaded_at=WALL)]
    store.write(results[0].writes)
    results.append(first.decide_pending(WALL))
    store.write(results[1].writes)

    restarted = PartitionEngine(0, store, B, use_wall_clock=False, timers_per_step=10)
    assert restarted.saved_definitions == "" and restarted.unfinished_pass == ("b", WALL)
    later = WALL + MINUTE_MS  # the new process's own loading time
    results.append(restarted.reevaluate_all(B, later, loaded_at=later))
    while restarted.deciding:
        results.append(restarted.decide_pending(later))
    ids = _ids(results)
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(expected)


def test_a_pass_stopped_half_way_under_definitions_rolled_back_decides_everyone_again():
    """The definitions go back to a while b's pass is half-way (a deploy rolled back): the users b
    decided must return to a, and only they change."""
    store = InMemoryStore()
    first = PartitionEngine(0, store, A, use_wall_clock=False, timers_per_step=10)
    _history(first, store)
    decided_under_b = first.reevaluate_all(B, WALL, loaded_at=WALL)
    store.write(decided_under_b.writes)
    entered = sorted(t["user_id"] for t in decided_under_b.transitions if t["to"] == "high_intent")
    assert len(entered) == 5

    restarted = PartitionEngine(0, store, A, use_wall_clock=False, timers_per_step=10)
    assert restarted.saved_definitions != A.version  # so the worker's processor decides every user again
    later = WALL + MINUTE_MS
    results = [restarted.reevaluate_all(A, later, loaded_at=later)]
    while restarted.deciding:
        results.append(restarted.decide_pending(later))
    left = sorted(t["user_id"] for result in results for t in result.transitions if t["from"] == "high_intent")
    assert left == entered and all(t["segment"] == "high_intent" for result in results for t in result.transitions)


def test_users_dropped_as_dormant_while_a_pass_runs_leave_nothing_behind():
    """A user the pass has not reached comes due on its old schedule, is decided again (which schedules
    it), then found silent past the dormancy period and dropped: no schedule entry may stay to write it
    back as an empty profile at a later call."""
    store = InMemoryStore()
    engine = PartitionEngine(0, store, A, use_wall_clock=False, timers_per_step=2)
    _history(engine, store)
    store.write(engine.reevaluate_all(B, WALL, loaded_at=WALL).writes)
    assert engine.deciding
    until = T0 + A.dormant_after_ms + MINUTE_MS  # the clock jumps past everyone's dormancy
    for call in range(100):
        if call == 0 or not engine.deciding:
            result = engine.advance_to(until, WALL)
        else:
            result = engine.decide_pending(WALL)
        dropped = result.counts["dropped_dormant"]
        assert dropped <= 2
        for user_id, value in result.writes.items():
            if user_id != CLOCK_KEY and value is not None:
                assert store.get(user_id) is not None, f"{user_id} written again after it was dropped"
        store.write(result.writes)
        if not engine.deciding and not engine.left_due:
            break
    assert [key for key in store if key != CLOCK_KEY] == []
    assert len(engine.schedule) == 0 and len(engine.parked) == 0


def test_an_event_of_a_user_not_reached_yet_meets_the_new_definitions_timers_first():
    """New definitions shorten the cart's 30 minutes to 10 while the clock is 20 minutes past a cart; the
    user's order (5 minutes after the cart) arrives before the pass reaches the user. Deciding everyone at
    once fires the abandonment at 10 minutes, then applies the late order: so must the bounded pass."""
    shorter = replace(A, cart_abandon_after_ms=10 * MINUTE_MS, version="b")

    def run(bound: int | None) -> list[tuple]:
        store = InMemoryStore()
        engine = PartitionEngine(0, store, A, use_wall_clock=False, timers_per_step=bound)
        first = [RawRecord(encode(track(f"filler-{n}", "Signed In", T0, f"f-{n}")), "in", 0, n) for n in range(4)]
        first += [RawRecord(encode(track("u", "Product Added", T0, "cart", product_id="p")), "in", 0, 4),
                  RawRecord(encode(track("z", "Signed In", T0 + 20 * MINUTE_MS + A.lateness_ms, "z")), "in", 0, 5)]
        results = [engine.handle(first, WALL)]
        store.write(results[-1].writes)
        results.append(engine.reevaluate_all(shorter, WALL, loaded_at=WALL))
        store.write(results[-1].writes)
        order = RawRecord(encode(track("u", "Order Completed", T0 + 5 * MINUTE_MS, "order", revenue=10.0)), "in", 0, 6)
        results.append(engine.handle([order], WALL))
        store.write(results[-1].writes)
        while engine.deciding or engine.left_due:
            results.append(engine.decide_pending(WALL) if engine.deciding else engine.advance_to(engine.clock, WALL))
            store.write(results[-1].writes)
        return [(t["segment"], t["from"], t["to"], t["at"], t["cause"]["type"]) for result in results
                for t in result.transitions if t["user_id"] == "u" and t["segment"] == "cart_abandoner"]

    at_once = run(None)
    assert at_once == [("cart_abandoner", None, "cart_abandoner", "2026-09-21T14:23:20.000Z", "timer"),
                       ("cart_abandoner", "cart_abandoner", None, "2026-09-21T14:23:20.000Z", "event")]
    assert run(2) == at_once


def test_a_worker_restarted_under_new_definitions_starts_its_pass_before_anything_else(tmp_path):
    """A partition decided under a stops; the next process runs b, whose shorter cart window makes a
    stored cart due at once. The engine is made with b and its schedule computed under b, so the pass
    must not wait for that due user: it begins before the first batch, and the cart's user is decided
    again (cause `definitions`) before its timer fires."""
    import json

    from stream_app.driver.store import MIB, PartitionStore, StoreBudget
    from stream_app.settings import Settings
    from stream_app.worker.segmentation import SegmentationProcessor

    from .test_hot_profiles import _Message, _Outputs

    shorter = replace(B, cart_abandon_after_ms=10 * MINUTE_MS, version="b-short")
    store = PartitionStore(tmp_path / "p0", StoreBudget(8 * MIB), "app-profiles-changelog", 0)
    try:
        first = PartitionEngine(0, store, A, use_wall_clock=False)
        records = [RawRecord(encode(track("u", "Product Added", T0, "cart", product_id="p")), "in", 0, 0),
                   RawRecord(encode(track("z", "Signed In", T0 + 20 * MINUTE_MS + A.lateness_ms, "z")), "in", 0, 1)]
        result = first.handle(records, WALL)
        assert not any(t["segment"] == "cart_abandoner" for t in result.transitions)  # 30 minutes under a
        store.stage(result.writes, result.entries)
        store.apply_staged(1)

        processor = SegmentationProcessor(replace(Settings(), transitions_topic="segments.transitions"), shorter)
        processor.assigned({0: store})
        engine = processor.engines[0]
        assert engine.left_due and 0 in processor.reevaluate  # the cart is due under b at the stored clock
        out = _Outputs()
        later = _Message(encode(track("z", "Signed In", T0 + 21 * MINUTE_MS + A.lateness_ms, "z2")), 2)
        processor.process(0, [later], WALL, out)
        assert 0 not in processor.reevaluate and not engine.deciding
        rows = [json.loads(value) for topic, _key, value in out.sent if topic == "segments.transitions" and value]
        causes = [(row["user_id"], row["segment"], row["cause"]["type"]) for row in rows if row["user_id"] == "u"]
        assert causes.index(("u", "high_intent", "definitions")) < causes.index(("u", "cart_abandoner", "timer"))
    finally:
        store.close()
