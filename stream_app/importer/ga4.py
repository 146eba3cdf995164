"""GA4's BigQuery export (one row per event) -> Segment-spec events, by the mapping table's `ga4` section.

Schema: https://support.google.com/analytics/answer/7029846. The same row read from JSON lines (where
BigQuery writes INT64 values as text, and NULLs may be left out), Avro or Parquet (numbers, NULLs present)
maps to the same events with the same message ids: values are normalized first (`normalized`).
"""

from __future__ import annotations

from typing import Any

from .mapping_table import VendorMapping
from .segment_events import Rejected, mapped_rule, derived_message_id, plain_number, renamed, segment_event, with_url_parts

# the export's INT64 columns (by field name, at any depth): numbers in Avro and Parquet, text in JSON
INT64_FIELDS = frozenset({
    "event_timestamp", "event_previous_timestamp", "event_bundle_sequence_id", "event_server_timestamp_offset",
    "user_first_touch_timestamp", "int_value", "set_timestamp_micros", "time_zone_offset_seconds", "quantity",
    "total_item_quantity", "unique_items", "batch_event_index", "batch_page_id", "batch_ordering_id",
    "engagement_time_msec",
})
FLOAT_FIELDS = frozenset({
    "float_value", "double_value", "event_value_in_usd", "price", "price_in_usd", "item_revenue", "item_revenue_in_usd",
    "item_refund", "item_refund_in_usd", "purchase_revenue", "purchase_revenue_in_usd", "refund_value",
    "refund_value_in_usd", "shipping_value", "shipping_value_in_usd", "tax_value", "tax_value_in_usd",
})
# the fields that identify an event: the message id is derived from them (docs/import.md)
IDENTIFYING_FIELDS = (
    "stream_id", "user_id", "user_pseudo_id", "event_timestamp", "event_name", "event_bundle_sequence_id",
    "batch_event_index", "batch_page_id", "batch_ordering_id", "event_params", "items", "ecommerce",
)
NOT_SET = "(not set)"  # GA4's text for a missing dimension


def normalized(value: Any, key: str | None = None) -> Any:
    """NULLs, empty arrays and empty records left out, INT64 fields as int and FLOAT fields as float, at
    any depth."""
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            if item is None:
                continue
            if isinstance(item, (dict, list, tuple)):
                item = normalized(item, name)
                if not item:
                    continue
            elif name in INT64_FIELDS or name in FLOAT_FIELDS:
                item = _number(item, name)
            out[name] = item
        return out
    if isinstance(value, (list, tuple)):
        return [normalized(item) if isinstance(item, (dict, list, tuple)) else item for item in value]
    return _number(value, key) if key in INT64_FIELDS or key in FLOAT_FIELDS else value


def _number(value: Any, key: str) -> Any:
    """An INT64 field as int, a FLOAT field as float (from text too); anything else as it is."""
    wanted = int if key in INT64_FIELDS else float
    if type(value) is wanted:
        return value
    if type(value) is str:  # BigQuery's JSON: INT64 as text
        try:
            return wanted(value)
        except ValueError:
            pass
    number = plain_number(value)
    return value if number is None else wanted(number)


def identifying_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The row's identifying fields, normalized (the rest of the row is not read)."""
    return normalized({field: row.get(field) for field in IDENTIFYING_FIELDS})


def _param_values(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """event_params [{key, value: {string_value | int_value | double_value | float_value}}] -> {key: value}."""
    values: dict[str, Any] = {}
    for entry in entries:
        key, value = entry.get("key"), entry.get("value") or {}
        if not isinstance(key, str):
            continue
        for field in ("string_value", "int_value", "double_value", "float_value"):
            if value.get(field) is not None:
                values[key] = value[field]
                break
    return values


def _set(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value != NOT_SET and value != ""}


class Ga4Mapping:
    format = "ga4"
    columns: tuple[str, ...] | None = IDENTIFYING_FIELDS  # everything it reads is among them

    def __init__(self, mapping: VendorMapping) -> None:
        self.mapping = mapping

    def row_time(self, row: dict[str, Any]) -> int:
        raw = row.get("event_timestamp")
        if raw is None:
            raise Rejected("bad_timestamp", "event_timestamp is missing (GA4's export has it in microseconds since 1970)")
        micros = plain_number(raw)
        if not isinstance(micros, int) or micros < 0:
            raise Rejected("bad_timestamp", f"event_timestamp {str(row.get('event_timestamp'))[:40]!r} is not microseconds since 1970")
        return micros // 1000

    def events(self, row: dict[str, Any], ts_ms: int) -> list[dict[str, Any]]:
        name = row.get("event_name")
        rule = mapped_rule(self.mapping, name, "GA4", "row")
        user_id, pseudo_id = _id_text(row.get("user_id")), _id_text(row.get("user_pseudo_id"))
        if not user_id and not pseudo_id:
            raise Rejected("missing_user_id", "neither user_id nor user_pseudo_id is set")
        row = identifying_fields(row)  # they include everything mapped: params, items, ecommerce
        message_id = derived_message_id("ga4", row)
        properties = _set(renamed(_param_values(row.get("event_params") or []), self.mapping.renames(rule), keep_unlisted=False))
        properties.update(_set(renamed(row.get("ecommerce") or {}, rule.ecommerce, keep_unlisted=False)))
        products = [_set(renamed(item, self.mapping.item_properties, keep_unlisted=False)) for item in row.get("items") or []]

        def event(mid: str, props: dict[str, Any]) -> dict[str, Any]:
            page_name = props.get(rule.name_from) if rule.name_from else None
            return segment_event(rule.type, message_id=mid, ts_ms=ts_ms, user_id=user_id, anonymous_id=pseudo_id,
                                 event=rule.event, name=page_name if isinstance(page_name, str) else None, properties=props)

        if rule.type == "page":
            with_url_parts(properties)
        if rule.items == "each":
            if not products:
                raise Rejected("no_items", f"GA4 event {name!r} without items: nothing to map to one {rule.event!r} per item")
            properties.pop("value", None)  # the row's total over all its items; each event carries its own item
            return [event(f"{message_id}-{index}", {**properties, **product}) for index, product in enumerate(products)]
        if rule.items == "products" and products:
            properties["products"] = products
        return [event(message_id, properties)]


def _id_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
