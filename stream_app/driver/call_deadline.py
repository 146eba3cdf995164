"""Which bounded librdkafka call the main loop is inside, and whether it has overrun its own timeout.

Every librdkafka call of the commit sequence takes a timeout, but not every one keeps it:
`send_offsets_to_transaction` can wait for ever when the consumer group's coordinator died
(confluentinc/librdkafka#5456: its coordinator-request timeout is never checked; #5511: a coordinator
that left the metadata is never looked up again). No call of the public API unblocks it, and the
producer takes no other transactional call meanwhile. So the process ends itself, as for any stuck
loop (worker/process_control.py), but as soon as the call is clearly overdue, not after the general
liveness limit: its timeout plus `overrun_s`. The restart fences the stuck transaction and resumes from
the committed offsets and the changelog: nothing is lost or repeated (docs/reliability.md).
"""

from __future__ import annotations

import time
from typing import Any, Callable

OVERRUN_S = 15.0  # beyond its own timeout: a loaded 2-core machine may be a few seconds late, never this late


class CallDeadline:
    def __init__(self, overrun_s: float = OVERRUN_S) -> None:
        self.overrun_s = overrun_s
        self._current: tuple[str, float, float] | None = None  # (call, started, timeout), set by the main thread

    def run(self, name: str, timeout_s: float, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, a call that should return within `timeout_s`."""
        self._current = (name, time.monotonic(), timeout_s)
        try:
            return fn(*args)
        finally:
            self._current = None

    def bounded(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` as a call whose last argument is its timeout in seconds (librdkafka's convention)."""
        return lambda *args: self.run(name, args[-1], fn, *args)

    def overdue(self) -> str | None:
        """Why the current call is stuck, once it has overrun its timeout by more than `overrun_s`; else None.
        Safe from any thread."""
        current = self._current
        if current is None:
            return None
        name, started, timeout_s = current
        waited = time.monotonic() - started
        if waited <= timeout_s + self.overrun_s:
            return None
        known = (" (a known librdkafka hang when the group coordinator dies: confluentinc/librdkafka#5456, #5511)"
                 if name == "send_offsets_to_transaction" else "")
        return f"librdkafka's {name} has not returned {waited:.0f} s after it was called with a {timeout_s:.0f} s timeout{known}"
