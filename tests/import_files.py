"""Test helpers for `stream-app import`: the fixtures, GA4 rows written as BigQuery writes them to Avro
and Parquet, and running the command in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "import"
GA4_SCHEMA = json.loads((FIXTURES / "ga4_export.avsc").read_text())


def fixture_rows(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def expected(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def _typed(value: Any, schema: Any, where: str) -> Any:
    """A value of the JSON export (INT64 as text) as the Avro/Parquet export holds it, by the schema."""
    if isinstance(schema, list):  # ["null", T]
        return None if value is None else _typed(value, schema[1], where)
    if isinstance(schema, dict) and schema["type"] == "record":
        if not isinstance(value, dict):
            raise ValueError(f"{where}: not a record")
        names = {field["name"] for field in schema["fields"]}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"{where}: fields {sorted(unknown)} are not in the export schema")
        return {field["name"]: _typed(value.get(field["name"]), field["type"], f"{where}.{field['name']}")
                for field in schema["fields"]}
    if isinstance(schema, dict) and schema["type"] == "array":
        return [_typed(item, schema["items"], where) for item in value or []]
    if schema == "long":
        return int(value)
    if schema == "double":
        return float(value)
    if schema == "boolean":
        return bool(value)
    return value


def typed_ga4_rows(lines: list[str]) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows that the typed export can hold, and the numbers (from 1) of those it cannot (a text
    event_timestamp is possible only in a hand-edited JSON file)."""
    rows, untyped = [], []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(_typed(json.loads(line), GA4_SCHEMA, f"row {number}"))
        except (TypeError, ValueError):
            untyped.append(number)
    return rows, untyped


def write_ga4_avro(rows: list[dict[str, Any]], path: Path) -> None:
    import fastavro

    with open(path, "wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(GA4_SCHEMA), rows, codec="deflate")


def _arrow_type(schema: Any) -> Any:
    import pyarrow as pa

    if isinstance(schema, list):
        return _arrow_type(schema[1])
    if isinstance(schema, dict) and schema["type"] == "record":
        return pa.struct([pa.field(f["name"], _arrow_type(f["type"])) for f in schema["fields"]])
    if isinstance(schema, dict) and schema["type"] == "array":
        return pa.list_(_arrow_type(schema["items"]))
    return {"long": pa.int64(), "double": pa.float64(), "string": pa.string(), "boolean": pa.bool_()}[schema]


def write_ga4_parquet(rows: list[dict[str, Any]], path: Path, row_group_size: int = 5) -> None:
    """Small row groups by default, so that the tests read across several."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field(f["name"], _arrow_type(f["type"])) for f in GA4_SCHEMA["fields"]])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)


def run_import(capsys: Any, *args: str) -> tuple[int, str]:
    """`stream-app import ARGS` in this process; (exit status, stderr)."""
    from stream_app.cli.main import main

    status = main(["import", "--no-progress", *args])
    return status, capsys.readouterr().err


def summary_counts(stderr: str) -> dict[str, int]:
    """The numbers of the summary's first line: read, sent/wrote, deduplicated, rejected, outside."""
    import re

    line = next(line for line in stderr.splitlines() if line.startswith("import: read "))
    match = re.match(r"import: read (\d+) rows, (?:sent|wrote) (\d+) events, deduplicated (\d+), rejected (\d+), "
                     r"outside --since/--until (\d+)$", line)
    assert match, line
    read, sent, deduplicated, rejected, outside = map(int, match.groups())
    return {"read": read, "sent": sent, "deduplicated": deduplicated, "rejected": rejected, "outside": outside}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
