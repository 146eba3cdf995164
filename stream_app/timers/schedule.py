"""A per-partition schedule of each user's next due time (a heap with lazy deletion).

It is derived state: rebuilt from the profiles when a partition is assigned (each profile knows its
own next due time), then kept up to date as profiles change. Nothing here scans all users on a tick.

With `undo` on (the worker), each user's due time before its first change since the last `checkpoint`
is remembered, so that `rollback` returns to the checkpoint in the time of the changes made since, not
of the whole schedule (an aborted transaction, engine/partition.py).
"""

from __future__ import annotations

import heapq


class DueSchedule:
    def __init__(self, undo: bool = False) -> None:
        self._heap: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}
        # since the last checkpoint: user -> due time before its first change (None: had none)
        self._undo: dict[str, int | None] | None = {} if undo else None

    def __len__(self) -> int:
        return len(self._due)

    def set(self, user_id: str, due: int | None) -> None:
        before = self._due.get(user_id)
        if before == due:
            return
        undo = self._undo
        if undo is not None and user_id not in undo:
            undo[user_id] = before
        if due is None:
            del self._due[user_id]
            return
        self._due[user_id] = due
        heapq.heappush(self._heap, (due, user_id))
        if len(self._heap) > 2 * len(self._due) + 1024:  # stale entries at most half the heap
            self._compact()

    def due_of(self, user_id: str) -> int | None:
        return self._due.get(user_id)

    def pop_due(self, until: int, limit: int | None = None) -> list[str]:
        """Users whose due time is at or before ``until``, earliest first; they leave the schedule. At most
        ``limit`` of them: the others stay, due, for the next call."""
        users: list[str] = []
        heap, due_of, undo = self._heap, self._due, self._undo
        if limit is not None and limit <= 0:
            return users
        while heap and heap[0][0] <= until:
            due, user = heapq.heappop(heap)
            if due_of.get(user) == due:
                del due_of[user]
                users.append(user)
                if undo is not None and user not in undo:
                    undo[user] = due
                if limit is not None and len(users) >= limit:
                    break
        return users

    def discard(self, user_id: str) -> None:
        self.set(user_id, None)

    def take_all(self) -> dict[str, int]:
        """Every user with their due time; the schedule is left empty."""
        taken, self._due, self._heap = self._due, {}, []
        undo = self._undo
        if undo is not None:
            for user, due in taken.items():
                undo.setdefault(user, due)
        return taken

    def load(self, dues: dict[str, int]) -> None:
        """Replace the whole schedule (a rebuild): one heapify, and nothing for `rollback` to undo."""
        self._due = dict(dues)
        self._heap = [(due, user) for user, due in self._due.items()]
        heapq.heapify(self._heap)
        self.checkpoint()

    def checkpoint(self) -> None:
        """The current schedule is the one `rollback` returns to."""
        if self._undo is not None:
            self._undo = {}

    def rollback(self) -> None:
        """Back to the schedule of the last checkpoint (with `undo` on)."""
        undo = self._undo
        if undo is None:
            raise RuntimeError("rollback needs a schedule made with undo=True")
        heap, due_of = self._heap, self._due
        for user, due in undo.items():
            if due is None:
                due_of.pop(user, None)
            elif due_of.get(user) != due:
                due_of[user] = due
                heapq.heappush(heap, (due, user))
        self._undo = {}

    def next_due(self) -> int | None:
        heap, due_of = self._heap, self._due
        while heap and due_of.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _compact(self) -> None:
        self._heap = [(d, u) for u, d in self._due.items()]
        heapq.heapify(self._heap)
