"""Preparing an import: rows -> checked events -> duplicates dropped -> runs sorted by time, on disk.

1. Every row is read in file order; `--since`/`--until` keep the rows whose timestamp t has
   `since <= t < until`; the vendor mapping turns a row into events or a reject; each event is checked
   with the worker's own decoder (`decode_event`), so nothing sent is dead-lettered. The events go to
   runs sorted by (messageId, timestamp, row order).
2. The runs are merged by messageId: of the events that share one, the earliest (then the first in the
   file) is kept and the others are counted as deduplicated. The survivors go to new runs sorted by
   (timestamp, messageId): the order they are sent or written in, which is the order `stream-app replay`
   applies events in.

The result is recorded in `prepared.json` (written last, atomically): a resumed import finds it and does
not prepare again; a preparation that was interrupted is done again from the start.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..events import InvalidEvent, decode_event
from .external_sort import Record, merge_runs, write_sorted_runs
from .progress import Counts, ProgressBar
from .readers import UndecodableRow, read_rows, row_count_hint
from .rejects import RejectsFile
from .segment_events import Rejected
from .work_files import read_json, write_json_atomically

MANIFEST = "prepared.json"
# a record on disk: [timestamp ms, messageId, partition key (user), the event's JSON bytes, sequence]
TS, MESSAGE_ID, KEY, VALUE, SEQUENCE = range(5)


class VendorRows(Protocol):
    format: str
    columns: tuple[str, ...] | None  # the top-level fields it reads (None: all)

    def row_time(self, row: dict[str, Any]) -> int: ...

    def events(self, row: dict[str, Any], ts_ms: int) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Preparation:
    inputs: list[tuple[Path, str]]  # (file, file type), read one after the other
    mapper: VendorRows
    since_ms: int | None
    until_ms: int | None
    max_event_bytes: int
    run_size: int
    rejects_path: Path
    progress: bool | None


@dataclass
class Prepared:
    runs: list[Path]  # sorted by (timestamp, messageId); merged, they are what is sent
    events: int
    counts: Counts
    fingerprint: str  # of the runs' bytes: a checkpoint's run offsets are valid for these runs only


def runs_fingerprint(runs: list[Path]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for run in runs:
        digest.update(run.name.encode() + b"\0")
        with open(run, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def encoded(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def by_id(record: Record) -> tuple[str, int, int]:
    return record[MESSAGE_ID], record[TS], record[SEQUENCE]


def by_time(record: Record) -> tuple[int, str]:
    return record[TS], record[MESSAGE_ID]


def load_prepared(work: Path, identity: str) -> Prepared | None:
    manifest = read_json(work / MANIFEST)
    if manifest is None or manifest.get("import_id") != identity:
        return None
    runs = [work / name for name in manifest["runs"]]
    if not all(run.exists() for run in runs):
        return None
    return Prepared(runs, manifest["events"], Counts.from_json(manifest["counts"]), manifest["fingerprint"])


def prepared_counts(work: Path, identity: str) -> Counts | None:
    """The counts of a finished preparation, also after its runs were removed."""
    manifest = read_json(work / MANIFEST)
    return Counts.from_json(manifest["counts"]) if manifest is not None and manifest.get("import_id") == identity else None


def remove_runs(work: Path) -> None:
    """Free the disk once the events are sent or written (the manifest and its counts stay)."""
    for run in work.glob("*.run"):
        run.unlink()


def prepare(job: Preparation, work: Path, identity: str) -> Prepared:
    if work.exists():
        shutil.rmtree(work)  # an interrupted preparation: start again
    work.mkdir(parents=True)
    counts = Counts()
    rejects = RejectsFile(job.rejects_path)
    hints = [row_count_hint(path, kind) for path, kind in job.inputs]
    total = sum(hint for hint in hints if hint is not None) if all(hint is not None for hint in hints) else None
    bar = ProgressBar("read", "row", "events", total, job.progress)
    try:
        id_runs = write_sorted_runs(_mapped(job, counts, rejects, bar), by_id, job.run_size, work, "by-id")
    finally:
        bar.close()
        rejects.close()
    time_runs = write_sorted_runs(_unique(merge_runs(id_runs, by_id), counts), by_time, job.run_size, work, "by-time")
    for run in id_runs:
        run.unlink()
    events = counts.events_mapped - counts.deduplicated
    fingerprint = runs_fingerprint(time_runs)
    write_json_atomically(work / MANIFEST, {"import_id": identity, "runs": [run.name for run in time_runs], "events": events,
                                            "counts": counts.as_json(), "fingerprint": fingerprint})
    return Prepared(time_runs, events, counts, fingerprint)


def _mapped(job: Preparation, counts: Counts, rejects: RejectsFile, bar: ProgressBar) -> Iterator[Record]:
    wall_ms = int(time.time() * 1000)
    sequence = 0
    for path, number, row in _rows(job.inputs, job.mapper.columns):
        counts.rows_read += 1
        try:
            if isinstance(row, UndecodableRow):
                raise Rejected("undecodable", row.detail)
            ts = job.mapper.row_time(row)
            if (job.since_ms is not None and ts < job.since_ms) or (job.until_ms is not None and ts >= job.until_ms):
                counts.outside_range += 1
                bar.update(1, 0)
                continue
            checked = [_checked(event, wall_ms, job.max_event_bytes) for event in job.mapper.events(row, ts)]
        except Rejected as rejected:
            counts.rejected[rejected.reason] += 1
            rejects.write(path, number, rejected, row if isinstance(row, dict) else None)
            bar.update(1, 0)
            continue
        for event_ts, message_id, key, value in checked:
            yield [event_ts, message_id, key, value, sequence]
            sequence += 1
        counts.events_mapped += len(checked)
        bar.update(1, len(checked))


def _rows(inputs: list[tuple[Path, str]], columns: tuple[str, ...] | None
          ) -> Iterator[tuple[Path, int, dict[str, Any] | UndecodableRow]]:
    """(file, row number in that file from 1, row) for every row of every file, in order."""
    for path, kind in inputs:
        for number, row in enumerate(read_rows(path, kind, columns), start=1):
            yield path, number, row


def _checked(event: dict[str, Any], wall_ms: int, max_bytes: int) -> tuple[int, str, str, bytes]:
    """The event as the worker will see it, or the worker's reason to refuse it (as a reject)."""
    value = encoded(event)
    try:
        decoded = decode_event(value, wall_ms, max_bytes)
    except InvalidEvent as invalid:
        raise Rejected(invalid.reason.value, invalid.detail) from None
    return decoded.ts, decoded.message_id, decoded.user_id, value


def _unique(merged: Iterator[tuple[Record, int, int]], counts: Counts) -> Iterator[Record]:
    previous: str | None = None
    for record, _run, _offset in merged:
        if record[MESSAGE_ID] == previous:
            counts.deduplicated += 1
            continue
        previous = record[MESSAGE_ID]
        yield record
