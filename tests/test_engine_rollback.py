"""An aborted transaction in the worker rolls its partition engines back (`PartitionEngine.rollback`,
made with `undo`) instead of building them again from the stores: the rolled-back engine must then decide
exactly as an engine that never saw the aborted steps, and hold the same clocks, schedules and RFM index.

Steps are grouped into transactions, each committed or aborted. The engine under test runs every step; a
committed transaction's writes reach its store and it checkpoints, an aborted one's are dropped and it
rolls back. The reference runs only the committed transactions. The outputs of the committed steps, and
the state after every transaction, must be equal."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.engine import PartitionEngine
from stream_app.replay import InMemoryStore
from stream_app.segments.config import CatalogConfig
from stream_app.timers.schedule import DueSchedule

from .test_hot_profiles import concrete_steps, run_step, steps

CFG = CatalogConfig()


class StagedStore(InMemoryStore):
    """The worker's store in small: writes are staged until the transaction commits; reads see them."""

    def __init__(self) -> None:
        super().__init__()
        self.staged: dict[str, bytes | None] = {}

    def get(self, key: str) -> bytes | None:  # type: ignore[override]
        if key in self.staged:
            return self.staged[key]
        return dict.get(self, key)

    def items(self):  # type: ignore[no-untyped-def]
        merged = dict(dict.items(self))
        merged.update(self.staged)
        return [(k, v) for k, v in merged.items() if v is not None]

    def schedule_entries(self) -> None:  # like the worker's store with staged writes: read every profile
        return None


def _schedule(schedule: DueSchedule) -> dict[str, int]:
    users = dict(schedule.take_all())
    for user, due in users.items():
        schedule.set(user, due)
    return users


def _state(engine: PartitionEngine) -> tuple[Any, ...]:
    running = engine.definitions_pass
    definitions_pass = None if running is None else (running.version, running.loaded_at, running.users, running.next, sorted(running.left))
    return (engine.clock, engine.max_event_ts, engine.last_arrival_wall, engine.backfill_max_ts, engine.last_backfill_wall,
            engine.saved_definitions, engine.cfg.version, engine.cfg.rfm_population, _schedule(engine.schedule),
            _schedule(engine.parked), dict(engine.rfm_index), engine.next_due(), definitions_pass, engine.live_due_before_backfill)


def _output(result) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    return (result.transitions, result.writes, result.memberships, dict(result.counts), result.clock, result.backfill_clock)


def _step(engine: PartitionEngine, kind: str, arg: Any, wall: int) -> list[Any]:
    """A step as the worker's processor makes it: a pass of new definitions goes on first."""
    results = [engine.decide_pending(wall)] if engine.deciding else []
    return results + [run_step(engine, kind, arg, wall)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_=steps(), cuts=st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=25),
       hot=st.sampled_from([0, 2, 100]), bound=st.sampled_from([None, 1, 3]))
def test_a_rolled_back_engine_decides_as_one_that_never_saw_the_aborted_steps(steps_, cuts, hot, bound):
    """`bound`: users whose timers fire, and users a pass of new definitions decides, per call; with a
    bound, passes and users left due span transactions, aborted ones among them."""
    concrete = concrete_steps(steps_)
    store, reference_store = StagedStore(), InMemoryStore()
    engine = PartitionEngine(0, store, CFG, hot_profiles=hot, undo=True, timers_per_step=bound)
    reference = PartitionEngine(0, reference_store, CFG, hot_profiles=hot, timers_per_step=bound)
    at, aborted = 0, 0
    for size, commit in cuts:
        transaction = concrete[at:at + size]
        at += size
        if not transaction:
            break
        for kind, arg, wall in transaction:
            results = _step(engine, kind, arg, wall)
            for result in results:
                store.staged.update(result.writes)
            if commit:
                expected = _step(reference, kind, arg, wall)
                for result in expected:
                    reference_store.write(result.writes)
                assert [_output(result) for result in results] == [_output(result) for result in expected]
        if commit:
            store.write(store.staged)
            engine.checkpoint()
        else:
            aborted += 1
            engine.rollback()
        store.staged = {}
        assert dict(dict.items(store)) == dict(reference_store)
        assert _state(engine) == _state(reference)
        for user_id, (profile, _dues) in engine.hot.items():  # no hot profile holds an aborted change
            assert store.get(user_id) is not None and user_id in reference_store


def test_rollback_needs_an_engine_made_with_undo():
    engine = PartitionEngine(0, InMemoryStore(), CFG)
    try:
        engine.rollback()
    except RuntimeError as exc:
        assert "undo=True" in str(exc)
    else:
        raise AssertionError("rollback without undo must refuse")


def test_a_schedule_rolls_back_to_its_checkpoint():
    schedule = DueSchedule(undo=True)
    schedule.set("a", 10)
    schedule.set("b", 20)
    schedule.checkpoint()
    schedule.set("a", 5)
    schedule.set("c", 7)
    schedule.discard("b")
    assert schedule.pop_due(6) == ["a"]
    assert schedule.take_all() == {"c": 7}
    schedule.set("d", 1)
    schedule.rollback()
    assert schedule.pop_due(100) == ["a", "b"] and len(schedule) == 0
    schedule.rollback()  # back to the state the first rollback left, which is the checkpoint
    assert schedule.pop_due(100) == ["a", "b"]
    schedule.checkpoint()
    schedule.rollback()  # nothing changed since the checkpoint
    assert len(schedule) == 0 and schedule.next_due() is None


def test_new_definitions_decided_in_an_aborted_transaction_are_decided_again(tmp_path):
    """A partition that had no committed state when its engine was made (a new deployment) stores no
    definitions version; new definitions decided inside a transaction that aborts must still be decided
    again after the rollback, not forgotten (found by a review: the check read only the stored version)."""
    import msgpack

    from stream_app.driver.store import MIB, PartitionStore, StoreBudget
    from stream_app.engine.partition import CLOCK_KEY
    from stream_app.settings import Settings
    from stream_app.timeutil import MINUTE_MS
    from stream_app.worker.segmentation import SegmentationProcessor

    from .helpers import encode, track
    from .test_hot_profiles import T0, _Message, _Outputs

    store = PartitionStore(tmp_path / "p0", StoreBudget(8 * MIB), "app-profiles-changelog", 0)
    try:
        processor = SegmentationProcessor(replace(Settings(), transitions_topic="segments.transitions"), CFG)
        processor.assigned({0: store})
        wall = T0 + 2 * MINUTE_MS
        processor.process(0, [_Message(encode(track("u", "Signed In", T0, "m1")), 0)], wall, _Outputs())
        assert processor.engines[0].saved_definitions == CFG.version  # a new partition: the current definitions
        store.apply_staged(1)
        processor.committed(wall)

        processor.set_config(replace(CFG, intent_threshold=CFG.intent_threshold + 2, version="v-new"))
        second = _Message(encode(track("u", "Product Viewed", T0 + MINUTE_MS, "m2", product_id="p")), 1)
        processor.process(0, [second], wall, _Outputs())  # the new definitions are decided first
        assert 0 not in processor.reevaluate and processor.engines[0].cfg.version == "v-new"
        store.discard_staged()  # the driver's abort
        processor.rolled_back()
        assert processor.engines[0].cfg.version == CFG.version and 0 in processor.reevaluate

        again = _Outputs()
        processor.process(0, [second], wall, again)
        assert processor.engines[0].cfg.version == "v-new" and 0 not in processor.reevaluate
        clock_state = msgpack.unpackb(store.staged[CLOCK_KEY])
        assert clock_state[3] == "v-new"  # the partition's stored definitions version, in this transaction
    finally:
        store.close()


def test_a_loaded_schedule_is_the_checkpoint_and_pops_in_order():
    schedule = DueSchedule(undo=True)
    schedule.set("old", 1)
    schedule.load({"b": 20, "a": 10, "c": 30})  # a rebuild: replaces everything, nothing to undo
    schedule.rollback()
    assert schedule.next_due() == 10 and len(schedule) == 3
    schedule.set("a", 40)
    schedule.rollback()
    assert schedule.pop_due(35) == ["a", "b", "c"]


def test_an_engine_rebuilt_from_a_store_equals_the_engine_that_wrote_it():
    from stream_app.replay import InMemoryStore

    from .test_hot_profiles import T0, _records
    from .helpers import track
    from stream_app.timeutil import DAY_MS

    store = InMemoryStore()
    writer = PartitionEngine(0, store, CFG, use_wall_clock=False, undo=True)
    for n in range(30):
        user = f"u{n % 7}"
        event = track(user, "Order Completed" if n % 3 == 0 else "Product Added", T0 + n * DAY_MS // 5, f"m{n}",
                      revenue=10 + n, product_id="p")
        store.write(writer.handle(_records(event), T0).writes)
        writer.checkpoint()
    rebuilt = PartitionEngine(0, store, CFG, use_wall_clock=False, undo=True)
    rebuilt.rebuild_schedule()
    assert _schedule(rebuilt.schedule) == _schedule(writer.schedule) and _schedule(rebuilt.schedule)
    assert rebuilt.rfm_index == writer.rfm_index and rebuilt.rfm_index
    rebuilt.rollback()  # nothing since the rebuild: the same
    assert _schedule(rebuilt.schedule) == _schedule(writer.schedule) and rebuilt.rfm_index == writer.rfm_index
