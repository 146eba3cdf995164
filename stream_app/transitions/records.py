"""Transition records, exactly as the catalog's transition section says.

`transition_id` is a hash of (user, segment, cause): the same cause can change a segment only once,
so a re-run over the same input gives the same ids and downstream tools can drop repeats.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ..timeutil import format_timestamp


@dataclass(slots=True, frozen=True)
class Change:
    user_id: str
    segment: str
    from_member: str | None
    to_member: str | None
    at: int  # event time of the cause
    cause_type: str  # event | timer | refresh | definitions | erasure
    cause_ref: str  # messageId for events and erasures, due time (ms) for timers
    traits: dict[str, Any]
    backfill: bool = False  # caused by a backfill event, or decided on a backfill's clock: always historical

    @property
    def cause_key(self) -> str:
        return f"{self.cause_type}:{self.cause_ref}"


def transition_id(user_id: str, segment: str, cause_key: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(user_id.encode("utf-8", "surrogatepass"))
    digest.update(b"\x1f")
    digest.update(segment.encode())
    digest.update(b"\x1f")
    digest.update(cause_key.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def to_record(change: Change, emitted_at_ms: int, historical_after_ms: int, model_version: str,
              backfill: bool = False, emitted_at: str | None = None) -> dict[str, Any]:
    """The transition record of ``change``; ``backfill``: historical whatever its age, like
    `change.backfill` (the engine says so here rather than copying the change); ``emitted_at``:
    `format_timestamp(emitted_at_ms)`, when the caller formatted it once for a whole batch."""
    if change.cause_type in ("event", "erasure"):
        cause: dict[str, Any] = {"type": change.cause_type, "message_id": change.cause_ref}
    elif change.cause_type == "timer":
        cause = {"type": "timer", "due": format_timestamp(int(change.cause_ref))}
    elif change.cause_type == "definitions":
        version, _, loaded_at = change.cause_ref.rpartition("@")
        cause = {"type": "definitions", "version": version, "loaded_at": format_timestamp(int(loaded_at))}
    elif change.cause_type == "refresh":
        population, _, decided_at = change.cause_ref.rpartition("@")
        cause = {"type": "refresh", "population": population, "decided_at": format_timestamp(int(decided_at))}
    else:
        cause = {"type": change.cause_type}
    return {
        "transition_id": transition_id(change.user_id, change.segment, change.cause_key),
        "user_id": change.user_id,
        "segment": change.segment,
        "from": change.from_member,
        "to": change.to_member,
        "at": format_timestamp(change.at),
        "emitted_at": format_timestamp(emitted_at_ms) if emitted_at is None else emitted_at,
        "cause": cause,
        "historical": backfill or change.backfill or emitted_at_ms - change.at > historical_after_ms,
        "traits": change.traits,
        "model_version": model_version,
    }


def memberships_record(user_id: str, members: dict[str, str], at_ms: int, model_version: str) -> dict[str, Any]:
    """Value of the compacted memberships topic (key = user id)."""
    return {"user_id": user_id, "segments": dict(sorted(members.items())), "as_of": format_timestamp(at_ms), "model_version": model_version}
