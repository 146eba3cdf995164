"""The default catalog as one table of rule modules: evaluate every membership at a moment, and find the
next moment at which time alone could change one."""

from __future__ import annotations

from typing import Any

from ..state.profile import Profile
from . import cart, intent, lifecycle
from .config import CatalogConfig

# (segment or family id, rule module). A family module returns a member id; a standalone segment
# module returns its own id or None.
RULES = (
    (lifecycle.FAMILY, lifecycle),
    (intent.SEGMENT, intent),
    (cart.SEGMENT, cart),
)


def memberships(profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, str]:
    """Every segment the user is in at ``t``: {segment or family id: member id}."""
    result: dict[str, str] = {}
    for segment, rule in RULES:
        member = rule.membership(profile, t, cfg)
        if member is not None:
            result[segment] = member
    return result


def next_change(profile: Profile, cfg: CatalogConfig) -> int | None:
    """Earliest moment after ``profile.t`` at which some membership may change without an event."""
    dues = [d for _, rule in RULES if (d := rule.next_change(profile, cfg)) is not None]
    return min(dues) if dues else None


def traits(segment: str, profile: Profile, t: int, cfg: CatalogConfig) -> dict[str, Any]:
    for name, rule in RULES:
        if name == segment:
            return rule.traits(profile, t, cfg)
    return {}
