"""Schedule entries (engine/schedule_entry.py): the due time, RFM values and memberships the engine stores
beside each profile, so that a partition's rebuild need not decode every profile. A rebuild from the
entries must give exactly what a rebuild from the profiles gives (schedule, RFM index, population), after
any history; an entry of other definitions, a missing one or a damaged one is computed from its profile."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings

from stream_app.engine import PartitionEngine
from stream_app.engine.partition import CLOCK_KEY
from stream_app.engine.schedule_entry import decode_entry, encode_entry, fingerprint
from stream_app.replay import InMemoryStore
from stream_app.segments.config import CatalogConfig

from .test_hot_profiles import concrete_steps, run_step, steps

CFG = CatalogConfig()


def _history(steps_: list) -> tuple[PartitionEngine, InMemoryStore]:
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CFG)
    for kind, arg, wall in concrete_steps(steps_):
        result = run_step(engine, kind, arg, wall)
        assert set(result.entries) == {key for key, value in result.writes.items() if value is not None and key != CLOCK_KEY}
        store.write(result.writes, result.entries)
    return engine, store


def _rebuilt(store: InMemoryStore, cfg: CatalogConfig) -> tuple[PartitionEngine, dict, dict, dict]:
    engine = PartitionEngine(0, store, cfg)
    population = engine.rebuild_schedule()
    schedule = engine.schedule.take_all()
    return engine, schedule, dict(engine.rfm_index), dict(+population)


def _without_entries(store: InMemoryStore) -> InMemoryStore:
    copy = InMemoryStore()
    copy.update(store)
    return copy


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_=steps())
def test_a_rebuild_from_the_entries_equals_one_from_the_profiles_after_any_history(steps_):
    engine, store = _history(steps_)
    cfg = engine.cfg  # the definitions of the last step (a `definitions` step changes them)
    from_entries, *rebuilt = _rebuilt(store, cfg)
    from_profiles, *reference = _rebuilt(_without_entries(store), cfg)
    assert rebuilt == reference
    assert from_entries.computed_entries == {}, "every stored profile has a current entry"
    users = {key for key in store if key != CLOCK_KEY}
    assert set(from_profiles.computed_entries) == users
    # what the rebuild from the profiles computed is what the engine had written beside them
    assert from_profiles.computed_entries == {user: store.entries[user] for user in users}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_=steps())
def test_entries_of_other_definitions_are_computed_from_the_profiles(steps_):
    engine, store = _history(steps_)
    other = replace(engine.cfg, dormant_after_ms=engine.cfg.dormant_after_ms // 2)  # same version, other setting
    assert fingerprint(other) != fingerprint(engine.cfg)
    from_entries, *rebuilt = _rebuilt(store, other)
    _, *reference = _rebuilt(_without_entries(store), other)
    assert rebuilt == reference
    assert set(from_entries.computed_entries) == {key for key in store if key != CLOCK_KEY}


def test_a_missing_or_damaged_entry_is_computed_and_the_population_ignores_the_rfm_population():
    from .test_hot_profiles import _records
    from .helpers import track

    store = InMemoryStore()
    engine = PartitionEngine(0, store, CFG)
    t0 = 1_790_000_000_000
    result = engine.handle(_records(track("a", "Order Completed", t0, "m1", revenue=30),
                                    track("b", "Product Added", t0, "m2", product_id="p"),
                                    track("c", "Signed In", t0, "m3")), t0)
    store.write(result.writes, result.entries)
    _, *reference = _rebuilt(_without_entries(store), CFG)
    store.entries["a"] = b"\xc1 not msgpack"
    store.entries["b"] = encode_entry(b"other-definitions", 1, None, {})
    del store.entries["c"]
    population_set = replace(CFG, rfm_population=object())  # a population does not change the fingerprint
    assert fingerprint(population_set) == fingerprint(CFG)
    rebuilt_engine, *rebuilt = _rebuilt(store, population_set)
    assert rebuilt == reference
    assert set(rebuilt_engine.computed_entries) == {"a", "b", "c"}
    assert decode_entry(rebuilt_engine.computed_entries["b"], fingerprint(CFG)) is not None
    assert decode_entry(b"", fingerprint(CFG)) is None


def test_the_fingerprint_names_the_code_too_so_another_release_computes_every_entry_again(monkeypatch):
    from pathlib import Path

    from stream_app.engine import schedule_entry

    assert schedule_entry._code_digest() == schedule_entry.CODE_DIGEST  # deterministic
    rules = Path(schedule_entry.__file__).resolve().parent.parent / "segments" / "lifecycle.py"
    read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda path: read(path) + (b"# changed" if path == rules else b""))
    changed = schedule_entry._code_digest()
    assert changed != schedule_entry.CODE_DIGEST  # a rule's code changed: another digest
    before = fingerprint(CFG)
    monkeypatch.setattr(schedule_entry, "CODE_DIGEST", changed)
    monkeypatch.setattr(schedule_entry, "_LAST", [None, b""])
    assert fingerprint(CFG) != before
