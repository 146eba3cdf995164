"""Output side: membership diffs become transition records with deterministic ids."""

from .records import Change, memberships_record, to_record, transition_id

__all__ = ["Change", "memberships_record", "to_record", "transition_id"]
