"""Rows out of an input file: JSON lines, Parquet, Avro or CSV, chosen by the file's name.

Each vendor is read in the file types it exports (`FILE_TYPES`). A JSON line that is not an object is
handed on as `UndecodableRow`, so that it becomes a reject with its line number rather than an error.
`.gz` is read through gzip for JSON lines and CSV.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

# the file types each vendor exports (BigQuery cannot export GA4's nested rows to CSV)
FILE_TYPES = {
    "segment": ("jsonl",),
    "ga4": ("jsonl", "parquet", "avro"),
    "mixpanel": ("jsonl",),
    "csv": ("csv",),
}
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".avro": "avro", ".csv": "csv"}
PARQUET_BATCH_ROWS = 4096


class InputError(ValueError):
    """The input file cannot be read as asked; the message says what to do."""


@dataclass(frozen=True)
class UndecodableRow:
    detail: str


def file_type(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = SUFFIXES.get(suffixes[-1]) if suffixes else None
    if kind is None:
        raise InputError(f"{path.name}: unknown file type; name it .jsonl (or .json, .ndjson, with .gz if compressed), "
                         ".parquet, .avro or .csv")
    return kind


def check_file_type(fmt: str, kind: str) -> None:
    if kind in FILE_TYPES[fmt]:
        return
    if fmt == "ga4" and kind == "csv":
        raise InputError("BigQuery cannot export GA4's nested rows (event_params, items) to CSV: export the table as "
                         "JSON lines (NEWLINE_DELIMITED_JSON), Avro or Parquet")
    raise InputError(f"--format {fmt} reads {', '.join(FILE_TYPES[fmt])} files, not {kind}")


def _open_text(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_rows(path: Path, kind: str, columns: tuple[str, ...] | None = None) -> Iterator[dict[str, Any] | UndecodableRow]:
    """Every row of the file, in file order. A file that cannot be read as its type raises InputError.
    ``columns``: the only top-level fields the caller reads (Parquet then reads only those columns)."""
    try:
        yield from _rows_of(path, kind, columns)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - each library has its own errors for a damaged file
        raise InputError(f"{path}: cannot be read as {kind}: {type(exc).__name__}: {str(exc)[:200]}") from None


def _rows_of(path: Path, kind: str, columns: tuple[str, ...] | None) -> Iterator[dict[str, Any] | UndecodableRow]:
    if kind == "jsonl":
        yield from _json_lines(path)
    elif kind == "csv":
        with _open_text(path) as handle:
            yield from csv.DictReader(handle)
    elif kind == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        wanted = [name for name in names if name in columns] if columns is not None else None
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
            yield from batch.to_pylist()
    elif kind == "avro":
        import fastavro

        with open(path, "rb") as handle:
            yield from fastavro.reader(handle)
    else:
        raise InputError(f"unknown file type {kind}")


def _json_lines(path: Path) -> Iterator[dict[str, Any] | UndecodableRow]:
    with (gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")) as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                yield UndecodableRow(f"not valid JSON: {str(exc)[:160]}")
                continue
            yield doc if isinstance(doc, dict) else UndecodableRow(f"a JSON {type(doc).__name__}, not an object")


def row_count_hint(path: Path, kind: str) -> int | None:
    """The number of rows when the file says it without being read (Parquet's footer), for the ETA."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # noqa: BLE001 - a damaged file is reported when its rows are read
            return None
    return None
