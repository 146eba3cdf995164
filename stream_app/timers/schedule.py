"""A per-partition schedule of each user's next due time (a heap with lazy deletion).

It is derived state: rebuilt from the profiles when a partition is assigned (each profile knows its
own next due time), then kept up to date as profiles change. Nothing here scans all users on a tick.
"""

from __future__ import annotations

import heapq


class DueSchedule:
    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._due)

    def set(self, user_id: str, due: int | None) -> None:
        if due is None:
            self._due.pop(user_id, None)
            return
        if self._due.get(user_id) == due:
            return
        self._due[user_id] = due
        heapq.heappush(self._heap, (due, user_id))
        if len(self._heap) > 2 * len(self._due) + 1024:  # stale entries at most half the heap
            self._compact()

    def pop_due(self, until: int) -> list[str]:
        """Users whose due time is at or before ``until``, earliest first; they leave the schedule."""
        users: list[str] = []
        heap, due_of = self._heap, self._due
        while heap and heap[0][0] <= until:
            due, user = heapq.heappop(heap)
            if due_of.get(user) == due:
                del due_of[user]
                users.append(user)
        return users

    def discard(self, user_id: str) -> None:
        self._due.pop(user_id, None)

    def take_all(self) -> dict[str, int]:
        """Every user with their due time; the schedule is left empty."""
        taken, self._due, self._heap = self._due, {}, []
        return taken

    def next_due(self) -> int | None:
        heap, due_of = self._heap, self._due
        while heap and due_of.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _compact(self) -> None:
        self._heap = [(d, u) for u, d in self._due.items()]
        heapq.heapify(self._heap)
