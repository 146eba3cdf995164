"""Flat CSV files (one event per row, a header line) -> Segment-spec events, by the table's `csv` section."""

from __future__ import annotations

from typing import Any

from ..timeutil import parse_timestamp
from .mapping_table import VendorMapping
from .segment_events import Rejected, derived_message_id, plain_number, renamed, segment_event, with_url_parts

ROW_TYPES = ("track", "page", "screen", "identify")


class CsvMapping:
    format = "csv"
    columns: tuple[str, ...] | None = None

    def __init__(self, mapping: VendorMapping) -> None:
        self.mapping = mapping
        self.columns = mapping.columns

    def _cell(self, row: dict[str, Any], role: str) -> str:
        column = self.columns.get(role)
        value = row.get(column) if column else None
        return value.strip() if isinstance(value, str) else ""

    def row_time(self, row: dict[str, Any]) -> int:
        text = self._cell(row, "timestamp")
        if not text:
            raise Rejected("bad_timestamp", f"column {self.columns.get('timestamp')!r} is empty or missing")
        try:
            return parse_timestamp(int(text) if text.isdigit() else text)
        except ValueError as exc:
            raise Rejected("bad_timestamp", str(exc)) from None

    def events(self, row: dict[str, Any], ts_ms: int) -> list[dict[str, Any]]:
        kind = self._cell(row, "type") or "track"
        if kind not in ROW_TYPES:
            raise Rejected("unsupported_type", f"type {kind[:40]!r}: a CSV row is one of {', '.join(ROW_TYPES)}")
        user_id, anonymous_id = self._cell(row, "user_id"), self._cell(row, "anonymous_id")
        if not user_id and not anonymous_id:
            raise Rejected("missing_user_id", f"columns {self.columns.get('user_id')!r} and {self.columns.get('anonymous_id')!r} are empty")
        role_columns = set(self.columns.values())
        cells = {column: value for column, value in row.items()
                 if column not in role_columns and isinstance(column, str) and isinstance(value, str) and value.strip() != ""}
        message_id = self._cell(row, "message_id") or derived_message_id("csv", {k: v for k, v in row.items() if isinstance(k, str)})
        name = self._cell(row, "event") if kind == "track" else self._cell(row, "name")
        rule = None
        if kind == "track":
            if not name:
                raise Rejected("unmapped_event", f"a track row needs an event name in column {self.columns.get('event')!r}")
            rule = self.mapping.rule(name)
            if rule is None:
                raise Rejected("unmapped_event", f"event {name[:80]!r} has no entry in the mapping table (csv.events)")
            if rule.exclude:
                raise Rejected("excluded_event", f"event {name!r} is excluded by the mapping table")
        properties = renamed(self._typed(cells), self.mapping.renames(rule) if rule else self.mapping.properties, keep_unlisted=True)
        if rule is not None and rule.type != "track":
            kind = rule.type
            page_name = properties.get(rule.name_from) if rule.name_from else None
            name = page_name if isinstance(page_name, str) else ""
        if kind == "page":
            with_url_parts(properties)
        return [segment_event(kind, message_id=message_id, ts_ms=ts_ms, user_id=user_id or None,
                              anonymous_id=anonymous_id or None, event=rule.event if rule else None, name=name or None,
                              properties=properties)]

    def _typed(self, cells: dict[str, str]) -> dict[str, Any]:
        typed: dict[str, Any] = {}
        for column, text in cells.items():
            if column in self.mapping.numbers:
                number = plain_number(text)
                if number is None:
                    raise Rejected("bad_number", f"column {column!r} holds {text[:40]!r}, not a number")
                typed[column] = number
            else:
                typed[column] = text
        return typed
