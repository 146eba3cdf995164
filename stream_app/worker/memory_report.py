"""Where the worker's memory goes: a periodic breakdown of RSS for diagnosing growth (benchmarks/soak.py).

Enabled by STREAM_APP_MEMORY_REPORT_S=<seconds>. Every interval it logs one line (no user data):
RSS (anonymous and file-backed); Python's small-object arenas and the live bytes in them; the C heap
(glibc mallinfo2: bytes in use and free bytes the allocator keeps); RocksDB's shared cache and its
memtables (driver/store.py); and, when Python's
tracemalloc runs (PYTHONTRACEMALLOC=1), the Python heap and the source lines whose allocations grew most
since the first report.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import tempfile
import tracemalloc

from .allocator import GLIBC
from ..driver.store import MIB

log = logging.getLogger(__name__)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def rss_bytes() -> dict[str, int]:
    """VmRSS and its anonymous and file-backed parts, from /proc/self/status."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                found[name] = int(rest.split()[0]) * 1024
    return found


def pymalloc_stats() -> dict[str, int]:
    """Python's small-object allocator: arenas held (1 MiB each in 3.11) and bytes in live blocks.
    sys._debugmallocstats() writes to the C stderr, so it is captured through a temporary file."""
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode("ascii", "replace")
    stats = {}
    for key, pattern in (("arena_bytes", r"(\d[\d,]*) arenas \* \d+ bytes/arena\s*=\s*([\d,]+)"),
                         ("in_blocks", r"# bytes in allocated blocks\s*=\s*([\d,]+)")):
        match = re.search(pattern, text)
        if match:
            stats[key] = int(match.groups()[-1].replace(",", ""))
    return stats


def c_heap() -> dict[str, int]:
    """glibc's view of malloc: bytes in use (mmapped blocks included) and free bytes held in arenas."""
    mallinfo2 = getattr(GLIBC, "mallinfo2", None)
    if mallinfo2 is None:  # not glibc, or older than 2.33
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free_held": info.fordblks}


class MemoryReport:
    def __init__(self, top: int = 8) -> None:
        self.top = top
        self.first: tracemalloc.Snapshot | None = None

    def line(self, rocksdb: dict[str, int]) -> str:
        rss = rss_bytes()
        parts = [f"rss={rss.get('VmRSS', 0) / MIB:.1f}MiB anon={rss.get('RssAnon', 0) / MIB:.1f}MiB file={rss.get('RssFile', 0) / MIB:.1f}MiB"]
        small = pymalloc_stats()
        if small:
            parts.append(f"pymalloc_arenas={small.get('arena_bytes', 0) / MIB:.1f}MiB pymalloc_live={small.get('in_blocks', 0) / MIB:.1f}MiB")
        heap = c_heap()
        if heap:
            parts.append(f"malloc_in_use={heap['in_use'] / MIB:.1f}MiB malloc_free_held={heap['free_held'] / MIB:.1f}MiB")
        parts.extend(f"rocksdb_{name}={value / MIB:.1f}MiB" for name, value in rocksdb.items())
        if tracemalloc.is_tracing():
            current, _ = tracemalloc.get_traced_memory()
            parts.append(f"python_heap={current / MIB:.1f}MiB")
            snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            if self.first is None:
                self.first = snapshot
            else:
                growth = snapshot.compare_to(self.first, "lineno")[: self.top]
                parts.append("grew: " + "; ".join(
                    f"{stat.traceback[0].filename.rsplit('site-packages/', 1)[-1]}:{stat.traceback[0].lineno} "
                    f"{stat.size_diff / 1024:+.0f}KiB/{stat.count_diff:+d}" for stat in growth))
        return " ".join(parts)

    def log(self, rocksdb: dict[str, int]) -> None:
        log.info("memory %s", self.line(rocksdb))
