"""User-defined segments: conditions over windowed aggregates, written in the definitions file.

A segment is a condition tree (`all`, `any`, `not`) whose leaves compare a measure of the user's
events with a threshold, or say "A not followed by B within N":

    custom_segments:
      - id: window_shopper
        when:
          all:
            - {count: {event: Product Viewed, window: 7d}, at_least: 5}
            - not: {count: {event: Order Completed, window: 30d}, at_least: 1}

Measures over the events matching a filter (`event`, plus optional `where` property equalities) in a
window of up to 365 d: `count`, `sum` (of a numeric property), `active_days` (distinct UTC dates),
`first` and `last` (the age of the first / latest such event, compared with durations), and
`last_value` (of a property). Aggregates live in sparse time buckets (`state/buckets.py`); the rules
are compiled once when the file is loaded (`segments/custom_definitions.py`), nothing is `eval`ed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Union

from ..events import Event
from ..state import buckets
from ..state.profile import Profile
from ..timeutil import DAY_MS

SERIES = "cs"  # profile.extra key: series key -> buckets
LATEST = "cl"  # profile.extra key: last_value key -> [ts, value]


@dataclass(frozen=True)
class Filter:
    """`event`: a track event name, `page` / `screen` (any), `page:<name>`, or `*` (any activity)."""

    event: str
    where: tuple[tuple[str, Any], ...] = ()

    def matches(self, event: Event) -> bool:
        wanted = self.event
        if wanted == "*":
            ok = event.is_activity
        elif wanted in ("page", "screen"):
            ok = event.type == wanted
        elif wanted.startswith(("page:", "screen:")):
            kind, _, name = wanted.partition(":")
            ok = event.type == kind and event.name == name
        else:
            ok = event.type == "track" and event.name == wanted
        return ok and all(event.props.get(key) == value for key, value in self.where)


def _key(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=5).hexdigest()


@dataclass(frozen=True)
class Measure:
    kind: str  # count | sum | active_days | first | last | last_value
    filter: Filter
    window_ms: int
    prop: str | None = None

    @property
    def resolution(self) -> int:
        return buckets.resolution_for(self.window_ms)

    @property
    def series_key(self) -> str:
        return _key("series", self.filter, self.prop if self.kind == "sum" else None, self.resolution)

    @property
    def latest_key(self) -> str:
        return _key("latest", self.filter, self.prop)


@dataclass(frozen=True)
class Compare:
    measure: Measure
    op: str  # at_least | at_most | above | below | equals
    threshold: Any  # a number, a duration in ms (first/last), or any scalar (equals)


@dataclass(frozen=True)
class Logic:
    op: str  # all | any | not
    items: tuple["Condition", ...]


@dataclass(frozen=True)
class NotFollowedBy:
    """In the window, an A that is at least `within` old with no B from it to `within` after it."""

    first: Filter
    then: Filter
    within_ms: int
    window_ms: int

    @property
    def first_measure(self) -> Measure:
        return Measure("count", self.first, self.window_ms)

    @property
    def then_measure(self) -> Measure:
        return Measure("count", self.then, self.window_ms)


Condition = Union[Compare, Logic, NotFollowedBy]


@dataclass(frozen=True)
class CustomSegment:
    id: str
    condition: Condition


@dataclass(frozen=True)
class CustomCatalog:
    segments: tuple[CustomSegment, ...]
    # derived once: what to record for every event, and how long to keep it
    series: dict[str, tuple[Filter, str | None, int, int]] = field(default_factory=dict)  # key -> (filter, prop, resolution, keep)
    latest: dict[str, tuple[Filter, str | None]] = field(default_factory=dict)

    @classmethod
    def compile(cls, segments: tuple[CustomSegment, ...]) -> "CustomCatalog":
        series: dict[str, tuple[Filter, str | None, int, int]] = {}
        latest: dict[str, tuple[Filter, str | None]] = {}

        def visit(condition: Condition) -> None:
            if isinstance(condition, Logic):
                for item in condition.items:
                    visit(item)
            elif isinstance(condition, NotFollowedBy):
                for measure in (condition.first_measure, condition.then_measure):
                    record(measure)
            elif condition.measure.kind == "last_value":
                latest[condition.measure.latest_key] = (condition.measure.filter, condition.measure.prop)
            else:
                record(condition.measure)

        def record(measure: Measure) -> None:
            key = measure.series_key
            prop = measure.prop if measure.kind == "sum" else None
            keep = max(series[key][3], measure.window_ms) if key in series else measure.window_ms
            series[key] = (measure.filter, prop, measure.resolution, keep)

        for segment in segments:
            visit(segment.condition)
        return cls(segments, series, latest)

    @property
    def properties(self) -> frozenset[str]:
        """Event properties the segments read (the decoder keeps these besides the catalog's own)."""
        names: set[str] = set()
        readers = [(flt, prop) for flt, prop, _resolution, _keep in self.series.values()] + list(self.latest.values())
        for flt, prop in readers:
            names.update(key for key, _ in flt.where)
            if prop:
                names.add(prop)
        return frozenset(names)

    @property
    def ids(self) -> set[str]:
        return {segment.id for segment in self.segments}


# -- state ----------------------------------------------------------------------------------------
def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


def apply_event(profile: Profile, event: Event, catalog: CustomCatalog) -> None:
    for key, (flt, prop, resolution, _keep) in catalog.series.items():
        if flt.matches(event):
            store = profile.extra.setdefault(SERIES, {})
            buckets.add(store.setdefault(key, []), event.ts, _number(event.props.get(prop)) if prop else 0.0, resolution)
    for key, (flt, prop) in catalog.latest.items():
        if flt.matches(event) and prop is not None and prop in event.props:
            store = profile.extra.setdefault(LATEST, {})
            current = store.get(key)
            if current is None or current[0] <= event.ts:
                store[key] = [event.ts, event.props[prop]]


def expire(profile: Profile, t: int, catalog: CustomCatalog | None) -> None:
    store = profile.extra.get(SERIES)
    if store:
        for key in list(store):
            spec = catalog.series.get(key) if catalog is not None else None
            kept = buckets.expire(store[key], t, spec[3]) if spec is not None else []
            if kept:
                store[key] = kept
            else:
                del store[key]  # expired, or no definition reads it any more
        if not store:
            del profile.extra[SERIES]
    latest = profile.extra.get(LATEST)
    if latest:
        for key in [k for k in latest if catalog is None or k not in catalog.latest]:
            del latest[key]
        if not latest:
            del profile.extra[LATEST]


# -- evaluation -----------------------------------------------------------------------------------
def _series(profile: Profile, measure: Measure, t: int) -> list[buckets.Bucket]:
    return buckets.in_window(profile.extra.get(SERIES, {}).get(measure.series_key, []), t, measure.window_ms)


def measure_value(profile: Profile, measure: Measure, t: int) -> Any:
    if measure.kind == "last_value":
        latest = profile.extra.get(LATEST, {}).get(measure.latest_key)
        return latest[1] if latest is not None and t - measure.window_ms < latest[0] <= t else None
    found = _series(profile, measure, t)
    if measure.kind == "count":
        return sum(b[1] for b in found)
    if measure.kind == "sum":
        return sum(b[2] for b in found)
    if measure.kind == "active_days":
        return len({b[0] // DAY_MS for b in found})
    if not found:
        return None
    return t - (found[0][0] if measure.kind == "first" else found[-1][0])  # age in ms


def _compare(value: Any, op: str, threshold: Any) -> bool:
    if value is None:
        return False
    if op == "equals":
        return value == threshold
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if op == "at_least":
        return value >= threshold
    if op == "at_most":
        return value <= threshold
    if op == "above":
        return value > threshold
    return value < threshold  # below


def holds(condition: Condition, profile: Profile, t: int) -> bool:
    if isinstance(condition, Logic):
        if condition.op == "all":
            return all(holds(item, profile, t) for item in condition.items)
        if condition.op == "any":
            return any(holds(item, profile, t) for item in condition.items)
        return not holds(condition.items[0], profile, t)
    if isinstance(condition, NotFollowedBy):
        return _unanswered(condition, profile, t) is not None
    return _compare(measure_value(profile, condition.measure, t), condition.op, condition.threshold)


def _unanswered(condition: NotFollowedBy, profile: Profile, t: int) -> int | None:
    """The first A in the window that is at least `within` old and that no B followed in time."""
    answers = [b[0] for b in _series(profile, condition.then_measure, t)]
    for start, *_ in _series(profile, condition.first_measure, t):
        deadline = start + condition.within_ms
        if deadline <= t and not any(start <= b <= deadline for b in answers):
            return start
    return None


def memberships(profile: Profile, t: int, cfg: Any) -> dict[str, str]:
    catalog: CustomCatalog | None = cfg.custom
    if catalog is None:
        return {}
    return {segment.id: segment.id for segment in catalog.segments if holds(segment.condition, profile, t)}


def _moments(condition: Condition, profile: Profile) -> list[int]:
    """Every moment at which time alone may change the condition (a window edge or an age threshold)."""
    if isinstance(condition, Logic):
        return [m for item in condition.items for m in _moments(item, profile)]
    if isinstance(condition, NotFollowedBy):
        starts = [b[0] for b in profile.extra.get(SERIES, {}).get(condition.first_measure.series_key, [])]
        return [s + condition.within_ms for s in starts] + [s + condition.window_ms for s in starts]
    measure = condition.measure
    if measure.kind == "last_value":
        latest = profile.extra.get(LATEST, {}).get(measure.latest_key)
        return [latest[0] + measure.window_ms] if latest is not None else []
    starts = [b[0] for b in profile.extra.get(SERIES, {}).get(measure.series_key, [])]
    moments = [s + measure.window_ms for s in starts]
    if measure.kind in ("first", "last"):
        offset = condition.threshold + (1 if condition.op in ("above", "at_most") else 0)
        moments += [s + int(offset) for s in starts]
    return moments


def next_change(profile: Profile, cfg: Any) -> int | None:
    catalog: CustomCatalog | None = cfg.custom
    if catalog is None:
        return None
    future = [m for segment in catalog.segments for m in _moments(segment.condition, profile) if m > profile.t]
    return min(future) if future else None


def traits(segment_id: str, profile: Profile, t: int, cfg: Any) -> dict[str, Any]:
    catalog: CustomCatalog | None = cfg.custom
    segment = next((s for s in catalog.segments if s.id == segment_id), None) if catalog else None
    if segment is None:
        return {}
    values: dict[str, Any] = {}

    def visit(condition: Condition) -> None:
        if isinstance(condition, Logic):
            for item in condition.items:
                visit(item)
        elif isinstance(condition, NotFollowedBy):
            values[f"{condition.first.event} not followed by {condition.then.event}"] = _unanswered(condition, profile, t) is not None
        else:
            m = condition.measure
            values[f"{m.kind}({m.filter.event}{'.' + m.prop if m.prop else ''}, {m.window_ms // 1000}s)"] = measure_value(profile, m, t)

    visit(segment.condition)
    return values
