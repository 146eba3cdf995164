"""The partition store (driver/store.py): staged writes in front of RocksDB, applied only after a commit,
dropped after an abort, and the changelog position kept in the same atomic write. No broker."""

from __future__ import annotations

from stream_app.driver.store import MIB, OFFSET_KEY, PartitionStore, StoreBudget


def store_at(path) -> PartitionStore:
    return PartitionStore(path, StoreBudget(8 * MIB), "app-profiles-changelog", 2)


def test_staged_writes_are_read_first_and_reach_rocksdb_only_when_applied(tmp_path):
    store = store_at(tmp_path / "p2")
    store.stage({"alice": b"1", "bob": b"2"})
    assert store.get("alice") == b"1" and store.next_changelog_offset() is None
    assert dict(store.items()) == {"alice": b"1", "bob": b"2"}
    store.apply_staged(41)
    store.stage({"alice": None, "carol": b"3"})  # a delete and a new profile, not committed yet
    assert store.get("alice") is None and store.get("bob") == b"2"
    assert dict(store.items()) == {"bob": b"2", "carol": b"3"}
    assert sorted(key for key, _ in store.changelog_records()) == [b"alice", b"carol"]
    store.close()

    reopened = store_at(tmp_path / "p2")  # what a restart finds: only the committed writes
    assert dict(reopened.items()) == {"alice": b"1", "bob": b"2"}
    assert reopened.next_changelog_offset() == 41
    reopened.close()


def test_an_abort_drops_the_staged_writes(tmp_path):
    store = store_at(tmp_path / "p2")
    store.stage({"alice": b"1"})
    store.apply_staged(1)
    store.stage({"alice": b"changed", "bob": b"new"})
    store.discard_staged()
    assert dict(store.items()) == {"alice": b"1"}
    assert list(store.changelog_records()) == []
    store.close()


def test_restored_records_and_their_position_land_together(tmp_path):
    store = store_at(tmp_path / "p2")
    store.write_restored([(b"alice", b"1"), (b"bob", b"2"), (b"alice", None)], 103)
    assert dict(store.items()) == {"bob": b"2"}
    assert store.next_changelog_offset() == 103
    assert OFFSET_KEY not in {key.encode() for key, _ in store.items()}


def test_wiping_forgets_everything_and_keeps_the_store_usable(tmp_path):
    store = store_at(tmp_path / "p2")
    store.write_restored([(b"alice", b"1")], 7)
    store.wipe()
    assert dict(store.items()) == {} and store.next_changelog_offset() is None
    store.stage({"bob": b"2"})
    store.apply_staged(None)
    assert store.get("bob") == b"2" and store.next_changelog_offset() is None
    store.close()


def test_user_ids_with_lone_surrogates_and_control_characters_round_trip(tmp_path):
    store = store_at(tmp_path / "p2")
    odd = "\x00partition-clock"  # the engine's reserved clock key
    store.stage({odd: b"clock", "zw\u200bsp": b"x"})
    store.apply_staged(5)
    assert dict(store.items()) == {odd: b"clock", "zw\u200bsp": b"x"}
    store.close()

