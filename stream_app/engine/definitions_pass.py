"""A pass of new definitions over a partition's stored users: who is still to be decided again.

New definitions decide every stored user again (cause `definitions`). A worker does it a bounded number
of users per engine call, so that a partition of a million users never holds one transaction open past
its timeout; the pass records the users stored when it began, a cursor over them, and the users not
decided yet. A user the pass has not reached is decided again before anything else touches it (its
event, erasure, timer or RFM refresh), so each user sees the same sequence as if the whole pass had
happened at once, and only `emitted_at` differs.

Deciding a user again is idempotent (a user already decided under the definitions gets no transition),
so nothing but the definitions' version and the pass's `loaded_at` (part of every transition id) has to
survive a restart: a partition that stops half-way decides every user again under the same `loaded_at`,
and those already decided change nothing. An aborted transaction returns the cursor and the users it
took to the last checkpoint.
"""

from __future__ import annotations

from typing import Iterable


class DefinitionsPass:
    def __init__(self, version: str, loaded_at: int, users: Iterable[str]) -> None:
        self.version = version  # the definitions being applied
        self.loaded_at = loaded_at  # when they were loaded: part of each transition's cause
        self.users = list(users)  # the stored users when the pass began
        self.next = 0  # the cursor: users[:next] are decided (or were taken out of order)
        self.left = set(self.users)  # users not decided yet
        self._taken: list[str] = []  # users taken from `left` since the checkpoint
        self._checkpoint_next = 0

    def __contains__(self, user_id: str) -> bool:
        return user_id in self.left

    @property
    def done(self) -> bool:
        return self.next >= len(self.users)

    def take(self, user_id: str) -> bool:
        """Take a user out of order (something else touches it first): True if it was still to decide."""
        if user_id not in self.left:
            return False
        self.left.discard(user_id)
        self._taken.append(user_id)
        return True

    def take_next(self, most: int | None) -> list[str]:
        """The next users in order still to decide, at most ``most`` (None: all of them)."""
        users, left, taken = self.users, self.left, self._taken
        out: list[str] = []
        n = self.next
        while n < len(users) and (most is None or len(out) < most):
            user_id = users[n]
            n += 1
            if user_id in left:
                left.discard(user_id)
                taken.append(user_id)
                out.append(user_id)
        self.next = n
        return out

    def checkpoint(self) -> None:
        self._taken = []
        self._checkpoint_next = self.next

    def rollback(self) -> None:
        self.left.update(self._taken)
        self.next = self._checkpoint_next
        self._taken = []
