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
    assert sorted(key for key, _, _ in store.changelog_records()) == [b"alice", b"carol"]
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
    store.write_restored([(b"alice", b"1", None), (b"bob", b"2", None), (b"alice", None, None)], 103)
    assert dict(store.items()) == {"bob": b"2"}
    assert store.next_changelog_offset() == 103
    assert OFFSET_KEY not in {key.encode() for key, _ in store.items()}


def test_wiping_forgets_everything_and_keeps_the_store_usable(tmp_path):
    store = store_at(tmp_path / "p2")
    store.write_restored([(b"alice", b"1", b"entry")], 7)
    store.wipe()
    assert dict(store.items()) == {} and store.next_changelog_offset() is None
    assert list(store.schedule_entries()) == []
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



# -- schedule entries (engine/schedule_entry.py) beside the profiles ------------------------------------

def test_schedule_entries_are_staged_sent_and_applied_with_their_profiles(tmp_path):
    store = store_at(tmp_path / "p2")
    store.stage({"alice": b"1", "bob": b"2", "carol": b"3"}, {"alice": b"a1", "bob": b"b1"})
    store.stage({"bob": b"2'"})  # written again in the same transaction, without an entry: the old one is gone
    assert sorted(store.changelog_records()) == [(b"alice", b"1", b"a1"), (b"bob", b"2'", None), (b"carol", b"3", None)]
    assert store.schedule_entries() is None  # staged writes: nothing to vouch for
    store.apply_staged(9)
    assert dict(store.schedule_entries()) == {"alice": b"a1", "bob": b"", "carol": b""}
    store.stage({"alice": None, "bob": b"2''"}, {"bob": b"b2"})
    store.apply_staged(12)
    store.close()
    reopened = store_at(tmp_path / "p2")
    assert dict(reopened.schedule_entries()) == {"bob": b"b2", "carol": b""}
    assert dict(reopened.items()) == {"bob": b"2''", "carol": b"3"}  # the profiles' own view is unchanged
    reopened.close()


def test_restored_records_bring_their_entries_and_tombstones_take_them(tmp_path):
    store = store_at(tmp_path / "p2")
    store.stage({"alice": b"old", "dave": b"d"}, {"alice": b"stale", "dave": b"d1"})
    store.apply_staged(3)
    store.write_restored([(b"alice", b"new", None), (b"bob", b"2", b"b1"), (b"dave", None, None)], 7)
    assert dict(store.schedule_entries()) == {"alice": b"", "bob": b"b1"}  # no header: no entry, never the stale one
    store.close()


def _as_a_release_without_entries(path, writes: dict[bytes, bytes], position: int) -> None:
    """Write to a closed store as a release without schedule entries does: profiles and the position."""
    import rocksdict

    options = StoreBudget(8 * MIB).options()
    db = rocksdict.Rdict(str(path), options)  # it names no column family (rocksdict opens them all)
    for key, value in writes.items():
        db[key] = value
    db[OFFSET_KEY] = str(position).encode()
    db.close()


def test_entries_beside_profiles_a_release_without_them_wrote_are_not_vouched_for_until_replaced(tmp_path):
    store = store_at(tmp_path / "p2")
    store.stage({"alice": b"1", "bob": b"2"}, {"alice": b"a1", "bob": b"b1"})
    store.apply_staged(5)
    store.close()
    _as_a_release_without_entries(tmp_path / "p2", {b"alice": b"1 changed", b"carol": b"3"}, 6)
    reopened = store_at(tmp_path / "p2")
    assert reopened.schedule_entries() is None
    # a changelog tail restored, and a commit, before the rebuild: still not vouched for (carol has no
    # entry, alice a stale one)
    reopened.write_restored([(b"dave", b"4", b"d1")], 8)
    reopened.stage({"erin": b"5"}, {"erin": b"e1"})
    reopened.apply_staged(9)
    assert reopened.schedule_entries() is None
    reopened.close()
    again = store_at(tmp_path / "p2")  # the positions stayed apart: not vouched for after a restart either
    assert again.schedule_entries() is None
    everyone = {"alice": b"a2", "bob": b"b2", "carol": b"c2", "dave": b"d2", "erin": b"e2"}
    again.keep_schedule_entries(everyone, complete=True)  # the rebuild computed every profile's
    assert dict(again.schedule_entries()) == everyone
    again.stage({"bob": None}, {})
    again.apply_staged(10)
    again.close()
    last = store_at(tmp_path / "p2")
    assert dict(last.schedule_entries()) == {k: v for k, v in everyone.items() if k != "bob"}
    last.keep_schedule_entries({"alice": b"a3"}, complete=False)
    assert dict(last.schedule_entries())["alice"] == b"a3"
    last.close()


def test_a_reopened_store_reads_through_the_shared_block_cache(tmp_path):
    budget = StoreBudget(64 * MIB)
    store = PartitionStore(tmp_path / "p0", budget, "app-profiles-changelog", 0)
    store.write_restored([(f"user-{n:06d}".encode(), bytes(300), b"e" * 80) for n in range(20_000)], 20_000)
    store.db.flush()
    store.close()
    budget = StoreBudget(64 * MIB)
    reopened = PartitionStore(tmp_path / "p0", budget, "app-profiles-changelog", 0)
    before = budget.usage()["cache"]
    assert sum(1 for n in range(0, 20_000, 7) if reopened.get(f"user-{n:06d}") is not None) == len(range(0, 20_000, 7))
    assert len(list(reopened.schedule_entries())) == 20_000
    assert budget.usage()["cache"] > before + 2 * MIB, (before, budget.usage())  # the blocks read are in it
    reopened.close()


def test_entries_computed_for_a_large_partition_are_written_in_chunks_and_vouched_for_last(tmp_path, monkeypatch):
    from stream_app.driver import store as store_module

    store = store_at(tmp_path / "p2")
    store.write_restored([(f"u{n:05d}".encode(), b"p", None) for n in range(2_500)], 2_500)
    writes = []
    original = PartitionStore._write

    def counting(self, batch):  # type: ignore[no-untyped-def]
        writes.append(batch.len())
        if len(writes) == 2:
            assert self.schedule_entries() is None  # half written: not vouched for yet
        original(self, batch)

    monkeypatch.setattr(store_module, "ENTRIES_PER_WRITE", 1_000)
    monkeypatch.setattr(PartitionStore, "_write", counting)
    store.keep_schedule_entries({f"u{n:05d}": b"e" for n in range(2_500)}, complete=True)
    assert writes == [1_000, 1_000, 501]  # the position with the last chunk
    assert dict(store.schedule_entries()) == {f"u{n:05d}": b"e" for n in range(2_500)}
    store.close()
