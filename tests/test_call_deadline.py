"""driver/call_deadline.py: a call is reported overdue only once it is past its own timeout plus the
allowed overrun, from another thread while it still blocks, and no longer once it returned."""

from __future__ import annotations

import threading
import time

import pytest

from stream_app.driver.call_deadline import CallDeadline


def test_a_call_past_its_timeout_and_overrun_is_named_while_it_blocks():
    deadline = CallDeadline(overrun_s=0.2)
    release = threading.Event()
    blocked = deadline.bounded("send_offsets_to_transaction", lambda offsets, metadata, timeout: release.wait(5))
    caller = threading.Thread(target=blocked, args=([], None, 0.1))
    caller.start()
    try:
        time.sleep(0.1)
        assert deadline.overdue() is None  # within its timeout
        time.sleep(0.4)
        reason = deadline.overdue()
        assert reason is not None
        assert reason.startswith("librdkafka's send_offsets_to_transaction has not returned")
        assert "0 s timeout" in reason and "#5456" in reason
    finally:
        release.set()
        caller.join(5)
    assert deadline.overdue() is None  # returned: nothing is overdue any more


def test_a_call_that_returns_in_time_passes_its_result_and_errors_through():
    deadline = CallDeadline(overrun_s=0.0)
    assert deadline.run("flush", 1.0, lambda timeout: timeout * 2, 1.0) == 2.0
    assert deadline.bounded("flush", lambda timeout: 7)(1.0) == 7
    with pytest.raises(ValueError):
        deadline.run("commit_transaction", 1.0, lambda: (_ for _ in ()).throw(ValueError("refused")))
    assert deadline.overdue() is None


def test_a_slow_call_within_its_overrun_is_not_overdue():
    deadline = CallDeadline(overrun_s=5.0)
    seen: list[str | None] = []
    deadline.run("flush", 0.1, lambda: (time.sleep(0.3), seen.append(deadline.overdue())))
    assert seen == [None]
