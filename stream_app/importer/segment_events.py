"""What every vendor mapping builds: Segment-spec events, derived message ids, and row rejections."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any
from urllib.parse import urlsplit

from ..timeutil import format_timestamp


class Rejected(Exception):
    """A row that cannot be mapped: one machine reason (counted in the summary) and a detail for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def mapped_rule(mapping: Any, name: Any, vendor: str, what: str) -> Any:
    """The mapping table's rule for a row's event name (a `VendorMapping.rule`), or the row's rejection:
    no name, a name the table does not list, or a name it excludes."""
    if not isinstance(name, str) or not name:
        raise Rejected("malformed_row", f"the {what} has no event name")
    rule = mapping.rule(name)
    if rule is None:
        raise Rejected("unmapped_event", f"{vendor} event {name!r} has no entry in the mapping table ({mapping.format}.events)")
    if rule.exclude:
        raise Rejected("excluded_event", f"{vendor} event {name!r} is excluded by the mapping table")
    return rule


def derived_message_id(prefix: str, identifying: Any) -> str:
    """`<prefix>-` and 32 hex digits of BLAKE2b over the canonical JSON of the identifying fields (keys
    sorted, no spaces): equal fields give the same id whatever file type they were read from."""
    canonical = json.dumps(identifying, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"{prefix}-{hashlib.blake2b(canonical.encode('utf-8'), digest_size=16).hexdigest()}"


def segment_event(kind: str, *, message_id: str, ts_ms: int, user_id: str | None, anonymous_id: str | None,
                  event: str | None = None, name: str | None = None, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    """One Segment-spec event, its keys always in the same order (the JSON lines are compared as text)."""
    doc: dict[str, Any] = {"type": kind}
    if kind == "track":
        doc["event"] = event
    elif name:
        doc["name"] = name
    doc["messageId"] = message_id
    if user_id:
        doc["userId"] = user_id
    if anonymous_id:
        doc["anonymousId"] = anonymous_id
    doc["timestamp"] = format_timestamp(ts_ms)
    doc["traits" if kind == "identify" else "properties"] = properties or {}
    return doc


def renamed(values: dict[str, Any], renames: dict[str, str], keep_unlisted: bool) -> dict[str, Any]:
    """``values`` with keys renamed; unlisted keys kept or left out. A listed key wins over an unlisted
    one that already has the target name."""
    out: dict[str, Any] = {}
    if keep_unlisted:
        out.update((key, value) for key, value in values.items() if key not in renames)
    for source, target in renames.items():
        if source in values and values[source] is not None:
            out[target] = values[source]
    return out


def with_url_parts(properties: dict[str, Any]) -> dict[str, Any]:
    """A page's `path` (and `search`) from its `url` when not given (the catalog reads `properties.path`)."""
    url = properties.get("url")
    if isinstance(url, str) and url and "path" not in properties:
        parts = urlsplit(url)
        properties["path"] = parts.path or "/"
        if parts.query and "search" not in properties:
            properties["search"] = "?" + parts.query
    return properties


def plain_number(value: Any) -> int | float | None:
    """An int or a finite float, from a number or its text (BigQuery's JSON export writes INT64 as text)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return number if math.isfinite(number) else None
    return None
