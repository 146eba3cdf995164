"""Sorting more records than memory holds: sorted runs on disk, merged lazily.

`write_sorted_runs` cuts the records into chunks of `run_size`, sorts each chunk in memory and writes
it to its own file (msgpack, one array per record). `merge_runs` reads every run at once, one record at
a time, through `heapq.merge`: memory holds one chunk while writing and one record per run while
merging. Each merged record comes with its run's byte offset just after it, so a merge can be started
again from any point (`start_offsets`): the suffixes of sorted runs merge into the suffix of the merge.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import msgpack

Record = list[Any]
READ_SIZE = 1 << 16


def write_sorted_runs(records: Iterable[Record], key: Callable[[Record], Any], run_size: int, directory: Path,
                      prefix: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    chunk: list[Record] = []

    def flush() -> None:
        chunk.sort(key=key)
        path = directory / f"{prefix}-{len(paths):05d}.run"
        packer = msgpack.Packer(use_bin_type=True)
        with open(path, "wb") as handle:
            for record in chunk:
                handle.write(packer.pack(record))
        paths.append(path)
        chunk.clear()

    for record in records:
        chunk.append(record)
        if len(chunk) >= run_size:
            flush()
    if chunk:
        flush()
    return paths


def read_run(path: Path, offset: int = 0) -> Iterator[tuple[Record, int]]:
    """The run's records from ``offset``, each with the offset just after it."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        unpacker = msgpack.Unpacker(handle, raw=False, read_size=READ_SIZE)
        for record in unpacker:
            yield record, offset + unpacker.tell()


def merge_runs(paths: list[Path], key: Callable[[Record], Any], start_offsets: list[int] | None = None
               ) -> Iterator[tuple[Record, int, int]]:
    """(record, run index, offset after it in that run), in ``key`` order (ties: the lower run first)."""
    offsets = start_offsets if start_offsets is not None else [0] * len(paths)
    streams = [_numbered(path, index, offsets[index]) for index, path in enumerate(paths)]
    return heapq.merge(*streams, key=lambda item: key(item[0]))


def _numbered(path: Path, index: int, offset: int) -> Iterator[tuple[Record, int, int]]:
    for record, after in read_run(path, offset):
        yield record, index, after
