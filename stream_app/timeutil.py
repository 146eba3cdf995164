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
    """ISO-8601 UTC with milliseconds and a Z, as in the transition contract (2026-11-29T10:00:00.000Z).

    On the hot path (every transition's `at`): the date comes from a per-day cache, the time of day from
    three small tables, about 0.7 us against 5 us for `strftime`."""
    days, rest = divmod(int(millis), DAY_MS)
    seconds, ms = divmod(rest, 1000)
    return "".join((_date_text(days), _HOUR_MINUTE[seconds // 60], _SECOND[seconds % 60], _MILLI_Z[ms]))


@lru_cache(maxsize=4096)
def _date_text(days: int) -> str:
    """The UTC date of a day since 1970-01-01."""
    return datetime.fromtimestamp(days * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")


_HOUR_MINUTE = tuple(f"T{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60))
_SECOND = tuple(f"{second:02d}." for second in range(60))
_MILLI_Z = tuple(f"{ms:03d}Z" for ms in range(1000))


def utc_day(millis: int) -> int:
    """The UTC calendar date of a moment, as days since 1970-01-01."""
    return millis // DAY_MS
