"""Segment's archives (S3 / Cloud Storage destinations, JSON lines) -> the worker's Segment-spec events.

The messages are Segment-spec already: the import keeps the fields the worker's contract names, renames
events and properties by the mapping table's `segment` section, and keeps each `messageId`, so a message
that is also delivered live has the same id on both paths.
"""

from __future__ import annotations

from typing import Any

from ..timeutil import parse_timestamp
from .mapping_table import VendorMapping
from .segment_events import Rejected, renamed

KEPT_FIELDS = ("type", "event", "name", "messageId", "userId", "anonymousId", "timestamp", "properties", "traits",
               "context", "previousId")
TYPES = ("track", "identify", "page", "screen", "alias")


class SegmentArchiveMapping:
    format = "segment"
    columns: tuple[str, ...] | None = None

    def __init__(self, mapping: VendorMapping) -> None:
        self.mapping = mapping

    def row_time(self, row: dict[str, Any]) -> int:
        raw = row.get("timestamp")
        if raw is None:
            raise Rejected("bad_timestamp", "the message has no timestamp")
        try:
            return parse_timestamp(raw)
        except ValueError as exc:
            raise Rejected("bad_timestamp", str(exc)) from None

    def events(self, row: dict[str, Any], ts_ms: int) -> list[dict[str, Any]]:
        kind = row.get("type")
        if kind not in TYPES:
            why = ("an erasure request is not history: send it with `stream-app erase`" if kind == "delete"
                   else f"an import takes {', '.join(TYPES)}")
            raise Rejected("unsupported_type", f"type {str(kind)[:40]!r}: {why}")
        message_id = row.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            raise Rejected("missing_message_id", "the message has no messageId")
        event = {key: row[key] for key in KEPT_FIELDS if row.get(key) is not None}
        if kind != "track":
            return [event]
        name = row.get("event")
        rule = self.mapping.rule(name) if isinstance(name, str) and name else None
        if rule is None:
            raise Rejected("unmapped_event", f"track event {str(name)[:80]!r} has no entry in the mapping table (segment.events)")
        if rule.exclude:
            raise Rejected("excluded_event", f"track event {name!r} is excluded by the mapping table")
        properties = event.get("properties") if isinstance(event.get("properties"), dict) else {}
        renames = self.mapping.renames(rule)
        if renames:
            event["properties"] = renamed(properties, renames, keep_unlisted=True)
        if rule.type == "track":
            event["event"] = rule.event
        else:  # a rule may turn a track event into a page or identify event
            event.pop("event", None)
            event["type"] = rule.type
            page_name = event.get("properties", {}).get(rule.name_from) if rule.name_from else None
            if isinstance(page_name, str):
                event["name"] = page_name
        return [event]
