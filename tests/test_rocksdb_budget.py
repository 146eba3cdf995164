"""The worker's RocksDB memory is one budget shared by every partition store (driver/store.py),
and the memory report (worker/memory_report.py) breaks RSS down without user data."""

from __future__ import annotations

import random
import re
from dataclasses import replace

from stream_app.settings import Settings
from stream_app.worker.memory_report import MemoryReport
from stream_app.driver.store import MIB, PartitionStore, StoreBudget


def test_partitions_share_one_bounded_cache_and_flush_their_memtables(tmp_path):
    budget = 8 * MIB
    shared = StoreBudget(budget)
    assert shared.write_buffer_size == 1 * MIB  # 1/32 of the budget, at least 1 MiB
    stores = [PartitionStore(tmp_path / f"p{i}", shared, "changelog", i) for i in range(4)]
    rng = random.Random(7)
    keys = [rng.randbytes(12).hex() for _ in range(60_000)]
    for n, key in enumerate(keys):  # about 30 MiB of values: far more than the budget
        stores[n % 4].stage({key: rng.randbytes(500)})
        if n % 1000 == 999:
            for store in stores:
                store.apply_staged(n)
    for store in stores:
        store.apply_staged(len(keys))
    written = shared.usage()
    assert 0 < written["memtables"] <= budget // 2 + 4 * MIB, written  # flushed at half the budget (+ one memtable each)
    for n, key in enumerate(keys[::3]):  # reads fill the shared block cache
        assert stores[(n * 3) % 4].get(key) is not None
    pinned_before = shared.cache.get_pinned_usage()
    read = shared.usage()
    pinned = max(pinned_before, shared.cache.get_pinned_usage())
    # one cache, used, and bounded: RocksDB's LRU cache is sharded (512 KiB shards at this budget) and
    # evicts only entries nobody holds, so a shard whose held entries (the memtables' 256 KiB charges,
    # pinned L0 index and filter blocks) exceed its share stays above it: at most budget + held bytes.
    # CI once saw 8.9 MB of an 8 MiB budget this way; without a shared bounded cache the reads alone
    # would hold about 30 MB
    assert budget // 2 < read["cache"] <= budget + pinned, (read, pinned)
    assert pinned < budget, pinned
    assert all(store.next_changelog_offset() == len(keys) for store in stores)
    for store in stores:
        store.close()


def test_the_worker_opens_its_stores_with_the_shared_budget(tmp_path):
    from stream_app.worker.app import build_worker

    driver, _processor, _exchange = build_worker(replace(Settings(), rocksdb_memory_mb=48, data_dir=tmp_path))
    assert driver.budget.budget_bytes == 48 * MIB
    store = driver._open_store(0)
    assert store.path.parent == tmp_path / "state"
    store.close()


def test_memory_report_line_breaks_rss_down():
    line = MemoryReport().line({"cache": 3 * MIB, "memtables": 1 * MIB})
    fields = dict(re.findall(r"(\w+)=([\d.]+)MiB", line))
    assert float(fields["rss"]) > 0
    assert float(fields["anon"]) + float(fields["file"]) <= float(fields["rss"]) + 1
    assert float(fields["pymalloc_arenas"]) >= float(fields["pymalloc_live"]) > 0
    assert float(fields["malloc_in_use"]) > 0
    assert fields["rocksdb_cache"] == "3.0" and fields["rocksdb_memtables"] == "1.0"


def test_trimming_gives_free_heap_memory_back():
    import ctypes

    from stream_app.worker.allocator import trim_free_memory
    from stream_app.worker.memory_report import rss_bytes

    blocks = [ctypes.create_string_buffer(4000) for _ in range(40_000)]  # about 160 MB of C heap
    kept = blocks[::10]  # freeing the rest leaves large holes below blocks still in use
    del blocks
    before = rss_bytes()["RssAnon"]
    assert trim_free_memory()
    after = rss_bytes()["RssAnon"]
    assert before - after > 50 * MIB, (before, after)
    assert len(kept) == 4000


LARGE_BLOCKS = """
import ctypes, json, sys
from stream_app.worker import allocator
from stream_app.worker.memory_report import _MallInfo2, GLIBC
if sys.argv[1] == "fixed":
    assert allocator.fix_mmap_threshold()
# freeing one mmapped block makes glibc raise its threshold above that size (the default behaviour)
del_me = ctypes.create_string_buffer(1 << 20)
del del_me
blocks = [ctypes.create_string_buffer(512 * 1024) for _ in range(64)]
GLIBC.mallinfo2.restype = _MallInfo2
print(json.dumps({"mmapped": GLIBC.mallinfo2().hblkhd, "heap": GLIBC.mallinfo2().uordblks}))
"""


def test_a_fixed_mmap_threshold_keeps_large_blocks_out_of_the_heap():
    """With glibc's dynamic threshold, large blocks land in the heap after the first one is freed, and
    leave holes there; with the threshold fixed they stay mmapped, returned to the system when freed."""
    import json
    import subprocess
    import sys

    def run(mode: str) -> dict:
        done = subprocess.run([sys.executable, "-c", LARGE_BLOCKS, mode], capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    default, fixed = run("default"), run("fixed")
    assert fixed["mmapped"] >= 32 * MIB, fixed
    assert default["mmapped"] < 8 * MIB and default["heap"] >= 32 * MIB, default
