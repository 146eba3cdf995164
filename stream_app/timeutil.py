"""Event-time helpers: all times inside the engine are integer epoch milliseconds (UTC)."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def parse_timestamp(value: object) -> int:
    """Return epoch milliseconds for an ISO-8601 string or an epoch-milliseconds integer.

    Raises ValueError with a message that says what was expected.
    A string without a zone is read as UTC (Segment always sends one).
    """
    if isinstance(value, bool):
        raise ValueError("timestamp is a boolean; send ISO-8601 (2026-11-29T10:00:00Z) or epoch milliseconds")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("timestamp is negative; send epoch milliseconds since 1970")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"timestamp {value[:40]!r} is not ISO-8601; send e.g. 2026-11-29T10:00:00.000Z"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        millis = int(parsed.timestamp() * 1000)
        if millis < 0:
            raise ValueError("timestamp is before 1970")
        return millis
    raise ValueError(
        f"timestamp has type {type(value).__name__}; send an ISO-8601 string or epoch milliseconds"
    )


def format_timestamp(millis: int) -> str:
    """ISO-8601 UTC with milliseconds and a Z, as in the transition contract."""
    seconds, ms = divmod(int(millis), 1000)
    return f"{_second_text(seconds)}.{ms:03d}Z"


@lru_cache(maxsize=8192)
def _second_text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def utc_day(millis: int) -> int:
    """The UTC calendar date of a moment, as days since 1970-01-01."""
    return millis // DAY_MS
