"""`stream-app worker` that kills itself (SIGKILL, as kill -9 would) at a chosen point of its commit
sequence, restore or rebalance: the targeted faults of tests/test_kafka_targeted_faults.py (issue #15).

    python -m tests.crash_worker POINT N

dies at the N-th time the driver reaches POINT (a name the driver passes to its fault hook:
`before_commit`, `committed_not_written`, `restore_chunk`, `revoke_commit`, ...).

    python -m tests.crash_worker --disk-full-while FLAG

is a worker whose disk is full while the file FLAG exists (tests/test_kafka_disk_faults.py): every
partition store's open and write (`local_open`, `local_write`) then raises the error RocksDB raises on
a full disk.

The hook is a constructor argument of the driver that only code building a worker itself can pass: no
setting, no environment variable and no command-line option of the product reaches it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from stream_app.settings import Settings
from stream_app.worker.app import run_worker


def crash_at(point: str, nth: int) -> Any:
    seen = {"count": 0}

    def hook(name: str, _driver: Any) -> None:
        if name != point:
            return
        seen["count"] += 1
        if seen["count"] == nth:
            print(f"crash_worker: SIGKILL at {point} #{nth}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def disk_full_while(flag: Path) -> Any:
    def hook(name: str, driver: Any) -> None:
        if name in ("local_open", "local_write") and flag.exists():
            # what rocksdict raises when the disk is full (measured on a full tmpfs, docs/reliability.md)
            where = driver.config.state_dir
            raise Exception(f"IO error: No space left on device: While appending to file: {where}: No space left on device")

    return hook


if __name__ == "__main__":
    if sys.argv[1] == "--disk-full-while":
        run_worker(Settings(), fault_hook=disk_full_while(Path(sys.argv[2])))
    else:
        point, nth = sys.argv[1], int(sys.argv[2])
        run_worker(Settings(), fault_hook=crash_at(point, nth))
