"""Local state: one RocksDB instance per owned partition, holding only committed writes.

A processor stages its writes (`stage`); reads see the staged value first, then RocksDB. The driver
turns the staged writes into changelog records inside the open transaction and, only after the
transaction committed, applies them to RocksDB in one `WriteBatch` together with the changelog offset
they reflect (`apply_staged`). So the local copy never holds an uncommitted write, and after any stop a
partition replays only the changelog tail past its stored offset (`driver/restore.py`). After an abort
the staged writes are dropped (`discard_staged`).

All instances share one memory budget (`StoreBudget`): one LRU block cache, with every memtable charged
to it by one write-buffer manager, so RocksDB's memory is bounded by a single figure however many
partitions a process owns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import rocksdict

MIB = 1 << 20
# local bookkeeping, never sent to the changelog: the next changelog offset to restore from
OFFSET_KEY = b"\x00\x00driver:changelog-next-offset"


class StoreBudget:
    """One block cache and one write-buffer manager for every partition store of a process."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.cache = rocksdict.Cache(budget_bytes)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(budget_bytes // 2, False, self.cache)
        # small memtables: each partition's flush at 1/32 of the budget, so the memtables reach their
        # working size in the first minutes instead of creeping up for an hour
        self.write_buffer_size = max(1 * MIB, min(8 * MIB, budget_bytes // 32))

    def options(self) -> rocksdict.Options:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(256)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(2)
        options.set_target_file_size_base(16 * MIB)
        options.set_write_buffer_manager(self.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(10, True)
        table.set_block_cache(self.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options

    def usage(self) -> dict[str, int]:
        """Bytes in the shared cache (blocks and the memtables charged to it) and in memtables."""
        return {"cache": self.cache.get_usage(), "memtables": self.write_buffers.get_usage()}


def _key(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


class PartitionStore:
    """A partition's profiles: str keys, bytes values, committed in RocksDB plus staged writes."""

    def __init__(self, path: Path, budget: StoreBudget, changelog_topic: str, partition: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.changelog_topic = changelog_topic
        self.partition = partition
        self._options = budget.options()
        self.db = rocksdict.Rdict(str(path), self._options)
        self.staged: dict[str, bytes | None] = {}  # None = delete

    # -- the engine's view --------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        if key in self.staged:
            return self.staged[key]
        return self.db.get(_key(key))

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every profile, staged writes included (one pass; used when a partition is assigned and when
        definitions change)."""
        staged = self.staged
        for raw_key, value in self.db.items():
            if raw_key == OFFSET_KEY:
                continue
            key = raw_key.decode("utf-8", "surrogatepass")
            if key in staged:
                continue
            yield key, value
        for key, value in list(staged.items()):
            if value is not None:
                yield key, value

    # -- the driver's side ----------------------------------------------------------------------------
    def stage(self, writes: dict[str, bytes | None]) -> None:
        self.staged.update(writes)

    def discard_staged(self) -> None:
        self.staged = {}

    def changelog_records(self) -> Iterator[tuple[bytes, bytes | None]]:
        for key, value in self.staged.items():
            yield _key(key), value

    def apply_staged(self, next_changelog_offset: int | None) -> None:
        """After the commit: the staged writes and the changelog position, in one atomic write."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in self.staged.items():
            if value is None:
                batch.delete(_key(key))
            else:
                batch.put(_key(key), value)
        if next_changelog_offset is not None:
            batch.put(OFFSET_KEY, str(next_changelog_offset).encode())
        if not batch.is_empty():
            self.db.write(batch)
        self.staged = {}

    def next_changelog_offset(self) -> int | None:
        raw = self.db.get(OFFSET_KEY)
        return int(raw) if raw is not None else None

    def write_restored(self, records: list[tuple[bytes, bytes | None]], next_offset: int) -> None:
        """Restore: a chunk of raw changelog records and the position after them, in one write."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(OFFSET_KEY, str(next_offset).encode())
        self.db.write(batch)

    def wipe(self) -> None:
        """Forget the local copy (it does not match the changelog any more); restore starts from zero."""
        self.db.close()
        rocksdict.Rdict.destroy(str(self.path))
        self.path.mkdir(parents=True, exist_ok=True)
        self.db = rocksdict.Rdict(str(self.path), self._options)

    def close(self) -> None:
        self.db.close()
