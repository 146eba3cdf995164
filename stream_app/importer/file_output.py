"""`--output`: the prepared events as JSON lines, in the order they would be sent (`stream-app replay` and
`stream-app produce` read them). Written to a temporary file renamed at the end: the output is whole or
absent; an interrupted run is simply run again (its preparation is reused)."""

from __future__ import annotations

import os
from pathlib import Path

from .external_sort import merge_runs
from .prepare import VALUE, by_time
from .progress import ProgressBar


def write_events(runs: list[Path], output: Path, total_events: int, progress: bool | None) -> int:
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.partial")
    written = 0
    bar = ProgressBar("write", "event", None, total_events, progress)
    try:
        with open(temporary, "wb") as handle:
            for record, _run, _offset in merge_runs(runs, by_time):
                handle.write(record[VALUE])
                handle.write(b"\n")
                written += 1
                if written % 1000 == 0:
                    bar.update(1000, 0)
            handle.flush()
            os.fsync(handle.fileno())
        bar.update(written % 1000, 0)
    finally:
        bar.close()
    os.replace(temporary, output)
    return written
