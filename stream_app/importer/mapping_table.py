"""The editable mapping table: which vendor event becomes which Segment-spec event.

The shipped table is `mapping.yaml` beside this module (package data); `--mapping FILE` is laid over it
(see the file's header). The result is checked here, so that a typo fails before any row is read, with
the path of the bad entry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

FORMATS = ("segment", "ga4", "mixpanel", "csv")
# keys whose dict values are merged entry by entry when a user's file is laid over the shipped one
MERGED_KEYS = ("events", "properties", "item_properties", "columns")
RULE_KEYS = {"event", "type", "name_from", "exclude", "properties", "items", "ecommerce"}
RULE_TYPES = ("track", "page", "identify")
ITEMS_MODES = ("each", "products", "ignore")


class MappingError(ValueError):
    """The mapping table is not usable; the message names the entry."""


@dataclass(frozen=True)
class EventRule:
    type: str  # track | page | identify
    event: str | None = None  # the track event's name
    name_from: str | None = None  # page: the mapped property that gives the page's name
    exclude: bool = False
    properties: dict[str, str] = field(default_factory=dict)  # renames for this event, over the vendor's
    items: str = "ignore"  # GA4: each (one event per item) | products (properties.products) | ignore
    ecommerce: dict[str, str] = field(default_factory=dict)  # GA4: ecommerce record field -> property


@dataclass(frozen=True)
class VendorMapping:
    format: str
    other_events: str  # keep | reject
    events: dict[str, EventRule]
    properties: dict[str, str]
    item_properties: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    numbers: frozenset[str] = frozenset()

    def rule(self, name: str) -> EventRule | None:
        """The rule for an event name: listed, or `keep` as a track event of that name, or None (reject)."""
        rule = self.events.get(name)
        if rule is not None:
            return rule
        return EventRule(type="track", event=name) if self.other_events == "keep" else None

    def renames(self, rule: EventRule) -> dict[str, str]:
        return {**self.properties, **rule.properties} if rule.properties else self.properties


@dataclass(frozen=True)
class MappingTable:
    vendors: dict[str, VendorMapping]
    digest: str  # of the effective table: part of an import's identity

    def for_format(self, name: str) -> VendorMapping:
        return self.vendors[name]


def shipped_table_text() -> str:
    return resources.files(__package__).joinpath("mapping.yaml").read_text(encoding="utf-8")


def load_mapping(override: Path | None = None) -> MappingTable:
    """The shipped table, with ``override`` laid over it when given."""
    raw = _parse(shipped_table_text(), "mapping.yaml (shipped)")
    if override is not None:
        try:
            text = override.read_text(encoding="utf-8")
        except OSError as exc:
            raise MappingError(f"--mapping {override}: {exc.strerror or exc}") from None
        raw = _overlay(raw, _parse(text, str(override)), str(override))
    vendors = {name: _vendor(name, raw.get(name) or {}) for name in FORMATS}
    digest = hashlib.blake2b(json.dumps(raw, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
    return MappingTable(vendors, digest)


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{where}: not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise MappingError(f"{where}: the top level must be a mapping of formats ({', '.join(FORMATS)})")
    unknown = set(doc) - set(FORMATS) - {"version"}
    if unknown:
        raise MappingError(f"{where}: unknown section(s) {sorted(unknown)}; the sections are {', '.join(FORMATS)}")
    return doc


def _overlay(base: dict[str, Any], top: dict[str, Any], where: str) -> dict[str, Any]:
    merged = dict(base)
    for vendor, section in top.items():
        if vendor == "version":
            continue
        if not isinstance(section, dict):
            raise MappingError(f"{where}: {vendor} must be a mapping")
        result = dict(base.get(vendor) or {})
        for key, value in section.items():
            if key in MERGED_KEYS and isinstance(value, dict):
                entries = dict(result.get(key) or {})
                for entry, entry_value in value.items():
                    if entry_value is None:
                        entries.pop(entry, None)
                    else:
                        entries[entry] = entry_value
                result[key] = entries
            else:
                result[key] = value
        merged[vendor] = result
    return merged


def _renames(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        raise MappingError(f"{where} must map names to names (SOURCE: TARGET)")
    return dict(value)


def _rule(value: Any, where: str) -> EventRule:
    if not isinstance(value, dict):
        raise MappingError(f"{where} must be a mapping such as {{event: Product Viewed}}")
    unknown = set(value) - RULE_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(RULE_KEYS))}")
    if value.get("exclude") is True:
        return EventRule(type="track", exclude=True)
    kind = value.get("type", "track")
    if kind not in RULE_TYPES:
        raise MappingError(f"{where}.type must be one of {', '.join(RULE_TYPES)}, not {kind!r}")
    event = value.get("event")
    if kind == "track" and (not isinstance(event, str) or not event.strip()):
        raise MappingError(f"{where}: a track rule needs `event: NAME`")
    if kind != "track" and event is not None:
        raise MappingError(f"{where}: `event` is for track rules; a {kind} rule names its page with `name_from`")
    name_from = value.get("name_from")
    if name_from is not None and not isinstance(name_from, str):
        raise MappingError(f"{where}.name_from must be a property name")
    items = value.get("items", "ignore")
    if items not in ITEMS_MODES:
        raise MappingError(f"{where}.items must be one of {', '.join(ITEMS_MODES)}, not {items!r}")
    return EventRule(type=kind, event=event, name_from=name_from, properties=_renames(value.get("properties"), f"{where}.properties"),
                     items=items, ecommerce=_renames(value.get("ecommerce"), f"{where}.ecommerce"))


def _vendor(name: str, section: dict[str, Any]) -> VendorMapping:
    where = f"mapping {name}"
    other = section.get("other_events", "keep")
    if other not in ("keep", "reject"):
        raise MappingError(f"{where}.other_events must be keep or reject, not {other!r}")
    events_raw = section.get("events") or {}
    if not isinstance(events_raw, dict):
        raise MappingError(f"{where}.events must map event names to rules")
    events = {str(event): _rule(rule, f"{where}.events.{event}") for event, rule in events_raw.items()}
    numbers = section.get("numbers") or []
    if not isinstance(numbers, list) or not all(isinstance(n, str) for n in numbers):
        raise MappingError(f"{where}.numbers must be a list of column names")
    return VendorMapping(format=name, other_events=other, events=events,
                         properties=_renames(section.get("properties"), f"{where}.properties"),
                         item_properties=_renames(section.get("item_properties"), f"{where}.item_properties"),
                         columns=_renames(section.get("columns"), f"{where}.columns"), numbers=frozenset(numbers))
