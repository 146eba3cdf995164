"""Give free C-heap memory back to the operating system.

glibc's malloc keeps freed memory in its arenas for reuse. RocksDB's memtables and blocks come and go
in sizes that leave free holes behind, so the worker's RSS crept up by the free bytes the allocator
held (`malloc_free_held` in the memory report; docs/reliability.md, "Soak"). Two remedies:
- `fix_mmap_threshold`: glibc serves blocks of 128 KiB and more with their own mmap, returned to the
  system when freed, but by default it raises that threshold every time such a block is freed (up to
  32 MiB), after which large blocks come from the heap and leave large holes in it. Fixing the
  threshold (and the trim threshold) keeps large blocks out of the heap: in the soaks the free bytes
  held stayed between 2 and 10 MiB instead of climbing from 6 to 27 MiB in 30 minutes.
- `trim_free_memory`: `malloc_trim(0)` returns every whole free page of every arena; about a
  millisecond, every `STREAM_APP_MALLOC_TRIM_S`.
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


_MALLOPT = getattr(GLIBC, "mallopt", None)
M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
LARGE_BLOCK = 128 * 1024  # glibc's default (initial) mmap threshold


def fix_mmap_threshold(threshold: int = LARGE_BLOCK) -> bool:
    """Serve blocks of `threshold` bytes and more with mmap for the rest of the process, and trim the
    heap top above that much free memory; False where the C library has no mallopt (or refuses)."""
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(M_MMAP_THRESHOLD, threshold)) and bool(_MALLOPT(M_TRIM_THRESHOLD, threshold))


def trim_free_memory() -> bool:
    """Return free C-heap pages to the OS; False where the C library has no malloc_trim."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
