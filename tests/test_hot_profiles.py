"""Hot profiles kept decoded across batches (`PartitionEngine.hot`): an engine that keeps them decides
exactly as one that decodes every profile from the store, and as one that computes every rule's due time
from scratch; the store still receives every written profile; a batch that fails half-way, an abort in
the worker, new definitions and dropped profiles leave nothing of theirs in memory."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.driver.store import MIB, PartitionStore, StoreBudget
from stream_app.engine import PartitionEngine, RawRecord
from stream_app.engine.partition import CLOCK_KEY, DEFAULT_HOT_PROFILES
from stream_app.replay import InMemoryStore
from stream_app.segments import catalog
from stream_app.segments.config import CatalogConfig
from stream_app.settings import Settings
from stream_app.state.encoding import decode_profile, encode_profile
from stream_app.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from stream_app.worker.segmentation import SegmentationProcessor

from .helpers import encode, track
from .test_rule_dues import EVENT_KINDS, Population, _event

CFG = CatalogConfig()
T0 = 1_790_000_000_000
USERS = ["a", "b", "c", "d"]
GAPS = [0, 1, SECOND_MS, MINUTE_MS, 29 * MINUTE_MS, 31 * MINUTE_MS, 3 * HOUR_MS, DAY_MS, 3 * DAY_MS + 1, 8 * DAY_MS]


def _full_next_change(self: catalog.RuleDues, profile: Any, cfg: CatalogConfig) -> int | None:
    return catalog.next_change(profile, cfg)


@st.composite
def steps(draw):
    out = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["batch"] * 5 + ["tick", "refresh", "definitions"]))
        if kind == "batch":
            events = [(draw(st.sampled_from(USERS)), draw(st.sampled_from(GAPS)), draw(st.integers(0, EVENT_KINDS - 1)),
                       draw(st.integers(0, 3))) for _ in range(draw(st.integers(0, 6)))]
            # how far the wall clock is ahead of the newest event: beyond the backfill age, a backfill
            out.append(("batch", events, draw(st.sampled_from([0, 10 * SECOND_MS, 2 * HOUR_MS]))))
        elif kind == "tick":
            out.append(("tick", draw(st.sampled_from([SECOND_MS, 10 * SECOND_MS, 2 * MINUTE_MS, HOUR_MS, DAY_MS])), None))
        else:
            out.append((kind, draw(st.integers(0, 3)), None))
    return out


def concrete_steps(steps_: list) -> list[tuple[str, Any, int]]:
    """Each drawn step with its inputs fixed (events with their times, the wall clock), so that engines
    that skip some steps (tests/test_engine_rollback.py) still see the same inputs for the others."""
    out: list[tuple[str, Any, int]] = []
    now, wall, n = T0, T0, 0
    for kind, arg, ahead in steps_:
        if kind == "batch":
            decoded = []
            for user, gap, event_kind, variant in arg:
                now += gap
                n += 1
                event = _event(n, event_kind, variant, now)
                decoded.append((RawRecord(b""), replace(event, user_id=user, message_id=f"{user}-{n}")))
            wall = max(wall, now + ahead)
            out.append(("batch", decoded, wall))
        elif kind == "tick":
            wall += arg
            out.append(("tick", None, wall))
        elif kind == "refresh":
            out.append(("refresh", Population(arg), wall))
        else:
            # a threshold and a timer rule: new definitions change memberships and due times, earlier or later
            cart = (30, 10, 45, 20)[arg] * MINUTE_MS
            out.append(("definitions", (replace(CFG, intent_threshold=3 + arg, cart_abandon_after_ms=cart, version=f"v{arg}"),
                                        wall + n), wall))
    return out


def run_step(engine: PartitionEngine, kind: str, arg: Any, wall: int):  # type: ignore[no-untyped-def]
    if kind == "batch":
        return engine.handle_decoded(arg, wall)
    if kind == "tick":
        return engine.tick(wall)
    if kind == "refresh":
        return engine.refresh_population(arg, wall)
    cfg, loaded_at = arg
    return engine.reevaluate_all(cfg, wall, loaded_at=loaded_at)


def _run(steps_: list, hot_profiles: int) -> tuple[list[Any], PartitionEngine, InMemoryStore]:
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CFG, hot_profiles=hot_profiles)
    outputs: list[Any] = []
    for kind, arg, wall in concrete_steps(steps_):
        result = run_step(engine, kind, arg, wall)
        store.write(result.writes)
        outputs.append((result.transitions, result.writes, result.memberships, dict(result.counts), result.clock,
                        result.backfill_clock, engine.next_due(), len(engine.schedule), len(engine.parked)))
        for user_id, (profile, _dues) in engine.hot.items():  # written through: what the store holds
            assert encode_profile(profile) == store[user_id]
        assert len(engine.hot) <= hot_profiles
    return outputs, engine, store


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_=steps())
def test_hot_profiles_and_cached_due_times_decide_exactly_as_decoding_and_computing_everything(steps_):
    with mock.patch.object(catalog.RuleDues, "next_change", _full_next_change):
        reference, _, reference_store = _run(steps_, hot_profiles=0)  # every rule's due time, every profile decoded
    cold, _, cold_store = _run(steps_, hot_profiles=0)
    few, _, few_store = _run(steps_, hot_profiles=2)  # fewer than the users: evictions
    many, engine, many_store = _run(steps_, hot_profiles=DEFAULT_HOT_PROFILES)
    assert cold == reference and few == reference and many == reference
    assert cold_store == reference_store == few_store == many_store
    assert set(engine.hot) == {key for key in many_store if key != CLOCK_KEY}  # all of them fit


def _records(*events: dict[str, Any]) -> list[RawRecord]:
    return [RawRecord(encode(e)) for e in events]


def test_a_batch_that_fails_half_way_leaves_no_change_in_the_hot_profiles():
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CFG, use_wall_clock=False)
    store.write(engine.handle(_records(track("u", "Product Added", T0, "m1", product_id="p")), T0).writes)
    assert "u" in engine.hot
    written = store["u"]
    second = engine.decode(_records(track("u", "Order Completed", T0 + MINUTE_MS, "m2", revenue=5)), T0)

    def failing():
        yield from second  # applied to the hot profile in place ...
        raise RuntimeError("the batch fails before it returns")  # ... and the batch never returns

    with pytest.raises(RuntimeError):
        engine.handle_decoded(failing(), T0)
    assert "u" not in engine.hot and store["u"] == written
    # the same input again, on the stored profile: decided as if the failed attempt never happened
    again = engine.handle_decoded(second, T0)
    assert again.counts["duplicate"] == 0
    assert [(t["segment"], t["to"]) for t in again.transitions if t["segment"] in ("cart_abandoner", "lifecycle")] == [
        ("lifecycle", "activated")]
    assert decode_profile(again.writes["u"]).orders and engine.hot["u"][0].orders


def test_dropped_profiles_and_new_definitions_leave_the_hot_profiles():
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CFG, use_wall_clock=False, hot_profiles=3)
    for n, user in enumerate(["a", "b", "c", "d"]):
        store.write(engine.handle(_records(track(user, "Signed In", T0 + n, f"m{n}")), T0).writes)
    assert list(engine.hot) == ["b", "c", "d"]  # the least recently used went
    store.write(engine.handle(_records(track("b", "Signed In", T0 + 10, "m10")), T0).writes)
    assert list(engine.hot) == ["c", "d", "b"]
    result = engine.advance_to(T0 + 401 * DAY_MS, T0)  # 400 days of silence: every profile is dropped
    store.write(result.writes)
    assert result.counts["dropped_dormant"] == 4 and not engine.hot
    store.write(engine.handle(_records(track("e", "Signed In", T0 + 402 * DAY_MS, "m20")), T0 + 402 * DAY_MS).writes)
    assert list(engine.hot) == ["e"]
    engine.reevaluate_all(replace(CFG, intent_threshold=3, version="other"), T0)
    assert list(engine.hot) == ["e"]  # decoded again under the new definitions (the old entries went first)
    engine.drop_hot_profiles()
    assert not engine.hot


def test_hot_profiles_off_keeps_none():
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CFG, use_wall_clock=False, hot_profiles=0)
    store.write(engine.handle(_records(track("u", "Signed In", T0, "m1")), T0).writes)
    assert not engine.hot


class _Message:
    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "in"

    def offset(self) -> int:
        return self._offset


class _Outputs:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        self.sent.append((topic, key, value))

    def transitions(self) -> list[tuple[str, str, Any]]:
        rows = [json.loads(value) for topic, _key, value in self.sent if topic == "segments.transitions" and value]
        return [(row["transition_id"], row["segment"], row["to"]) for row in rows]


def test_an_aborted_batch_in_the_worker_leaves_nothing_in_the_hot_profiles(tmp_path, monkeypatch):
    """The worker's abort (driver: staged writes dropped, then `rolled_back`) forgets the engines and so
    their hot profiles, which the aborted batch changed in place: the batch read again from the committed
    offsets is decided on the committed profile, not taken for a duplicate of itself."""
    monkeypatch.setenv("STREAM_APP_HOT_PROFILES", "100")
    settings_ = replace(Settings(), transitions_topic="segments.transitions")
    assert settings_.hot_profiles == 100
    store = PartitionStore(tmp_path / "p0", StoreBudget(8 * MIB), "app-profiles-changelog", 0)
    try:
        processor = SegmentationProcessor(settings_, CFG)
        processor.assigned({0: store})
        first = _Message(encode(track("u", "Product Added", T0, "m1", product_id="p")), 0)
        second = _Message(encode(track("u", "Order Completed", T0 + MINUTE_MS, "m2", revenue=5)), 1)
        processor.process(0, [first], T0 + 2 * MINUTE_MS, _Outputs())
        store.apply_staged(1)  # committed
        processor.committed(T0 + 2 * MINUTE_MS)
        assert processor.engines[0].hot.most == 100 and "u" in processor.engines[0].hot

        attempt = _Outputs()
        processor.process(0, [second], T0 + 2 * MINUTE_MS, attempt)
        assert attempt.transitions() and decode_profile(store.get("u")).orders  # staged, not committed
        store.discard_staged()  # the driver's abort
        processor.rolled_back()
        assert "u" not in processor.engines[0].hot and not decode_profile(store.get("u")).orders

        again = _Outputs()
        processor.process(0, [second], T0 + 2 * MINUTE_MS, again)
        assert again.transitions() == attempt.transitions()
    finally:
        store.close()


def test_hot_profiles_are_bounded_in_number_and_in_encoded_bytes():
    from stream_app.engine.hot_profiles import ENCODED_BYTES_EACH, MAX_ENCODED_BYTES, HotProfiles

    hot = HotProfiles(4)
    for n in range(6):
        hot.keep(f"u{n}", n, None, 100)
    assert list(hot) == ["u2", "u3", "u4", "u5"] and hot.bytes == 400  # by number
    hot.keep("big", "heavy", None, MAX_ENCODED_BYTES + 1)
    assert "big" not in hot and hot.bytes == 400  # a heavy user's profile is not kept
    hot.keep("wide", "w", None, 4 * ENCODED_BYTES_EACH - 250)
    assert list(hot) == ["u4", "u5", "wide"] and hot.bytes <= hot.byte_budget  # by bytes: the oldest went
    assert hot.take("u5") == (5, None) and hot.bytes == 100 + 4 * ENCODED_BYTES_EACH - 250
    hot.keep("u4", 44, None, 50)  # kept again: replaced, most recently used
    assert list(hot) == ["wide", "u4"] and hot["u4"] == (44, None) and hot.bytes == 50 + 4 * ENCODED_BYTES_EACH - 250
    hot.clear()
    assert not hot and hot.bytes == 0 and not hot.sizes
    none = HotProfiles(0)
    none.keep("u", 1, None, 10)
    assert not none
