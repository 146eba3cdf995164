"""Compile the `custom_segments` list of a definitions file into a :class:`CustomCatalog`.

Every node is checked against the grammar below, and every error names the file, line and column and
says what was expected. Nothing is evaluated: the result is a tree of frozen dataclasses.

    segment   := {id: <name>, when: condition}
    condition := {all: [condition, ...]} | {any: [condition, ...]} | {not: condition}
               | {<measure>: {event: <filter>, where: {<property>: <value>}, property: <name>, window: <duration>},
                  <comparator>: <threshold>}
               | {not_followed_by: {event: <filter>, then: <filter>, within: <duration>, window: <duration>}}
    measure   := count | sum | active_days | first | last | last_value
    comparator:= at_least | at_most | above | below | equals
"""

from __future__ import annotations

import re
from typing import Any, Callable

import yaml

from .custom import Compare, Condition, CustomCatalog, CustomSegment, Filter, Logic, Measure, NotFollowedBy

MEASURES = ("count", "sum", "active_days", "first", "last", "last_value")
COMPARATORS = ("at_least", "at_most", "above", "below", "equals")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")


class _Compiler:
    def __init__(self, path: str, error: Callable[[str, yaml.Node | None, str], Exception],
                 scalar: Callable[[yaml.Node], Any], duration: Callable[[str], int], max_window_ms: int,
                 reserved: set[str]) -> None:
        self.path, self.error, self.scalar, self.duration = path, error, scalar, duration
        self.max_window_ms = max_window_ms
        self.reserved = reserved

    def fail(self, node: yaml.Node, where: str, message: str) -> Exception:
        return self.error(self.path, node, f"{where}: {message}")

    def mapping(self, node: yaml.Node, where: str, allowed: tuple[str, ...]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, f"expected a mapping with keys {', '.join(allowed)}")
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key not in allowed:
                raise self.fail(key_node, f"{where}.{key}", f"unknown key; expected one of {', '.join(allowed)}")
            if key in found:
                raise self.fail(key_node, f"{where}.{key}", "defined twice")
            found[key] = (key_node, value_node)
        return found

    def window(self, node: yaml.Node, where: str) -> int:
        try:
            millis = self.duration(str(node.value)) if isinstance(node, yaml.ScalarNode) else -1
        except ValueError as exc:
            raise self.fail(node, where, str(exc)) from None
        if not 0 < millis <= self.max_window_ms:
            raise self.fail(node, where, f"expected a duration between 1ms and 365d, got {getattr(node, 'value', node.id)!r}")
        return millis

    def text(self, node: yaml.Node, where: str) -> str:
        value = self.scalar(node)
        if not isinstance(value, str) or not value:
            raise self.fail(node, where, f"expected a non-empty text, got {getattr(node, 'value', node.id)!r}")
        return value

    # -- grammar ----------------------------------------------------------------------------------
    def segments(self, node: yaml.Node, where: str) -> CustomCatalog:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, where, "expected a list of {id, when} segments")
        segments, seen = [], set()
        for index, item in enumerate(node.value):
            here = f"{where}[{index}]"
            fields = self.mapping(item, here, ("id", "when"))
            for key in ("id", "when"):
                if key not in fields:
                    raise self.fail(item, here, f"missing {key}")
            id_node = fields["id"][1]
            segment_id = self.text(id_node, f"{here}.id")
            if not _ID.match(segment_id):
                raise self.fail(id_node, f"{here}.id", f"expected a lower-case identifier (letters, digits, _), got {segment_id!r}")
            if segment_id in self.reserved or segment_id in seen:
                raise self.fail(id_node, f"{here}.id", f"{segment_id!r} is already a segment id; choose another")
            seen.add(segment_id)
            segments.append(CustomSegment(segment_id, self.condition(fields["when"][1], f"{here}.when")))
        return CustomCatalog.compile(tuple(segments))

    def condition(self, node: yaml.Node, where: str) -> Condition:
        keys = [str(k.value) for k, _ in node.value] if isinstance(node, yaml.MappingNode) else []
        if "all" in keys or "any" in keys:
            op = "all" if "all" in keys else "any"
            fields = self.mapping(node, where, (op,))
            items_node = fields[op][1]
            if not isinstance(items_node, yaml.SequenceNode) or not items_node.value:
                raise self.fail(items_node, f"{where}.{op}", "expected a non-empty list of conditions")
            return Logic(op, tuple(self.condition(item, f"{where}.{op}[{i}]") for i, item in enumerate(items_node.value)))
        if "not" in keys:
            fields = self.mapping(node, where, ("not",))
            return Logic("not", (self.condition(fields["not"][1], f"{where}.not"),))
        if "not_followed_by" in keys:
            fields = self.mapping(node, where, ("not_followed_by",))
            return self.not_followed_by(fields["not_followed_by"][1], f"{where}.not_followed_by")
        measures = [k for k in keys if k in MEASURES]
        if len(measures) != 1:
            raise self.fail(node, where, "expected a condition: all, any, not, not_followed_by, or one measure "
                                         f"({', '.join(MEASURES)}) with one comparator ({', '.join(COMPARATORS)})")
        fields = self.mapping(node, where, (measures[0], *COMPARATORS))
        comparators = [k for k in fields if k in COMPARATORS]
        if len(comparators) != 1:
            raise self.fail(node, where, f"expected exactly one comparator ({', '.join(COMPARATORS)}) next to {measures[0]}")
        measure = self.measure(measures[0], fields[measures[0]][1], f"{where}.{measures[0]}")
        op = comparators[0]
        return Compare(measure, op, self.threshold(measure, op, fields[op][1], f"{where}.{op}"))

    def event_filter(self, node: yaml.Node, where: str, where_node: yaml.Node | None) -> Filter:
        event = self.text(node, where)
        conditions: list[tuple[str, Any]] = []
        if where_node is not None:
            if not isinstance(where_node, yaml.MappingNode):
                raise self.fail(where_node, where.rsplit(".", 1)[0] + ".where", "expected a mapping of property to value")
            for key_node, value_node in where_node.value:
                value = self.scalar(value_node)
                if value is None and not isinstance(value_node, yaml.ScalarNode):
                    raise self.fail(value_node, f"{where}.where.{key_node.value}", "expected a single value")
                conditions.append((str(key_node.value), value))
        return Filter(event, tuple(sorted(conditions, key=lambda c: c[0])))

    def measure(self, kind: str, node: yaml.Node, where: str) -> Measure:
        needs_property = kind in ("sum", "last_value")
        allowed = ("event", "where", "window", "property") if needs_property else ("event", "where", "window")
        fields = self.mapping(node, where, allowed)
        for key in ("event", "window") + (("property",) if needs_property else ()):
            if key not in fields:
                raise self.fail(node, where, f"missing {key}")
        flt = self.event_filter(fields["event"][1], f"{where}.event", fields.get("where", (None, None))[1])
        prop = self.text(fields["property"][1], f"{where}.property") if needs_property else None
        return Measure(kind, flt, self.window(fields["window"][1], f"{where}.window"), prop)

    def threshold(self, measure: Measure, op: str, node: yaml.Node, where: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, where, "expected a single value")
        if measure.kind in ("first", "last"):
            if op == "equals":
                raise self.fail(node, where, "an age is compared with at_least, at_most, above or below")
            return self.window(node, where)
        value = self.scalar(node)
        if op == "equals" and measure.kind == "last_value":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(node, where, f"expected a number, got {node.value!r}")
        return value

    def not_followed_by(self, node: yaml.Node, where: str) -> NotFollowedBy:
        fields = self.mapping(node, where, ("event", "then", "within", "window"))
        for key in ("event", "then", "within", "window"):
            if key not in fields:
                raise self.fail(node, where, f"missing {key}")
        first = self.event_filter(fields["event"][1], f"{where}.event", None)
        then = self.event_filter(fields["then"][1], f"{where}.then", None)
        within = self.window(fields["within"][1], f"{where}.within")
        window = self.window(fields["window"][1], f"{where}.window")
        if within >= window:
            raise self.fail(fields["within"][1], f"{where}.within", "expected a duration shorter than the window")
        return NotFollowedBy(first, then, within, window)


def compile_custom_segments(path: str, node: yaml.Node, error: Callable[..., Exception], scalar: Callable[[yaml.Node], Any],
                            duration: Callable[[str], int], max_window_ms: int, reserved: set[str]) -> CustomCatalog:
    return _Compiler(path, error, scalar, duration, max_window_ms, reserved).segments(node, "custom_segments")
