"""Give free C-heap memory back to the operating system.

glibc's malloc keeps freed memory in its arenas for reuse. RocksDB's memtables and blocks come and go
in sizes that leave free holes behind, so without a trim the worker's RSS creeps up by the free bytes
the allocator holds (seen in the soak: about 1 MiB/min, all of it `malloc_free_held` in the memory
report). `malloc_trim(0)` returns every whole free page of every arena; it takes about a millisecond.
"""

from __future__ import annotations

import ctypes


def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


GLIBC = _glibc()  # also read by worker/memory_report.py
_TRIM = getattr(GLIBC, "malloc_trim", None)
if _TRIM is not None:
    _TRIM.argtypes = [ctypes.c_size_t]
    _TRIM.restype = ctypes.c_int


def trim_free_memory() -> bool:
    """Return free C-heap pages to the OS; False where the C library has no malloc_trim."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
