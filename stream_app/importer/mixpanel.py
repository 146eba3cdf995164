"""Mixpanel's raw export -> Segment-spec events, by the mapping table's `mixpanel` section.

A line of the export (https://developer.mixpanel.com/reference/raw-event-export) is
`{"event": NAME, "properties": {"time": ..., "distinct_id": ..., "$insert_id": ..., ...}}`. `time` is in
seconds, or in milliseconds when the export was asked for with `time_in_ms=true` (`--time-in-ms`).
The export is not deduplicated: `$insert_id` is the messageId, and the import keeps one event per id.
"""

from __future__ import annotations

from typing import Any

from .mapping_table import VendorMapping
from .segment_events import Rejected, mapped_rule, plain_number, renamed, segment_event, with_url_parts

# identity and time: they become the event's userId/anonymousId, messageId and timestamp, not properties
IDENTITY_PROPERTIES = frozenset({"distinct_id", "time", "$insert_id", "$user_id", "$device_id"})
RESERVED_PREFIXES = ("$", "mp_")
ANONYMOUS_PREFIX = "$device:"  # simplified ID merge: a distinct_id of a device not yet identified
# beyond this, a `time` in seconds would be after the year 5000: it was milliseconds
SECONDS_LIMIT = 10**11


class MixpanelMapping:
    format = "mixpanel"
    columns: tuple[str, ...] | None = None

    def __init__(self, mapping: VendorMapping, time_in_ms: bool = False) -> None:
        self.mapping = mapping
        self.time_in_ms = time_in_ms

    def row_time(self, row: dict[str, Any]) -> int:
        raw = _properties(row).get("time")
        if raw is None:
            raise Rejected("bad_timestamp", "properties.time is missing (Mixpanel's export has it in seconds since 1970)")
        number = plain_number(raw)
        if number is None or number < 0:
            raise Rejected("bad_timestamp", f"properties.time {str(raw)[:40]!r} is not a time since 1970")
        if self.time_in_ms:
            return int(number)
        if number >= SECONDS_LIMIT:
            raise Rejected("bad_timestamp", f"properties.time {raw} is not in seconds: for an export made with "
                                            "time_in_ms=true, pass --time-in-ms")
        return int(round(number * 1000))

    def events(self, row: dict[str, Any], ts_ms: int) -> list[dict[str, Any]]:
        name = row.get("event")
        rule = mapped_rule(self.mapping, name, "Mixpanel", "line")
        source = _properties(row)
        distinct_id = source.get("distinct_id")
        distinct = str(distinct_id).strip() if distinct_id is not None else ""
        if not distinct:
            raise Rejected("missing_user_id", "properties.distinct_id is missing or empty")
        insert_id = source.get("$insert_id")
        if not isinstance(insert_id, str) or not insert_id.strip():
            raise Rejected("missing_insert_id", "properties.$insert_id is missing: it is the event's messageId")
        own = {key: value for key, value in source.items()
               if key not in IDENTITY_PROPERTIES and (key in self.mapping.renames(rule) or not key.startswith(RESERVED_PREFIXES))}
        properties = renamed(own, self.mapping.renames(rule), keep_unlisted=True)
        if rule.type == "page":
            with_url_parts(properties)
        anonymous = distinct.startswith(ANONYMOUS_PREFIX)
        page_name = properties.get(rule.name_from) if rule.name_from else None
        return [segment_event(rule.type, message_id=insert_id, ts_ms=ts_ms, user_id=None if anonymous else distinct,
                              anonymous_id=distinct if anonymous else None, event=rule.event,
                              name=page_name if isinstance(page_name, str) else None, properties=properties)]


def _properties(row: dict[str, Any]) -> dict[str, Any]:
    properties = row.get("properties")
    if not isinstance(properties, dict):
        raise Rejected("malformed_row", "the line has no `properties` object (not a Mixpanel raw export line?)")
    return properties
