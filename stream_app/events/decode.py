"""Decode one raw message (JSON or msgpack) into a normalized :class:`Event`, or raise :class:`InvalidEvent`.

Invalid means (catalog and issue #2): undecodable, schema violation, no user id, a timestamp that is
unparseable or more than 24 h ahead of the wall clock, or oversize. Every InvalidEvent carries a
machine reason (a metric label) and a detail written for the person who sent the event.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any

import fastjsonschema
import msgpack
from jsonschema import Draft202012Validator

from ..resources import package_file
from ..timeutil import HOUR_MS, parse_timestamp

SCHEMA_PATH = package_file("schemas", "clickstream-event.schema.json")
DEFAULT_MAX_EVENT_BYTES = 32 * 1024
FUTURE_ALLOWANCE_MS = 24 * HOUR_MS
# Segment-spec `delete`: the user's erasure request (Segment forwards its user deletions to destinations
# as such events); the engine removes every trace of the user's state (engine/partition.py, `_erase`)
ERASURE = "delete"

# Properties the default catalog reads. Only these are kept in state (pending events), which keeps
# profiles small; the full event stays on the input topic.
KEPT_PROPERTIES = (
    "revenue", "total", "discount", "coupon", "product_id", "sku", "quantity", "path",
    "feature", "metric", "value", "limit", "step", "category", "score", "order_id",
)
NUMERIC_PROPERTIES = ("revenue", "total", "discount", "quantity", "value", "limit", "step", "score")
# numbers beyond this are not plausible amounts or counts, and would not pack into 64-bit msgpack
MAX_NUMBER = 1e15


class DeadLetterReason(str, Enum):
    UNDECODABLE = "undecodable"
    SCHEMA_VIOLATION = "schema_violation"
    MISSING_USER_ID = "missing_user_id"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    OVERSIZE = "oversize"


class InvalidEvent(Exception):
    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Event:
    """A validated input event, reduced to what the engine needs."""

    message_id: str
    user_id: str
    type: str  # track | identify | page | screen | alias | delete (an erasure request, ERASURE)
    name: str  # track: event name; page/screen: page name ('' when absent)
    ts: int  # event time, epoch ms
    props: dict[str, Any]

    @property
    def is_activity(self) -> bool:
        return self.type in ("track", "page", "screen")

    def to_compact(self) -> list[Any]:
        return [self.ts, self.message_id, self.type, self.name, self.props]

    @classmethod
    def from_compact(cls, user_id: str, row: list[Any]) -> "Event":
        return cls(message_id=row[1], user_id=user_id, type=row[2], name=row[3], ts=row[0], props=row[4])


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _parse_bytes(raw: bytes) -> Any:
    if not raw:
        raise InvalidEvent(DeadLetterReason.UNDECODABLE, "empty message; send a JSON or msgpack object")
    first = raw.lstrip()[:1]
    if first in (b"{", b"["):
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidEvent(DeadLetterReason.UNDECODABLE, f"JSON is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        except (ValueError, RecursionError) as exc:
            raise InvalidEvent(DeadLetterReason.UNDECODABLE, f"not valid JSON: {str(exc)[:200]}") from None
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise InvalidEvent(
            DeadLetterReason.UNDECODABLE,
            f"neither JSON (must start with '{{' or '[') nor msgpack ({type(exc).__name__}: {str(exc)[:120]})",
        ) from None


@lru_cache(maxsize=1)
def _fast_validator() -> Any:
    """The same schema compiled to Python by fastjsonschema: about 30 times faster than the reference
    validator. It only ever accepts; a document it refuses goes to the reference validator, which
    decides and explains (tests/test_events_decode.py checks that the two agree)."""
    return fastjsonschema.compile(json.loads(SCHEMA_PATH.read_text()))


def _schema_error(doc: Any) -> str | None:
    try:
        _fast_validator()(doc)
        return None
    except Exception:  # noqa: BLE001 - refused, or something odd: the reference validator decides
        pass
    validator = _validator()
    try:
        if validator.is_valid(doc):
            return None
        error = min(validator.iter_errors(doc), key=lambda e: len(list(e.absolute_path)))
    except RecursionError:
        return "document is nested too deeply"
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"at {where}: {error.message[:200]}"


def _plausible(value: int | float) -> bool:
    try:
        return math.isfinite(value) and abs(value) <= MAX_NUMBER
    except OverflowError:  # an int too large for a float
        return False


def _text(value: str, where: str) -> str:
    """Text must be encodable as UTF-8 (a lone surrogate from JSON "\\ud800" is not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(DeadLetterReason.SCHEMA_VIOLATION, f"{where} is not valid Unicode text (a lone surrogate?)") from None
    return value


def _extra_properties(props: dict[str, Any], names: frozenset[str], kept: dict[str, Any]) -> None:
    """Properties that user-defined segments read: kept when they are plain scalars, ignored otherwise
    (an odd value in a property the catalog does not know never makes the event a dead letter)."""
    for key in names:
        value = props.get(key)
        if key in kept or value is None:
            continue
        if isinstance(value, str):
            try:
                kept[key] = _text(value[:200], key)
            except InvalidEvent:
                continue
        elif isinstance(value, bool) or (isinstance(value, (int, float)) and _plausible(value)):
            kept[key] = value


def _kept_properties(props: dict[str, Any], extra: frozenset[str] = frozenset()) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key in KEPT_PROPERTIES:
        if key not in props:
            continue
        value = props[key]
        if key in NUMERIC_PROPERTIES:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not _plausible(value):
                raise InvalidEvent(
                    DeadLetterReason.SCHEMA_VIOLATION,
                    f"properties.{key} must be a finite number of magnitude up to 1e15, got {str(value)[:40]!r}",
                )
        elif isinstance(value, (dict, list)):
            raise InvalidEvent(DeadLetterReason.SCHEMA_VIOLATION, f"properties.{key} must be a scalar")
        elif isinstance(value, str):
            value = _text(value[:200], f"properties.{key}")
        kept[key] = value
    if extra:
        _extra_properties(props, extra, kept)
    return kept


def _decode(raw: bytes, wall_ms: int, max_bytes: int, extra_properties: frozenset[str] = frozenset()) -> Event:
    """Decode and validate one message. Pure apart from reading the schema file once."""
    if len(raw) > max_bytes:
        raise InvalidEvent(
            DeadLetterReason.OVERSIZE,
            f"message is {len(raw)} bytes, the limit is {max_bytes} (STREAM_APP_MAX_EVENT_BYTES); trim properties/context",
        )
    doc = _parse_bytes(raw)
    if not isinstance(doc, dict):
        raise InvalidEvent(DeadLetterReason.SCHEMA_VIOLATION, f"top level must be an object, got {type(doc).__name__}")
    user_id = doc.get("userId") or doc.get("anonymousId")
    if not isinstance(user_id, str) or not user_id:
        raise InvalidEvent(DeadLetterReason.MISSING_USER_ID, "neither userId nor anonymousId is a non-empty string")
    if user_id[0] == "\x00":  # the engine's own keys (the partition clock) begin with NUL: never a user's
        raise InvalidEvent(DeadLetterReason.SCHEMA_VIOLATION,
                           "the user id begins with a NUL character (\\u0000), which is reserved; send ids of printable text")
    problem = _schema_error(doc)
    if problem is not None:
        raise InvalidEvent(DeadLetterReason.SCHEMA_VIOLATION, problem)
    try:
        ts = parse_timestamp(doc["timestamp"])
    except ValueError as exc:
        raise InvalidEvent(DeadLetterReason.BAD_TIMESTAMP, str(exc)) from None
    if ts > wall_ms + FUTURE_ALLOWANCE_MS:
        raise InvalidEvent(
            DeadLetterReason.FUTURE_TIMESTAMP,
            f"timestamp is {(ts - wall_ms) / HOUR_MS:.1f} h ahead of the wall clock (limit 24 h); check the sender's clock and units (milliseconds, not microseconds)",
        )
    kind = doc["type"]
    if kind == "track":
        name = doc["event"]
    else:
        name = doc.get("name") or ""
        if not isinstance(name, str):
            name = ""
    props = doc.get("properties") or {}
    return Event(message_id=_text(doc["messageId"], "messageId"), user_id=_text(user_id, "userId"), type=kind,
                 name=_text(name, "event name"), ts=ts, props=_kept_properties(props, extra_properties))


def decode_event(raw: bytes, wall_ms: int, max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                 extra_properties: frozenset[str] = frozenset()) -> Event:
    """Decode and validate one message, or raise InvalidEvent. Nothing else escapes: an unforeseen error
    in validation is a dead letter too, so one message can never stop a worker."""
    try:
        return _decode(raw, wall_ms, max_bytes, extra_properties)
    except InvalidEvent:
        raise
    except Exception as exc:  # noqa: BLE001 - the promise is that bad input never crashes a worker
        raise InvalidEvent(DeadLetterReason.SCHEMA_VIOLATION, f"could not be validated ({type(exc).__name__}: {str(exc)[:120]})") from None
