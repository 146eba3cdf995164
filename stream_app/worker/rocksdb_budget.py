"""One RocksDB memory budget for the whole worker, however many table partitions it owns.

Faust opens every table partition as its own RocksDB instance with its own block cache and memtables
(by default a 2 GiB cache and three 64 MiB write buffers each), so a worker's memory grows with the
partitions it is assigned and with time. Here all instances share one LRU block cache of
`STREAM_APP_ROCKSDB_MEMORY_MB`, and one write-buffer manager charges every memtable to that cache:
memtables flush once they hold half the budget together, and index and filter blocks live in the
cache too. RocksDB's memory is then bounded by the budget (plus what a flush in progress holds).
"""

from __future__ import annotations

from typing import Any

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

MIB = 1 << 20


class SharedBudgetOptions(RocksDBOptions):
    """faust's RocksDB options, opening every partition's instance against one shared cache and
    write-buffer manager (faust calls `as_options()` once per instance it opens)."""

    def __init__(self, budget_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget_bytes = budget_bytes
        self.cache = rocksdict.Cache(budget_bytes)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            budget_bytes // 2, False, self.cache)
        # small memtables: each partition's flushes at 1/32 of the budget, so the memtables' memory
        # reaches its working size in the first minutes instead of creeping up for an hour
        self.write_buffer_size = min(self.write_buffer_size, max(1 * MIB, budget_bytes // 32))

    def as_options(self) -> Any:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_write_buffer_manager(self.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(self.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options

    def usage(self) -> dict[str, int]:
        """Bytes in the shared cache (blocks and the memtables charged to it) and in memtables."""
        return {"cache": self.cache.get_usage(), "memtables": self.write_buffers.get_usage()}


def use_shared_budget(table: Any, budget_mb: int) -> SharedBudgetOptions:
    """Give a faust RocksDB-backed table one budget for all its partitions; before any is opened."""
    store = table.data
    current = store.rocksdb_options
    shared = SharedBudgetOptions(
        budget_mb * MIB,
        max_open_files=current.max_open_files,
        write_buffer_size=8 * MIB,
        max_write_buffer_number=2,
        target_file_size_base=16 * MIB,
        bloom_filter_size=current.bloom_filter_size,
        use_rocksdict=True,
        ttl=current.ttl,
    )
    store.rocksdb_options = shared
    return shared
